"""Interactive head explorer: pick heads on a layer x head map, see their attention on the image, mask them.

    explorer = widgets.HeadExplorer(model, processor, samples)   # runs the model once, caches the rows
    explorer = widgets.HeadExplorer(model, processor, selection.samples("scenes-count", 96), show=6,
                                    extraction_cache=True, source=MODEL, dataset="scenes-count")
                                                                   # score map read from the extraction cache
    explorer.widget                                                # show it (last expression of a cell)
    explorer.pick(3, 1); explorer.mask_button.click()              # the same interactions from code

What runs when:

- **Construction** (:func:`build_cache`): the per-head scores of ``samples`` (the score map) come from the
  extraction cache (:mod:`helpers.cache`) when ``extraction_cache=True`` and a figure notebook stored them
  with the same model, samples and settings (:func:`extraction_key`: the key of
  :func:`helpers.runs.extractions`); else :func:`helpers.extract.run_batch` computes them in the batches of
  :func:`helpers.extract.head_results` (and stores them there). What the cache cannot hold is run for the
  first ``show`` samples: :func:`helpers.extract.run_batch` with ``keep_rows=True`` (greedy ``generate`` under
  ``helpers.capture.attention``; its :class:`helpers.extract.Batch` record gives the images, geometries and
  region tokens, nothing is processed twice) and one forward pass for the probability of each gold answer
  (:func:`answer_logprob`). Only the rows' image-token columns are kept: per sample a float32
  ``[layers, heads, image_tokens]`` array.
- **Head, sample, score or view change**: re-rendered from the cached rows; the model is not called.
- **"Mask selected heads and re-run"**: :func:`evaluate`: :func:`helpers.extract.answers` with the heads
  masked (one ``generate`` over ``samples``) and one masked forward for :func:`answer_logprob`: the new answer, the probability of the right answer and
  the accuracy on the samples, next to the unmasked baseline.

Selection. The layer / head sliders (or a click on a top-head button, or on a cell of the button grid that
small models get) set the *current* head; "pin" keeps it, "select top k" pins the k best heads of the
score map shown. The selection is the pinned heads plus the current one. The attention map shows the mean
of the selected heads' rows; masking ablates all of them.

Attention over the image. Each image token's attention probability is painted over the pixels of its
patch's footprint in the original image (:func:`helpers.layout.image_geometry`, nearest-patch upsampling,
:func:`helpers.plots.patch_map`), so crop and pad-to-square processors are shown where their patches
really lie (cropped edges stay uncoloured). The region box (the sample's ``boxes``) is drawn dashed.
LLaVA-1.6 (anyres) has two views of one image: ``view="base"`` (default) shows the base view's tokens (the
whole image squashed to a square, one 24x24 grid), ``view="grid"`` the high-resolution grid's tokens
(finer patches; its newline tokens have no pixels and are not shown). The two views' attention is never
summed onto one map, since their patches overlap. A dropdown switches views.

Scores. The map and the top-head list show one score ``[layers, heads]`` from :class:`helpers.results.Results`:
``detection`` (the detection score: mean ``region_hits`` over correctly answered samples) or the mean over
samples of ``region_hits``, ``region_share``, ``region_weight``, ``weight`` or ``concentration``. They come
from the explorer's own samples, or from ``ranking`` (e.g. the results of a larger sweep of the same model).
The default is the first of detection, region_share, weight that has a finite value (a model that answers
nothing right has no detection score).

Probability of the right answer (:func:`answer_logprob`, a choice documented here): the product of the
teacher-forced probabilities of the gold answer's tokens (``prompt + " " + answer``) after the prompt, so
multi-token answers and tokenizers that split off a leading space are covered.
"""

from __future__ import annotations

import html
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import cache, capture, data, extract, layout, metrics, plots, runs
from .models import spec_of
from .results import Results, concat

