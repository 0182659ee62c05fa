"""Run a model over samples and keep per-sample, per-head scores (the in-memory path of the notebooks).

    res = head_results(model, processor, samples, batch_size=8)
    res.weight            # [samples, layers, heads] attention weight on the image tokens
    res.concentration     # [samples, layers, heads]
    res.accuracy          # fraction of samples answered correctly

Per batch: the images the model sees and the templated prompts (``helpers.data.model_inputs``),
the processor with left padding (whatever the tokenizer's default), greedy ``model.generate`` under ``helpers.capture.attention``,
the answer scored with ``helpers.data.is_correct``, the image / region tokens from
``helpers.layout``, the scores from ``helpers.metrics``. Sweeps at scale (resumable, sharded,
saved to disk) are ``helpers.sweep``'s job; this module keeps everything in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import capture, layout, metrics


@dataclass
class HeadResults:
    """Per-sample, per-head scores of one model on one list of samples.

    Tensors are float32 ``[samples, layers, heads]`` unless said otherwise. ``region_weight``,
    ``region_share`` and ``region_hits`` (the detection hits with ``k``, ``among`` below) are NaN for
    samples without a box. ``correct``: bool ``[samples]``. ``rows``: which query row was captured.
    """

    model: str
    dataset: str
    sample_ids: list[str]
    outputs: list[str]
    correct: torch.Tensor
    weight: torch.Tensor
    concentration: torch.Tensor
    region_weight: torch.Tensor
    region_share: torch.Tensor
    region_hits: torch.Tensor
    rows: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """Fraction of samples answered correctly."""
        return float(self.correct.float().mean()) if len(self.correct) else float("nan")

    def per_head(self, name: str, only_correct: bool = False) -> torch.Tensor:
        """Mean over samples of the score ``name`` (NaN skipped): ``[layers, heads]``."""
        values = getattr(self, name)
        return metrics.aggregate(values, mask=self.correct if only_correct else None).mean

    def detection_score(self) -> torch.Tensor:
        """The detection score ``[layers, heads]``: mean region hits over correctly answered samples."""
        return self.per_head("region_hits", only_correct=True)


def _pad_keys(mask: torch.Tensor, keys: int) -> torch.Tensor:
    """``[batch, seq]`` -> ``[batch, keys]``: keys after the prompt (generated tokens) are never image tokens."""
    return torch.nn.functional.pad(mask, (0, keys - mask.shape[1]), value=False)


def head_results(model: Any, processor: Any, samples: Sequence[Any], batch_size: int = 8, rows: str = "answer",
                 max_new_tokens: int = 4, k: float | int | str = 0.05, among: str = "all",
                 dataset: str = "", progress: bool = False) -> HeadResults:
    """Generate answers for ``samples`` (``helpers.data.Sample``) and score every head on every sample.

    ``rows``: ``"answer"`` (default, the first generated token's row, as the authors' code) or
    ``"prompt_end"`` (see ``helpers.capture.attention``). ``max_new_tokens``: answer length
    (at least 2 for ``"answer"``). ``k``, ``among``: the detection-hit settings
    (``helpers.metrics.detection_hits``).
    """
    from . import data
    from .models import spec_of

    if not samples:
        raise ValueError(f"{dataset or 'samples'}: no samples to run")
    spec = spec_of(model)
    tid = layout.image_token_id(model)
    device = next(model.parameters()).device
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    out: dict[str, list] = {n: [] for n in ("weight", "concentration", "region_weight", "region_share",
                                            "region_hits", "outputs", "correct")}
    starts = range(0, len(samples), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{spec.name} {dataset}".strip(), unit="batch")
    for start in starts:
        batch = list(samples[start:start + batch_size])
        images, texts = data.model_inputs(batch, spec)
        inputs = processor(images=images, text=texts, return_tensors="pt", padding=True, padding_side="left")
        inputs = {n: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for n, v in inputs.items()}
        with torch.no_grad(), capture.attention(model, rows=rows) as att:
            generated = model.generate(**inputs, max_new_tokens=max(max_new_tokens, 2 if rows == "answer" else 1),
                                       do_sample=False)
        answers = processor.tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:],
                                                   skip_special_tokens=True)
        r = att.rows
        ids = inputs["input_ids"].cpu()
        image = _pad_keys(layout.image_token_mask(ids, tid), r.shape[-1])
        has_box = torch.tensor([bool(s.boxes) for s in batch])
        sizes = [img.size[::-1] for img in images]
        region = layout.region_mask(ids, tid, processor, sizes, [s.boxes or [(0, 0, 1, 1)] for s in batch],
                                    sample_ids=[s.id for s in batch])
        region = _pad_keys(region & has_box[:, None], r.shape[-1])
        nan = torch.tensor(float("nan"))
        out["weight"].append(metrics.attention_weight(r, image))
        out["concentration"].append(metrics.concentration(r, image))
        box = has_box[:, None, None]
        out["region_weight"].append(torch.where(box, metrics.region_weight(r, region), nan))
        out["region_share"].append(torch.where(box, metrics.region_share(r, region, image), nan))
        out["region_hits"].append(torch.where(box, metrics.detection_hits(r, image, region, k=k, among=among), nan))
        out["outputs"].extend(answers)
        out["correct"].extend(data.is_correct(s, a) for s, a in zip(batch, answers, strict=True))
    return HeadResults(
        model=spec.name, dataset=dataset, sample_ids=[s.id for s in samples], outputs=out["outputs"],
        correct=torch.tensor(out["correct"], dtype=torch.bool), rows=rows,
        settings={"batch_size": batch_size, "max_new_tokens": max_new_tokens, "k": k, "among": among},
        **{n: torch.cat(out[n]).float() for n in ("weight", "concentration", "region_weight", "region_share",
                                                  "region_hits")})


def panels(dataset: str, n: int, seed: int = 0, split_by: str | None = "question_kind",
           prompt_kind: str | None = "visual", **load_kwargs: Any) -> dict[str, list]:
    """Samples of ``dataset`` (a key of ``helpers.data.LOADERS``) grouped into figure panels.

    ``split_by``: a :class:`helpers.data.Sample` attribute whose values name the panels
    (``"question_kind"``: general / object / super for PointQA) or None for one panel.
    ``prompt_kind``: keep only ``"visual"`` or ``"plain"`` samples (None: both). Each panel is a
    seeded random choice of at most ``n`` samples, in dataset order.
    """
    import random

    from . import data

    samples = [s for s in data.load(dataset, **load_kwargs) if prompt_kind is None or s.prompt_kind == prompt_kind]
    groups: dict[str, list] = {}
    for s in samples:
        key = dataset if split_by is None else f"{dataset} {getattr(s, split_by)}"
        groups.setdefault(key, []).append(s)
    if not groups:
        raise ValueError(f"{dataset}: no samples with prompt_kind={prompt_kind!r}")
    rng = random.Random(seed)
    return {k: [v[i] for i in sorted(rng.sample(range(len(v)), min(n, len(v))))] for k, v in groups.items()}


def default_models(device: str | None = None) -> list[Any]:
    """The models a figure notebook runs when its ``MODELS`` parameter is None.

    On CUDA ``[None]`` (``helpers.models.load_default`` then picks the GPU default); on CPU every
    trained toy model folder ``data/toy-*`` (sorted), or ``[None]`` (the embedded default) if none.
    """
    from .env import DATA_DIR, default_device

    if (device or default_device()).startswith("cuda"):
        return [None]
    toys = sorted(str(p) for p in DATA_DIR.glob("toy-*") if (p / "config.json").is_file())
    return toys or [None]
