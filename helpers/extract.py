"""Run samples through a model under attention capture and score every head: the one extraction path.

    res = extract.head_results(model, processor, samples, batch_size=8, dataset="shapes")
    res.scores["weight"]            # [samples, layers, heads] attention weight on the image tokens
    res.per_head("concentration")   # [layers, heads], mean over samples
    res.accuracy, res.detection_score()

Notebooks call :func:`head_results`; sweeps (``helpers.sweep``) and the explorer (``helpers.widgets``) call
:func:`run_batch`, whose :class:`Batch` record keeps what the batch built (inputs, images, geometries, key masks,
rows, answers) so that nothing is run twice; :func:`answers` is the one greedy-answer loop (masked or not) that
the masking experiments, the explorer and the organisms' cards share.

Per batch: the images the model sees and the templated prompts (``helpers.data.model_inputs``), the processor
with left padding, greedy ``model.generate`` under ``helpers.capture.attention``, the answer
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

from collections.abc import Sequence
from dataclasses import dataclass
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


def to_model(model: Any, inputs: Any) -> dict[str, torch.Tensor]:
    """Processor outputs on the model's device, floating tensors in the model's dtype."""
    device = next(model.parameters()).device
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    return {n: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for n, v in inputs.items()}


def batch_inputs(model: Any, processor: Any, samples: Sequence[data.Sample], texts: Sequence[str] | None = None
                 ) -> tuple[dict, list]:
    """Processor inputs on the model's device (:func:`to_model`) and the images used, left padded.

    ``texts``: the full texts to encode instead of the samples' templated prompts (e.g. prompt + answer).
    """
    images, prompts = data.model_inputs(samples, spec_of(model))
    inputs = processor(images=images, text=list(prompts if texts is None else texts), return_tensors="pt",
                       padding=True, padding_side="left")
    return to_model(model, inputs), images


def geometries(processor: Any, samples: Sequence[data.Sample], input_ids: torch.Tensor, token_id: int,
               image_sizes: Sequence[Sequence[int]]) -> tuple[list[layout.ImageGeometry], list[torch.Tensor]]:
    """Per sample: the footprints of its image tokens (:func:`helpers.layout.image_geometry` of ``image_sizes[i]``
    as (h, w)) and their sequence positions; ``ValueError`` naming the sample when the two counts differ."""
    geos, positions = [], layout.image_token_positions(input_ids.cpu(), token_id)
    for sample, size, pos in zip(samples, image_sizes, positions, strict=True):
        geo = layout.image_geometry(processor, size)
        if geo.n_tokens != len(pos):
            raise ValueError(f"sample {sample.id}: {len(pos)} image tokens in input_ids but the processor "
                             f"geometry gives {geo.n_tokens} for an image of {tuple(size)} (height, width); pass the "
                             "processor that belongs to the model")
        geos.append(geo)
    return geos, positions


def key_masks(model: Any, processor: Any, samples: Sequence[data.Sample], input_ids: torch.Tensor,
              image_sizes: Sequence[Sequence[int]], keys: int,
              geos: Sequence[layout.ImageGeometry] | None = None, *, image_tokens: str = "all"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean image and region masks ``[batch, keys]`` over the captured keys; ``image_sizes`` as (h, w).

    ``geos``: the samples' :func:`geometries` when already known (else computed). ``image_tokens``: which image
    tokens count as the image (as in ``helpers.layout.image_subset_mask``: ``"all"``, ``"no_newline"``,
    ``"base"``); the region is always a subset of them.
    """
    if image_tokens not in layout.IMAGE_SUBSETS:
        raise ValueError(f"image subset must be one of {layout.IMAGE_SUBSETS}, got {image_tokens!r}")
    tid = layout.image_token_id(model)
    ids = input_ids.cpu()
    if geos is None:
        geos, positions = geometries(processor, samples, ids, tid, image_sizes)
    else:
        positions = layout.image_token_positions(ids, tid)
    image = layout.image_token_mask(ids, tid)
    region = torch.zeros_like(image)
    for i, s in enumerate(samples):
        if image_tokens != "all":  # newline tokens are view -1, the base view 0 (helpers.layout.ImageGeometry)
            keep = geos[i].view >= 0 if image_tokens == "no_newline" else geos[i].view == 0
            image[i, positions[i][~keep]] = False
        if s.boxes:
            region[i, positions[i]] = layout.region_token_mask(processor, image_sizes[i], s.boxes, s.id,
                                                               geometry=geos[i])
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