SCORE_CHOICES = {
    "detection": "detection score (region_hits over correct answers)",
    "region_hits": "region_hits (top-k keys in the box), all samples",
    "region_share": "region share of image attention, all samples",
    "region_weight": "attention weight on the box, all samples",
    "weight": "attention weight on the image, all samples",
    "concentration": "concentration on the image, all samples",
}
ROW_TEXT = {
    "answer": "the row that predicts the answer's first content token (rows='answer', the analysed row)",
    "first_generated": "the first generated token's row at the first decoding step (rows='first_generated', as "
                       "the paper's code)",
    "prompt_end": "the last prompt position, the row that predicts the answer (rows='prompt_end')",
}
VIEWS = {"base": 0, "grid": 1}


# ---------------------------------------------------------------------------------------------
# Model calls (construction and masking only)


@dataclass(frozen=True)
class Evaluation:
    """Answers of one run over the explorer's samples: ``answers``, ``correct`` and ``prob`` (``[samples]``)."""

    answers: list[str]
    correct: np.ndarray
    prob: np.ndarray
    heads: tuple[tuple[int, int], ...] = ()
    mode: str = ""

    @property
    def accuracy(self) -> float:
        """Share of correctly answered samples."""
        return float(np.mean(self.correct)) if len(self.correct) else float("nan")


def answer_logprob(model: Any, processor: Any, samples: Sequence[data.Sample], sep: str = " ") -> np.ndarray:
    """Log-probability ``[samples]`` of each sample's gold answer after its prompt (one forward pass).

    Teacher forcing on ``prompt + sep + answer`` (left padded): the sum of the log-softmax of the answer's
    tokens, each predicted from the position before it. The answer's tokens are those that tokenizing the
    full text adds to the prompt's (if the two do not share a prefix, the tokens of ``sep + answer``).
    """
    images, texts = data.model_inputs(samples, spec_of(model))
    full = [t + sep + str(s.answer) for t, s in zip(texts, samples, strict=True)]
    tok = processor.tokenizer
    n_answer = []
    for sample, prompt, text in zip(samples, texts, full, strict=True):
        a, b = tok(prompt)["input_ids"], tok(text)["input_ids"]
        n = len(b) - len(a) if b[:len(a)] == a else len(tok(sep + str(sample.answer), add_special_tokens=False)
                                                         ["input_ids"])
        if n < 1:
            raise ValueError(f"sample {sample.id}: its gold answer {sample.answer!r} tokenizes to nothing")
        n_answer.append(n)
    inputs, _ = extract.batch_inputs(model, processor, samples, texts=full)
    keep = max(n_answer) + 1
    with torch.no_grad():
        logits = model(**inputs, logits_to_keep=keep).logits[:, -keep:].float()  # [batch, keep, vocab]
    ids = inputs["input_ids"][:, -keep:]
    logp = torch.log_softmax(logits, -1)
    out = []
    for i, n in enumerate(n_answer):
        pos = torch.arange(keep - n, keep, device=logp.device)
        out.append(float(logp[i, pos - 1, ids[i, pos]].sum()))
    return np.array(out)


def evaluate(model: Any, processor: Any, samples: Sequence[data.Sample], heads: Sequence[tuple[int, int]] = (),
             mode: str = "uniform", max_new_tokens: int = 4, batch_size: int = 8) -> Evaluation:
    """Greedy answers and correctness (:func:`helpers.extract.answers`) and ``P(gold answer)``
    (:func:`answer_logprob`) of ``samples`` with ``heads`` masked (none: unmasked).

    ``mode``: see :func:`helpers.capture.mask_heads`.
    """
    heads = tuple(sorted({(int(a), int(b)) for a, b in heads}))
    table = extract.answers(model, processor, samples, heads=heads, mode=mode, batch_size=batch_size,
                            max_new_tokens=max_new_tokens)
    with capture.mask_heads(model, heads, mode=mode), torch.no_grad():
        probs = [np.exp(answer_logprob(model, processor, list(samples[start:start + batch_size])))
                 for start in range(0, len(samples), batch_size)]
    return Evaluation(table["prediction"].tolist(), table["correct"].to_numpy(dtype=bool), np.concatenate(probs),
                      heads, mode if heads else "")


