"""Run samples through a model under attention capture and score every head: the one extraction path.

    res = extract.head_results(model, processor, samples, batch_size=8, dataset="shapes")
    res.scores["weight"]            # [samples, layers, heads] attention weight on the image tokens
    res.per_head("concentration")   # [layers, heads], mean over samples
    res.accuracy, res.detection_score()

Notebooks and widgets call :func:`head_results`; sweeps (``helpers.sweep``) call :func:`run_batch` and write each
batch to disk. Per batch: the images the model sees and the templated prompts (``helpers.data.model_inputs``),
the processor with left padding, greedy ``model.generate`` under ``helpers.capture.attention``, the answer
scored with ``helpers.data.is_correct``, the image / region tokens from ``helpers.layout``, the scores from
``helpers.metrics``. Scores per sample and head (``Results.scores``, each ``[samples, layers, heads]``):
``weight``, ``concentration``, ``effective_tokens`` (``exp H``), the sink scores ``first_key_share`` and
``weight_vs_uniform`` (``W / (|V|/K)``), ``region_weight``, ``region_share`` and ``region_hits`` (the share of
the head's top-k keys in the box region, :func:`helpers.metrics.detection_hits`); the region scores are NaN
for samples without a box. The analysed row (``rows="answer"``, the default everywhere) is the one that
predicts the answer's first content token (:func:`helpers.capture.first_content_index`); the table's
``answer_step`` says how many whitespace-only tokens came before it. Keys are the prompt positions plus the
generated tokens up to the captured row (never image tokens).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import capture, data, layout, metrics
from .models import check_finite, spec_of
from .results import Results, concat

SCORES = ("weight", "concentration", "effective_tokens", "first_key_share", "weight_vs_uniform",
          "region_weight", "region_share", "region_hits")


def _pad_keys(mask: torch.Tensor, keys: int) -> torch.Tensor:
    """``[batch, seq]`` -> ``[batch, keys]``: keys after the prompt (generated tokens) are never image tokens."""
    return torch.nn.functional.pad(mask, (0, keys - mask.shape[1]), value=False)


def batch_inputs(model: Any, processor: Any, samples: Sequence[data.Sample]) -> tuple[dict, list]:
    """Processor inputs on the model's device (floating tensors in the model's dtype) and the images used."""
    images, texts = data.model_inputs(samples, spec_of(model))
    inputs = processor(images=images, text=texts, return_tensors="pt", padding=True, padding_side="left")
    device = next(model.parameters()).device
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    return {n: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for n, v in inputs.items()}, images


def key_masks(model: Any, processor: Any, samples: Sequence[data.Sample], input_ids: torch.Tensor,
              image_sizes: Sequence[Sequence[int]], keys: int, image_tokens: str = "all"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean image and region masks ``[batch, keys]`` over the captured keys; ``image_sizes`` as (h, w).

    ``image_tokens``: which image tokens count as the image (``helpers.layout.image_subset_mask``: ``"all"``,
    ``"no_newline"``, ``"base"``); the region is always a subset of them.
    """
    tid = layout.image_token_id(model)
    ids = input_ids.cpu()
    image = layout.image_subset_mask(ids, tid, processor, image_sizes, image_tokens)
    region = torch.zeros_like(image)
    boxed = [i for i, s in enumerate(samples) if s.boxes]
    if boxed:
        region[boxed] = layout.region_mask(ids[boxed], tid, processor, [image_sizes[i] for i in boxed],
                                           [samples[i].boxes for i in boxed],
                                           sample_ids=[samples[i].id for i in boxed])
    return _pad_keys(image, keys), _pad_keys(region & image, keys)


def head_scores(rows: torch.Tensor, image: torch.Tensor, region: torch.Tensor, has_box: torch.Tensor,
                k: float | int | str = 0.05, among: str = "all", visible: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
    """:data:`SCORES` ``name -> [batch, layers, heads]`` from rows ``[batch, layers, heads, keys]``.

    ``visible``: bool ``[batch, keys]`` (or over the prompt only), the keys each row may see (for the sink
    scores ``first_key_share`` and ``weight_vs_uniform``, :mod:`helpers.metrics`); default: keys with
    non-zero attention in any head of the sample.
    """
    nan = torch.tensor(float("nan"))
    box = has_box[:, None, None]
    if visible is None:
        visible = (rows > 0).flatten(1, 2).any(1)
    return {
        "weight": metrics.attention_weight(rows, image),
        "concentration": metrics.concentration(rows, image),
        "effective_tokens": metrics.effective_tokens(rows, image),
        "first_key_share": metrics.first_key_share(rows, visible),
        "weight_vs_uniform": metrics.weight_vs_uniform(rows, image, visible),
        "region_weight": torch.where(box, metrics.region_weight(rows, region), nan),
        "region_share": torch.where(box, metrics.region_share(rows, region, image), nan),
        "region_hits": torch.where(box, metrics.detection_hits(rows, image, region, k=k, among=among), nan),
    }


def min_new_tokens(rows: str) -> int:
    """The fewest generated tokens that capture ``rows`` needs: 2 for ``"answer"`` / ``"generated"``
    (the first decoding step is the second forward call), 1 for ``"prompt_end"``."""
    return 1 if rows == "prompt_end" else 2


def check_max_new_tokens(max_new_tokens: int, rows: str) -> None:
    """Raise ``ValueError`` naming ``max_new_tokens`` unless it is an int of at least :func:`min_new_tokens`."""
    need = min_new_tokens(rows)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < need:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: rows={rows!r} needs at least {need} generated "
                         f"token{'s' * (need > 1)}; pass max_new_tokens >= {need}")