@dataclass
class Batch:
    """What one batch built and produced (:func:`run_batch`), kept so that nothing is computed twice.

    ``samples``; ``inputs``: the processor's inputs on the model's device; ``images``: the images the model saw
    (boxes drawn for visual prompts); ``geometries`` / ``positions``: per sample its image tokens' footprints
    (:func:`helpers.layout.image_geometry`) and sequence positions; ``image`` / ``region``: boolean key masks
    ``[batch, keys]``; ``rows``: the captured float32 ``[batch, layers, heads, keys]`` (``None`` unless
    ``keep_rows``); ``answers``: the decoded greedy answers; ``results``: the per-head scores derived from them.
    """

    samples: list[data.Sample]
    inputs: dict[str, torch.Tensor]
    images: list[Any]
    geometries: list[layout.ImageGeometry]
    positions: list[torch.Tensor]
    image: torch.Tensor
    region: torch.Tensor
    rows: torch.Tensor | None
    answers: list[str]
    results: Results

    def image_rows(self, i: int) -> torch.Tensor:
        """Sample ``i``'s captured attention on its image tokens, in token order: ``[layers, heads, tokens]``."""
        if self.rows is None:
            raise ValueError("the batch kept no rows: run it with keep_rows=True")
        return self.rows[i][:, :, self.positions[i]]

    def region_tokens(self, i: int) -> torch.Tensor:
        """Boolean ``[image tokens of sample i]``: those covering its box (all False without a box)."""
        return self.region[i, self.positions[i]]


def results_table(samples: Sequence[data.Sample], answers: Sequence[str], indices: Sequence[int] | None = None, *,
                  identity: bool = True) -> pd.DataFrame:
    """One row per sample: ``index``, ``sample_id``, ``record_id`` and ``image_id`` (:func:`helpers.data.record_id_of`,
    :func:`helpers.data.image_id_of`: what a held-out check compares, :func:`helpers.selection.check_disjoint`),
    ``benchmark``, ``question_kind``, ``prompt_kind``, ``answer``, ``prediction`` and ``correct``
    (:func:`helpers.data.is_correct`). ``identity=False`` leaves out ``record_id`` and ``image_id`` (no image decoded).
    """
    table = pd.DataFrame({
        "index": list(indices) if indices is not None else list(range(len(samples))),
        "sample_id": [s.id for s in samples],
        "benchmark": [s.benchmark for s in samples],
        "question_kind": [s.question_kind or "" for s in samples],
        "prompt_kind": [s.prompt_kind for s in samples],
        "answer": [str(s.answer) for s in samples],
        "prediction": list(answers),
        "correct": [data.is_correct(s, a) for s, a in zip(samples, answers, strict=True)],
    })
    if identity:
        table.insert(2, "record_id", [data.record_id_of(s) for s in samples])
        table.insert(3, "image_id", [data.image_id_of(s) for s in samples])
    return table


def decode(processor: Any, sequences: torch.Tensor, prompt_len: int) -> list[str]:
    """The generated part of ``sequences`` as text, special tokens skipped, stripped."""
    return [a.strip() for a in processor.tokenizer.batch_decode(sequences[:, prompt_len:], skip_special_tokens=True)]