@dataclass
class Cache:
    """What the model produced once, for re-rendering without it.

    ``results``: per-sample head scores of the samples shown; ``ranking``: per-head scores of all the samples
    the explorer was given (the score map; the same as ``results`` unless ``show`` left some undrawn);
    ``image_rows[i]``: float32 ``[layers, heads, image_tokens_i]``, the captured row's attention on shown sample
    ``i``'s image tokens (in token order); ``geometries[i]``: their footprints; ``region[i]``: bool
    ``[image_tokens_i]``, tokens covering the box; ``images[i]``: the image the model saw (``[height, width, 3]``
    uint8); ``baseline``: the unmasked :class:`Evaluation`; ``source``: where the scores came from
    (``"extraction cache"``, ``"computed, stored in the extraction cache"`` or ``"computed"``).
    """

    results: Results
    image_rows: list[np.ndarray]
    geometries: list[layout.ImageGeometry]
    region: list[np.ndarray]
    images: list[np.ndarray]
    baseline: Evaluation
    rows: str
    ranking: Results | None = None
    source: str = "computed"

    def __post_init__(self) -> None:
        if self.ranking is None:
            self.ranking = self.results


DEFAULT_NEW_TOKENS = inspect.signature(extract.run_batch).parameters["max_new_tokens"].default


def extraction_key(source: str | Path | None, samples: Sequence[data.Sample], *, rows: str = "answer",
                   batch_size: int = 8, max_new_tokens: int = DEFAULT_NEW_TOKENS) -> str:
    """The extraction-cache key of these explorer settings: the key :func:`helpers.runs.extractions` uses
    for model ``source`` (a notebook's ``MODEL`` parameter) on ``samples`` with ``batch_size`` and ``rows``
    (``max_new_tokens`` joins the settings only when it is not the extraction's default, as there)."""
    extra = {} if max_new_tokens == DEFAULT_NEW_TOKENS else {"max_new_tokens": max_new_tokens}
    return runs.cache_key(source, samples, batch_size=batch_size, rows=rows, **extra)


def cached_results(key: str, samples: Sequence[data.Sample]) -> Results | None:
    """The extraction cache's per-head :class:`Results` under ``key`` (:func:`helpers.cache.read`) when they hold
    exactly ``samples`` in order, else None (never stored, cache off, or other samples)."""
    found = cache.read(key)
    if found is None or found.table["sample_id"].tolist() != [s.id for s in samples]:
        return None
    return found


def build_cache(model: Any, processor: Any, samples: Sequence[data.Sample], rows: str = "answer",
                batch_size: int = 8, max_new_tokens: int = DEFAULT_NEW_TOKENS, *, show: int | None = None,
                cache_key: str | None = None, dataset: str = "") -> Cache:
    """Run what the explorer needs once and keep it.

    Per-head scores of all ``samples`` (the score map): read from the extraction cache when ``cache_key``
    (:func:`extraction_key`) holds them, so the explorer shows the numbers the figure notebooks computed;
    else computed with :func:`helpers.extract.run_batch` in the batches :func:`helpers.extract.head_results`
    uses (identical scores) and, with a ``cache_key``, stored there for the other notebooks (labelled
    ``dataset``, as :func:`helpers.runs.extractions` labels them). The attention rows the cache cannot hold
    are kept for the first ``show`` samples (default all): ``keep_rows=True`` in the same batches, and one
    forward pass per batch for the probability of each gold answer (:func:`answer_logprob`). On a cache hit
    only the batches of the shown samples run.
    """
    samples = list(samples)
    show = len(samples) if show is None else show
    if isinstance(show, bool) or not isinstance(show, int) or not 1 <= show <= len(samples):
        raise ValueError(f"show={show!r}: how many samples are drawn, an int from 1 to {len(samples)}")
    found = cached_results(cache_key, samples) if cache_key is not None else None
    parts, image_rows, geometries, region, images, probs = [], [], [], [], [], []
    stop = len(samples) if found is None else show
    for start in range(0, stop, batch_size):
        chosen = samples[start:start + batch_size]
        drawn = start < show
        batch = extract.run_batch(model, processor, chosen, rows=rows, max_new_tokens=max_new_tokens,
                                  indices=range(start, start + len(chosen)), keep_rows=drawn)
        parts.append(batch.results)
        if not drawn:
            continue
        for i, image in enumerate(batch.images[:show - start]):
            image_rows.append(batch.image_rows(i).numpy())
            geometries.append(batch.geometries[i])
            region.append(batch.region_tokens(i).numpy())
            images.append(np.asarray(image))
        probs.append(np.exp(answer_logprob(model, processor, batch.samples[:show - start])))
    if found is not None:
        ranking, source = found, "extraction cache"
    else:
        ranking = runs.label(concat(parts), model)
        ranking.settings.update(dataset=dataset, batch_size=batch_size)
        source = "computed"
        if cache_key is not None:
            extra = {} if max_new_tokens == DEFAULT_NEW_TOKENS else {"max_new_tokens": max_new_tokens}
            runs.store(cache_key, ranking, settings=runs.extraction_settings(batch_size, rows, **extra))
            source = "computed, stored in the extraction cache"
    results = ranking.select(np.arange(len(ranking)) < show)
    baseline = Evaluation(results.table["prediction"].tolist(), results.table["correct"].to_numpy(dtype=bool),
                          np.concatenate(probs))
    return Cache(results, image_rows, geometries, region, images, baseline, rows, ranking, source)