def run_batch(model: Any, processor: Any, samples: Sequence[data.Sample], rows: str = "answer",
              max_new_tokens: int = 4, k: float | int | str = 0.05, among: str = "all",
              indices: Sequence[int] | None = None, keep_rows: bool = False,
              image_tokens: str = "all") -> tuple[Results, torch.Tensor | None]:
    """Generate greedily for one batch under capture and score every head.

    Returns ``(results, rows)``: ``rows`` is the float32 ``[batch, layers, heads, keys]`` tensor when
    ``keep_rows`` (full attention rows on request), else ``None``. ``indices`` label the samples'
    positions in their split (default ``0..batch-1``). ``rows``, ``k``, ``among``: see
    ``helpers.capture.attention`` and ``helpers.metrics.detection_hits``. ``max_new_tokens`` is what is
    generated and recorded; below :func:`min_new_tokens` it raises ``ValueError``. ``image_tokens``: which image
    tokens the image scores use (:func:`key_masks`; ``"no_newline"`` / ``"base"`` for LLaVA-NeXT).
    """
    samples = list(samples)
    check_max_new_tokens(max_new_tokens, rows)
    inputs, images = batch_inputs(model, processor, samples)
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad(), capture.attention(model, rows=rows, tokenizer=processor.tokenizer) as att:
        out = model.generate(**inputs, max_new_tokens=max_new_tokens,
                             do_sample=False, output_scores=True, return_dict_in_generate=True)
    check_finite(out.scores[0], what="the first generated token's logits")
    answers = [a.strip() for a in processor.tokenizer.batch_decode(out.sequences[:, prompt_len:],
                                                                   skip_special_tokens=True)]
    captured = att.rows
    image, region = key_masks(model, processor, samples, inputs["input_ids"], [im.size[::-1] for im in images],
                              captured.shape[-1], image_tokens)
    has_box = torch.tensor([bool(s.boxes) for s in samples])
    visible = (inputs["attention_mask"].bool().cpu() if "attention_mask" in inputs
               else torch.ones(inputs["input_ids"].shape, dtype=torch.bool))
    visible = torch.nn.functional.pad(visible, (0, captured.shape[-1] - visible.shape[1]), value=True)
    steps = att.answer_steps if rows == "answer" else None
    if steps is not None:  # a sample's row sees the prompt and the whitespace tokens before its answer
        visible &= torch.arange(captured.shape[-1])[None] < (prompt_len + steps)[:, None]
    per_head = {n: v.float().numpy()
                for n, v in head_scores(captured, image, region, has_box, k, among, visible).items()}
    table = pd.DataFrame({
        "index": list(indices) if indices is not None else list(range(len(samples))),
        "sample_id": [s.id for s in samples],
        "benchmark": [s.benchmark for s in samples],
        "question_kind": [s.question_kind or "" for s in samples],
        "prompt_kind": [s.prompt_kind for s in samples],
        "answer": [str(s.answer) for s in samples],
        "prediction": answers,
        "correct": [data.is_correct(s, a) for s, a in zip(samples, answers, strict=True)],
        "n_image_tokens": image.sum(1).tolist(),
        "n_region_tokens": region.sum(1).tolist(),
    })
    if steps is not None:
        table["answer_step"] = steps.tolist()  # whitespace-only tokens skipped before the analysed row
    settings = {"model_name": spec_of(model).name, "rows": rows, "k": k, "among": among,
                "max_new_tokens": max_new_tokens, "image_tokens": image_tokens}
    return Results(table, per_head, settings), (captured if keep_rows else None)


def head_results(model: Any, processor: Any, samples: Sequence[data.Sample], batch_size: int = 8,
                 dataset: str = "", progress: bool = False, **kwargs: Any) -> Results:
    """:func:`run_batch` over all ``samples`` in order (tqdm bar in samples/s when ``progress``).

    ``dataset`` labels the results (panel titles, tables). Other keyword arguments go to :func:`run_batch`.
    """
    samples = list(samples)
    if not samples:
        raise data.EmptySplitError(f"{dataset or 'samples'}: no samples to run")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: pass an int >= 1")
    parts = []
    with tqdm(total=len(samples), unit="sample", disable=not progress,
              desc=f"{spec_of(model).name} {dataset}".strip()) as bar:
        for start in range(0, len(samples), batch_size):
            batch = samples[start:start + batch_size]
            parts.append(run_batch(model, processor, batch, indices=range(start, start + len(batch)), **kwargs)[0])
            bar.update(len(batch))
    res = concat(parts)
    res.settings.update(dataset=dataset, batch_size=batch_size)
    return res


def panels(dataset: str, n: int, seed: int = 0, split_by: str | None = "question_kind",
           prompt_kind: str | None = "visual", **load_kwargs: Any) -> dict[str, list]:
    """Samples of ``dataset`` (a key of ``helpers.data.LOADERS``) grouped into figure panels.

    ``split_by``: a :class:`helpers.data.Sample` attribute whose values name the panels
    (``"question_kind"``: general / object / super for PointQA) or None for one panel.
    ``prompt_kind``: keep only ``"visual"`` or ``"plain"`` samples (None: both). Each panel is a
    seeded random choice of at most ``n`` samples, in dataset order.
    """
    samples = [s for s in data.load(dataset, **load_kwargs) if prompt_kind is None or s.prompt_kind == prompt_kind]
    groups: dict[str, list] = {}
    for s in samples:
        key = dataset if split_by is None else f"{dataset} {getattr(s, split_by)}"
        groups.setdefault(key, []).append(s)
    if not groups:
        raise ValueError(f"{dataset}: no samples with prompt_kind={prompt_kind!r}")
    rng = random.Random(seed)
    return {k: [v[i] for i in sorted(rng.sample(range(len(v)), min(n, len(v))))] for k, v in groups.items()}