def run_batch(model: Any, processor: Any, samples: Sequence[data.Sample], rows: str = "answer",
              max_new_tokens: int = 4, k: float | int | str = 0.05, among: str = "all",
              indices: Sequence[int] | None = None, keep_rows: bool = False, image_tokens: str = "all") -> Batch:
    """Generate greedily for one batch under capture and score every head: the batch's :class:`Batch` record.

    ``batch.results`` holds the scores; ``batch.rows`` the float32 ``[batch, layers, heads, keys]`` tensor when
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
    answers = decode(processor, out.sequences, prompt_len)
    captured = att.rows
    sizes = [im.size[::-1] for im in images]
    geos, positions = geometries(processor, samples, inputs["input_ids"], layout.image_token_id(model), sizes)
    image, region = key_masks(model, processor, samples, inputs["input_ids"], sizes, captured.shape[-1], geos,
                              image_tokens=image_tokens)
    has_box = torch.tensor([bool(s.boxes) for s in samples])
    visible = (inputs["attention_mask"].bool().cpu() if "attention_mask" in inputs
               else torch.ones(inputs["input_ids"].shape, dtype=torch.bool))
    visible = torch.nn.functional.pad(visible, (0, captured.shape[-1] - visible.shape[1]), value=True)
    steps = att.answer_steps if rows == "answer" else None
    if steps is not None:  # a sample's row sees the prompt and the whitespace tokens before its answer
        visible &= torch.arange(captured.shape[-1])[None] < (prompt_len + steps)[:, None]
    per_head = {n: v.float().numpy()
                for n, v in head_scores(captured, image, region, has_box, k, among, visible).items()}
    table = results_table(samples, answers, indices)
    table["n_image_tokens"] = image.sum(1).tolist()
    table["n_region_tokens"] = region.sum(1).tolist()
    if steps is not None:
        table["answer_step"] = steps.tolist()  # whitespace-only tokens skipped before the analysed row
    settings = {"model_name": spec_of(model).name, "rows": rows, "k": k, "among": among,
                "max_new_tokens": max_new_tokens, "image_tokens": image_tokens}
    return Batch(samples, inputs, images, geos, positions, image, region, captured if keep_rows else None, answers,
                 Results(table, per_head, settings))


@dataclass(frozen=True)
class EagerCheck:
    """Captured analysed rows against eager attention (:func:`eager_check`): ``max_abs_diff`` over the
    compared rows, the tolerance (``atol`` + ``rtol`` x eager's value, as ``torch.testing.assert_close``),
    ``agrees`` (every element within it), ``samples`` compared (those whose greedy answers are the same
    under both kernels), ``rows`` compared (samples x layers x heads), ``dtype`` of the eager run."""

    max_abs_diff: float
    atol: float
    rtol: float
    agrees: bool
    samples: int
    rows: int
    dtype: str


def eager_check(model: Any, processor: Any, samples: Sequence[data.Sample], *, max_new_tokens: int = 4
                ) -> EagerCheck:
    """Does the capture (``helpers.capture.attention``, ``rows="answer"``) equal eager attention on this model?

    One batch: greedy ``generate`` under capture, then the same ``generate`` with the language model switched
    to eager attention and ``output_attentions=True``; per sample the eager row of its answer step
    (``answer_steps``: step 0 = the prefill's last query row, step ``t`` = the decoding step's row) is compared
    with the captured row ``[layers, heads, keys]`` over the keys it sees (the captured row is 0 beyond them).
    Tolerance (as ``tests/test_capture.py``): float32 ``atol=1e-5, rtol=0``; half precision (4-bit models
    compute in fp16/bf16, so eager rounds its probabilities) ``atol=1e-5, rtol=2e-2``.
    """
    samples = list(samples)
    check_max_new_tokens(max_new_tokens, "answer")
    inputs, _ = batch_inputs(model, processor, samples)
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad(), capture.attention(model, rows="answer", tokenizer=processor.tokenizer) as att:
        ours = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    rows, steps = att.rows, att.answer_steps
    lm = capture.language_model(model)
    previous = lm.config._attn_implementation
    lm.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            ref = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, output_attentions=True,
                                 return_dict_in_generate=True)
    finally:
        lm.set_attn_implementation(previous)
    dtype = ref.attentions[0][0].dtype
    atol, rtol = 1e-5, (0.0 if dtype == torch.float32 else 2e-2)
    worst, agrees, compared = 0.0, True, 0
    for b in range(len(samples)):
        n = min(ours.shape[1], ref.sequences.shape[1])
        if not torch.equal(ours[b, :n].cpu(), ref.sequences[b, :n].cpu()):
            continue
        t = int(steps[b])
        eager = torch.stack([layer[b, :, -1, :].float().cpu() for layer in ref.attentions[t]])  # [layers, heads, k]
        got = rows[b]
        keys = prompt_len + t
        diff = (got[..., :keys] - eager[..., :keys]).abs()
        worst = max(worst, float(diff.max()), float(got[..., keys:].abs().max()) if got.shape[-1] > keys else 0.0)
        agrees &= bool((diff <= atol + rtol * eager[..., :keys].abs()).all())
        compared += 1
    return EagerCheck(worst, atol, rtol, agrees and compared > 0, compared, compared * rows.shape[1] * rows.shape[2],
                      str(dtype).replace("torch.", ""))


def reference_means(model: Any, processor: Any, samples: Sequence[data.Sample], *, batch_size: int = 16,
                    positions: str = "all") -> torch.Tensor:
    """Each head's mean output over ``samples`` (one prompt forward per batch; :class:`helpers.capture.head_means`):
    float32 ``[layers, heads, head_dim]``, the ``means`` of ``mask_heads(..., mode="mean")`` and of
    :func:`answers` with ``mode="mean"``."""
    samples = list(samples)
    with torch.no_grad(), capture.head_means(model, positions) as ref:
        for start in range(0, len(samples), batch_size):
            inputs, _ = batch_inputs(model, processor, samples[start:start + batch_size])
            model(**inputs)
    return ref.means


def answers(model: Any, processor: Any, samples: Sequence[data.Sample], *, heads: Sequence[tuple[int, int]] = (),
            mode: str = "uniform", batch_size: int = 16, max_new_tokens: int = 3,
            means: torch.Tensor | None = None) -> pd.DataFrame:
    """Greedy answers of ``samples``, with ``heads`` masked (:func:`helpers.capture.mask_heads`; none: unmasked),
    scored: the one answers loop of the package.

    Returns one row per sample: ``sample_id``, ``question_kind``, ``prompt_kind``, ``prediction``, ``correct``
    (:func:`helpers.data.is_correct`), ``read`` and ``first_word_correct`` (:func:`helpers.data.answer_form`:
    whether the scorer reads an answer at all, and whether the first word is the gold answer, so that a broken
    answer format can be told from a wrong choice). ``mode``: see :func:`helpers.capture.mask_heads`;
    ``mode="mean"``: mean ablation with ``means`` (:func:`reference_means`; when None, the means over ``samples``
    themselves).
    """
    samples = list(samples)
    parts = []
    if mode == "mean" and means is None and heads:
        means = reference_means(model, processor, samples, batch_size=batch_size)
    with torch.no_grad(), capture.mask_heads(model, heads, mode=mode, means=means):
        for start in range(0, len(samples), batch_size):
            batch = samples[start:start + batch_size]
            inputs, _ = batch_inputs(model, processor, batch)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            said = decode(processor, out, inputs["input_ids"].shape[1])
            form = pd.DataFrame([data.answer_form(s, a) for s, a in zip(batch, said, strict=True)],
                                columns=["read", "first_word_correct"])
            parts.append(pd.concat([results_table(batch, said, identity=False), form], axis=1))
    columns = ["sample_id", "question_kind", "prompt_kind", "prediction", "correct", "read", "first_word_correct"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def head_results(model: Any, processor: Any, samples: Sequence[data.Sample], *, batch_size: int = 8,
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
            parts.append(run_batch(model, processor, batch, indices=range(start, start + len(batch)),
                                   **kwargs).results)
            bar.update(len(batch))
    res = concat(parts)
    res.settings.update(dataset=dataset, batch_size=batch_size)
    return res