# ---------------------------------------------------------------------------------------------
# Pure helpers: cached arrays in, arrays and text out


def selection_values(image_rows: np.ndarray, heads: Sequence[tuple[int, int]]) -> np.ndarray:
    """Mean over ``heads`` of one sample's image-token attention: ``[image_tokens]`` from ``[layers, heads, tokens]``."""
    if not heads:
        return np.zeros(image_rows.shape[-1], dtype=np.float32)
    return np.mean([image_rows[layer, head] for layer, head in heads], axis=0)


def view_heatmap(geometry: layout.ImageGeometry, values: np.ndarray, view: str = "base") -> np.ndarray:
    """``[height, width]`` map of per-token ``values`` over the original image, tokens of one ``view`` only."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {tuple(VIEWS)}, got {view!r}")
    keep = (geometry.view == VIEWS[view]).numpy()
    if not keep.any():
        raise ValueError(f"view {view!r}: this image has no tokens of that view (layout {geometry.layout!r}); "
                         "use view='base'")
    return plots.patch_map(values[keep], geometry.footprints.numpy()[keep], geometry.image_size)


def score_map(results: Results, name: str) -> np.ndarray:
    """Score ``name`` (a key of :data:`SCORE_CHOICES`) as ``[layers, heads]``."""
    if name not in SCORE_CHOICES:
        raise ValueError(f"score must be one of {tuple(SCORE_CHOICES)}, got {name!r}")
    scores = results.detection_score() if name == "detection" else results.per_head(name)
    return np.asarray(scores, dtype=np.float32)


def default_score(results: Results) -> str:
    """The first of ``detection``, ``region_share``, ``weight`` with a finite value."""
    for name in ("detection", "region_share", "weight"):
        if np.isfinite(score_map(results, name)).any():
            return name
    return "weight"


def head_label(layer: int, head: int) -> str:
    """``"L3 H1"``."""
    return f"L{layer} H{head}"


def heads_text(heads: Sequence[tuple[int, int]], limit: int = 12) -> str:
    """``"L3 H1, L2 H0"`` (the first ``limit``, then a count)."""
    names = [head_label(*h) for h in heads]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "") or "none"


def comparison_html(baseline: Evaluation, masked: Evaluation | None, index: int, sample: data.Sample) -> str:
    """HTML table: this sample's answer and P(gold answer), and the accuracy, unmasked vs masked."""
    def cells(e: Evaluation) -> str:
        mark = "right" if e.correct[index] else "wrong"
        return (f"<td><b>{html.escape(e.answers[index]) or '(empty)'}</b> ({mark})</td>"
                f"<td>{e.prob[index]:.4g}</td><td>{e.accuracy:.0%} of {len(e.correct)}</td>")

    head = "<tr><th></th><th>answer</th><th>P(gold answer)</th><th>accuracy</th></tr>"
    rows = f"<tr><td>unmasked</td>{cells(baseline)}</tr>"
    if masked is not None:
        rows += (f"<tr><td>masked ({len(masked.heads)} heads, {masked.mode}): "
                 f"{html.escape(heads_text(masked.heads, 6))}</td>{cells(masked)}</tr>")
    return (f"<div class='vh-mask-result'>gold answer <b>{html.escape(str(sample.answer))}</b>"
            f"<table style='border-collapse:collapse'>{head}{rows}</table></div>")


def _hex(rgba: Sequence[float]) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgba[:3])


# ---------------------------------------------------------------------------------------------
# Widget wiring


class HeadExplorer:
    """The explorer: controls, cached rows and renders. Show ``explorer.widget``.

    Args:
        model, processor: a LLaVA-family model and its processor (``helpers.models.load`` / ``load_default``).
        samples: a few :class:`helpers.data.Sample` (e.g. 8); all are run once at construction.
        rows: the captured query row, ``"answer"`` or ``"prompt_end"`` (see ``helpers.capture.attention``).
        ranking: optional :class:`helpers.results.Results` of the same model (e.g. a larger sweep) whose
            per-head scores fill the map and the top-head list instead of the explorer's own samples.
        top_k: how many top heads are listed.
        grid: show a clickable button per head: ``"auto"`` (when layers x heads <= 256), True or False.
        batch_size, max_new_tokens: for the model runs.
        show: how many of ``samples`` (the first) are drawn and masked; default all. The score map covers all.
        extraction_cache: read the per-head scores of ``samples`` from the extraction cache
            (:mod:`helpers.cache`) where a figure notebook stored them, or store them there
            (:func:`build_cache`); the key is :func:`extraction_key` of ``source`` (the ``MODEL`` parameter the
            model was loaded from, None: the hardware default). ``samples`` are then the samples of a task set
            as :func:`helpers.selection.samples` gives them, and ``dataset`` its name (the stored label).
    """

    def __init__(self, model: Any, processor: Any, samples: Sequence[data.Sample], rows: str = "answer",
                 ranking: Results | None = None, top_k: int = 8, grid: bool | str = "auto",
                 batch_size: int = 8, max_new_tokens: int = DEFAULT_NEW_TOKENS, *, show: int | None = None,
                 extraction_cache: bool = False, source: str | Path | None = None, dataset: str = ""):
        samples = list(samples)
        if not samples:
            raise ValueError("HeadExplorer: samples is empty; pass a few Sample objects, e.g. "
                             "data.load_shapes(limit=8)")
        if rows not in ROW_TEXT:
            raise ValueError(f"HeadExplorer(rows={rows!r}): rows must be one of {tuple(ROW_TEXT)}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"HeadExplorer(top_k={top_k!r}): top_k is how many top heads are listed, an int >= 0")
        for name, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HeadExplorer({name}={value!r}): must be an int >= 1")
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        key = (extraction_key(source, samples, rows=rows, batch_size=batch_size, max_new_tokens=max_new_tokens)
               if extraction_cache else None)
        self.cache = build_cache(model, processor, samples, rows, batch_size, max_new_tokens, show=show,
                                 cache_key=key, dataset=dataset)
        self.model, self.processor, self.samples = model, processor, samples[:len(self.cache.images)]
        self.ranking = ranking if ranking is not None else self.cache.ranking
        if self.ranking.shape != self.cache.results.shape:
            raise ValueError(f"HeadExplorer: ranking has {self.ranking.shape} (layers, heads) but the model has "
                             f"{self.cache.results.shape}; pass results of the same model")
        self.n_layers, self.n_heads = self.cache.results.shape
        self.top_k = top_k
        self.pinned: list[tuple[int, int]] = []
        self.masked: Evaluation | None = None
        self.heat: np.ndarray | None = None  # the last rendered attention map [height, width]
        self._syncing = False
        self._score_key: tuple | None = None
        self._build(grid)
        self.render()

    # ----- state

    @property
    def current(self) -> tuple[int, int]:
        """The head the sliders point at."""
        return int(self.layer.value), int(self.head.value)

    @property
    def selected(self) -> list[tuple[int, int]]:
        """Pinned heads plus the current one, in selection order."""
        return list(dict.fromkeys([*self.pinned, self.current]))

    @property
    def index(self) -> int:
        """The sample shown."""
        return int(self.sample.value)

    def scores(self) -> np.ndarray:
        """The score map shown, ``[layers, heads]``."""
        return score_map(self.ranking, self.score.value)

    def top(self, k: int | None = None) -> list[tuple[int, int]]:
        """The ``k`` (default ``top_k``) best heads of the score map shown, best first (NaN last)."""
        return metrics.top_heads(self.scores(), self.top_k if k is None else k)

    # ----- actions (what the controls call; usable from code)

    def _check(self, layer: int, head: int) -> None:
        if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
            raise ValueError(f"head ({layer}, {head}) is out of range: {self.n_layers} layers x {self.n_heads} heads "
                             f"(layer 0-{self.n_layers - 1}, head 0-{self.n_heads - 1})")

    def pick(self, layer: int, head: int) -> None:
        """Make ``(layer, head)`` the current head (moves the sliders; re-renders once)."""
        self._check(layer, head)
        self._syncing = True
        try:
            self.layer.value, self.head.value = int(layer), int(head)
        finally:
            self._syncing = False
        self.render()

    def select(self, heads: Sequence[tuple[int, int]]) -> None:
        """Select exactly ``heads`` (the first becomes current, the rest pinned)."""
        heads = [(int(a), int(b)) for a, b in heads]
        if not heads:
            raise ValueError("select: give at least one (layer, head)")
        for pair in heads:
            self._check(*pair)
        self.pinned = heads[1:]
        self.pick(*heads[0])

    def mask_and_rerun(self) -> Evaluation:
        """Run the samples with the selected heads masked (model call); the result is shown and returned."""
        self.mask_status.value = f"running {len(self.samples)} samples with {len(self.selected)} heads masked ..."
        self.masked = evaluate(self.model, self.processor, self.samples, self.selected, self.mask_mode.value,
                               self.max_new_tokens, self.batch_size)
        self.mask_status.value = ""
        self._render_mask()
        return self.masked

    # ----- rendering (from the cache only)

    def render(self) -> None:
        """Re-render the score map, the attention map, the texts and the top-head list."""
        i, heads = self.index, self.selected
        scores = self.scores()
        key = (self.score.value, tuple(heads))
        if key != self._score_key:  # the map does not depend on the sample or the view
            self.score_image.value = plots.figure_png(plots.head_score_figure(
                scores, heads, title=f"{spec_of(self.model).name} · {self.ranking.dataset or 'explorer samples'}"
                                     f" · {self.score.value}"))
            self._score_key = key
        fig, weight, in_box = self._attention(i, heads)
        self.attention_image.value = plots.figure_png(fig)
        self._render_text(i, heads, weight, in_box)
        self._render_top(scores)
        self._render_grid(scores, heads)
        self._render_mask()

    def attention_figure(self) -> Any:
        """The attention map shown (current sample, selected heads) as a matplotlib Figure, e.g. to save."""
        return self._attention(self.index, self.selected)[0]

    def _attention(self, i: int, heads: list[tuple[int, int]]) -> tuple[Any, float, float]:
        """Figure of the selected heads' mean attention on sample ``i``'s image, its weight W and box share."""
        values = selection_values(self.cache.image_rows[i], heads)
        region = self.cache.region[i]
        weight = float(values.sum())
        in_box = float(values[region].sum()) / weight if region.any() and weight > 0 else float("nan")
        self.heat = view_heatmap(self.cache.geometries[i], values, self.view.value)
        title = (f"{self.samples[i].id}\n{heads_text(heads, 4)} · W={weight:.3f}"
                 + ("" if math.isnan(in_box) else f" · in box {in_box:.0%}"))
        fig = plots.head_attention_figure(self.cache.images[i], self.heat, self.samples[i].boxes, title=title,
                                          vmin=None if self.stretch.value else 0.0)
        return fig, weight, in_box

    def _render_text(self, i: int, heads: list[tuple[int, int]], weight: float, in_box: float) -> None:
        s, base = self.samples[i], self.cache.baseline
        row = self.cache.results.table.iloc[i]
        self.info.value = (
            f"<div class='vh-info'><b>{html.escape(s.id)}</b> ({html.escape(s.prompt_kind)} prompt"
            f"{', ' + html.escape(s.question_kind) + ' question' if s.question_kind else ''})<br>"
            f"question: {html.escape(s.question)}<br>gold answer: <b>{html.escape(str(s.answer))}</b> · model: "
            f"<b>{html.escape(str(row.prediction)) or '(empty)'}</b> ({'right' if row.correct else 'wrong'}, "
            f"P(gold)={base.prob[i]:.4g})<br>query row: {ROW_TEXT[self.cache.rows]}<br>"
            f"selected: <b>{html.escape(heads_text(heads))}</b> (current {head_label(*self.current)}) · "
            f"attention on the image W={weight:.3f}"
            f"{'' if math.isnan(in_box) else f', share in the box {in_box:.1%}'}"
            f" · {int(self.cache.region[i].sum())} of {len(self.cache.region[i])} image tokens in the box</div>")

    def _render_top(self, scores: np.ndarray) -> None:
        for button, (layer, head) in zip(self.top_buttons, self.top(), strict=True):
            value = scores[layer, head]
            button.description = f"{head_label(layer, head)}: {value:.4g}"
            button.tooltip = f"make {head_label(layer, head)} the current head ({self.score.value} {value:.4f})"
            button._vh_head = (layer, head)

    def _render_grid(self, scores: np.ndarray, heads: list[tuple[int, int]]) -> None:
        if self.grid is None:
            return
        import matplotlib

        finite = scores[np.isfinite(scores)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        cmap = matplotlib.colormaps["viridis"]
        for (layer, head), button in self.grid_buttons.items():
            v = scores[layer, head]
            button.style.button_color = "#dddddd" if not np.isfinite(v) else _hex(cmap((v - lo) / (hi - lo or 1)))
            button.layout.border = "2px solid red" if (layer, head) in heads else "1px solid white"
            button.tooltip = f"{head_label(layer, head)}: {self.score.value} {v:.4f}"

    def _render_mask(self) -> None:
        self.mask_result.value = comparison_html(self.cache.baseline, self.masked, self.index,
                                                 self.samples[self.index])

    # ----- building the controls

    def _build(self, grid: bool | str) -> None:
        import ipywidgets as w

        spec = spec_of(self.model)
        res = self.cache.results
        ranked = self.ranking
        self.header = w.HTML(
            f"<b>{html.escape(spec.name)}</b> · {self.n_layers} layers x {self.n_heads} heads · {len(self.samples)} "
            f"samples shown, accuracy {res.accuracy:.0%} · score map: {len(ranked)} samples"
            f"{' of ' + html.escape(ranked.dataset) if ranked.dataset else ''} ({html.escape(self.cache.source)})"
            f"{' · ' + html.escape(spec.note) if spec.note else ''}")
        self.sample = w.Dropdown(options=[(f"{i}: {s.id} (gold {s.answer}, said {res.table.prediction[i]!r})", i)
                                          for i, s in enumerate(self.samples)], value=0, description="sample")
        self.score = w.Dropdown(options=[(v, k) for k, v in SCORE_CHOICES.items()],
                                value=default_score(self.ranking), description="score")
        anyres = any(g.layout == "anyres" for g in self.cache.geometries)
        self.stretch = w.Checkbox(value=False, description="colours from min (not 0)", indent=False)
        self.view = w.Dropdown(options=list(VIEWS) if anyres else ["base"], value="base", description="view",
                               disabled=not anyres)
        self.layer = w.IntSlider(0, 0, self.n_layers - 1, description="layer", continuous_update=False)
        self.head = w.IntSlider(0, 0, self.n_heads - 1, description="head", continuous_update=False)
        auto = w.Layout(width="auto")
        self.pin_button = w.Button(description="pin current head", tooltip="keep the current head selected",
                                   layout=auto)
        self.clear_button = w.Button(description="clear pins", layout=auto)
        self.k = w.BoundedIntText(value=min(5, self.n_layers * self.n_heads), min=1,
                                  max=self.n_layers * self.n_heads, description="k", layout=w.Layout(width="130px"))
        self.top_k_button = w.Button(description="select top k", tooltip="pin the k best heads of the score map",
                                     layout=auto)
        self.score_image = w.Image(format="png", layout=w.Layout(width="360px"))
        self.attention_image = w.Image(format="png", layout=w.Layout(width="360px"))
        self.attention_image.add_class("vh-attention-map")
        self.score_image.add_class("vh-score-map")
        self.info = w.HTML()
        self.top_buttons = [w.Button(layout=w.Layout(width="auto")) for _ in range(min(self.top_k,
                                                                                      self.n_layers * self.n_heads))]
        for b in self.top_buttons:
            b.add_class("vh-top-head")
            b.on_click(lambda b: self.pick(*b._vh_head))
        self.mask_mode = w.Dropdown(options=list(capture.MASK_MODES), value="uniform", description="mask mode")
        self.mask_button = w.Button(description="Mask selected heads and re-run", button_style="warning",
                                    layout=w.Layout(width="auto"))
        self.mask_button.add_class("vh-mask-button")
        self.mask_status = w.HTML()
        self.mask_result = w.HTML()

        self.grid = None
        self.grid_buttons: dict[tuple[int, int], Any] = {}
        if grid is True or (grid == "auto" and self.n_layers * self.n_heads <= 256):
            for layer in range(self.n_layers):
                for head in range(self.n_heads):
                    b = w.Button(layout=w.Layout(width="22px", height="18px", padding="0", margin="0"))
                    b.add_class("vh-grid-head")
                    b.on_click(lambda _, lh=(layer, head): self.pick(*lh))
                    self.grid_buttons[layer, head] = b
            self.grid = w.GridBox(list(self.grid_buttons.values()), layout=w.Layout(
                grid_template_columns=f"repeat({self.n_heads}, 24px)", grid_gap="1px"))

        def changed(_: Any) -> None:
            if not self._syncing:
                self.render()

        for control in (self.sample, self.score, self.view, self.stretch, self.layer, self.head):
            control.observe(changed, names="value")
        self.pin_button.on_click(lambda _: self._pin())
        self.clear_button.on_click(lambda _: self._clear())
        self.top_k_button.on_click(lambda _: self.select(self.top(self.k.value)))
        self.mask_button.on_click(lambda _: self._mask_clicked())

        left = [self.score_image, *([w.HTML("click a head:"), self.grid] if self.grid is not None else []),
                self.layer, self.head, w.HBox([self.pin_button, self.clear_button]),
                w.HBox([self.k, self.top_k_button])]
        self.widget = w.VBox([
            self.header, w.HBox([self.sample, self.score, self.view]),
            w.HBox([w.VBox(left, layout=w.Layout(width="380px")),
                    w.VBox([self.attention_image, self.stretch, self.info], layout=w.Layout(max_width="620px"))]),
            w.HTML(f"<b>top {len(self.top_buttons)} heads</b> by the score shown (click to view):"),
            w.HBox(self.top_buttons, layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self.mask_mode, self.mask_button, self.mask_status]), self.mask_result,
        ])
        self.widget.add_class("vh-head-explorer")

    def _mask_clicked(self) -> None:
        try:
            self.mask_and_rerun()
        except Exception as err:  # a callback's exception is otherwise only in the browser's log
            self.mask_status.value = f"<span style='color:#b00'>masked run failed: {html.escape(str(err))}</span>"
            raise

    def _pin(self) -> None:
        self.pinned = self.selected
        self.render()

    def _clear(self) -> None:
        self.pinned = []
        self.render()

    def _ipython_display_(self) -> None:  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget)
