"""Head-masking experiments: which heads to mask, accuracy under masking, and the tables built from it.

Our reconstruction of the paper's Figures 6-8 and Tables 1-3 (not available to us; see docs/paper-notes.md):

    ranking = res.ranking()                                       # detection score [layers, heads] and a note
    ks = ablation.k_grid(layers * heads)                          # 0..100 on real models, fractions on toys
    per_sample = ablation.masking_curve(model, processor, held_out, ranking.scores, ks=ks, seed=0)
    ablation.curve_table(per_sample)                              # accuracy per (model, condition, k)

Heads are ranked on one set of samples and evaluated on another that shares no sample, record or picture with it
(:func:`helpers.selection.check_disjoint`, called by :func:`run_models` and :func:`concentration_tables`).

Head sets for ``k`` heads (:func:`head_sets`), each a list of ``(layer, head)``:

- ``"top"``: the ``k`` heads with the highest visual-head score (the detection score by default,
  :meth:`helpers.results.Results.ranking`);
- ``"random"``: as many heads *per stage* as ``"top"`` has there, drawn uniformly from that stage's
  other heads with a fixed seed (the released code's random control: same stages, fixed seed);
- ``"random_layer"``: as many heads *per layer* as ``"top"`` has there, drawn from that layer's other
  heads (a stricter control: same depth);
- ``"early"`` / ``"middle"`` / ``"late"``: ``k`` heads of that stage (capped at the stage's size),
  either its ``k`` best by score (``stage_order="score"``, default) or drawn at random
  (``stage_order="random"``).

Random draws use ``numpy.random.default_rng(seed + k)``: reproducible, and drawn afresh at each ``k``
(the sets at successive ``k`` are not nested). Which of the two the paper's "late-stage heads" are is not known to us.

Masking uses :func:`helpers.capture.mask_heads` (``mode="uniform"`` by default: the masked head
attends uniformly to the keys it may see, as in the released code but keeping the causal mask), through
:func:`helpers.extract.answers`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import data, extract, metrics, results
from .models import spec_of
from .results import Ranking, Results
from .selection import check_disjoint, iter_models, rows_for

Head = tuple[int, int]
CONDITIONS = ("top", "random", "random_layer", "late")
STAGE_CONDITIONS = metrics.STAGES
REAL_KS = (0, 10, 20, 30, 50, 100)
TOY_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3)
FIXED_KS = (0, 1, 2, 4, 8, 16, 32)  # the organisms' k range, fixed before any masking ran, with 10% of all heads
FIXED_FRACTIONS = (0.1,)


# ---------------------------------------------------------------------------------------------
# Ranking and head sets


def k_grid(total_heads: int, ks: Sequence[int] = REAL_KS, fractions: Sequence[float] = TOY_FRACTIONS,
           min_heads_for_absolute: int = 512, *, union: bool = False) -> list[int]:
    """How many heads to mask at each step: sorted distinct ints in ``[0, total_heads]``.

    Models with at least ``min_heads_for_absolute`` heads (the paper's: 32x32 = 1024, 40x40 = 1600)
    use the absolute ``ks`` (up to 100, as in the paper); smaller models (toys: 6x8 = 48) use
    ``fractions`` of all their heads, rounded, so the curves cover a comparable share of the model.
    ``union=True``: every model uses both, the ``ks`` (capped at its head count) and the ``fractions``
    (the organisms' fixed range :data:`FIXED_KS` plus :data:`FIXED_FRACTIONS`).
    """
    if total_heads < 1:
        raise ValueError(f"total_heads must be positive, got {total_heads}")
    share = [round(f * total_heads) for f in fractions]
    raw = [*ks, *share] if union else ks if total_heads >= min_heads_for_absolute else share
    bad = [k for k in raw if k < 0]
    if bad:
        raise ValueError(f"negative head counts {bad}")
    return sorted({min(int(k), total_heads) for k in raw})


def random_same_stage(reference: Sequence[Head], n_layers: int, n_heads: int, seed: int = 0) -> list[Head]:
    """Random heads with the same count per stage as ``reference``; ``reference``'s own heads avoided.

    For each stage holding ``c`` heads of ``reference``, ``c`` heads are drawn without replacement
    from that stage's heads not in ``reference`` (``numpy.random.default_rng(seed)``); when the stage
    has fewer than ``c`` such heads, all of them are taken and the rest are drawn from ``reference``'s
    heads in that stage. Returns a sorted list.
    """
    rng = np.random.default_rng(seed)
    ref = set(reference)
    out: list[Head] = []
    for stage in metrics.STAGES:
        heads = metrics.stage_heads(n_layers, n_heads, stage)
        want = sum(1 for h in heads if h in ref)
        others = [h for h in heads if h not in ref]
        if want <= len(others):
            picked = [others[i] for i in rng.choice(len(others), want, replace=False)]
        else:
            own = [h for h in heads if h in ref]
            picked = others + [own[i] for i in rng.choice(len(own), want - len(others), replace=False)]
        out += picked
    return sorted(out)


def random_same_layer(reference: Sequence[Head], n_heads: int, seed: int = 0) -> list[Head]:
    """Random heads with the same count *per layer* as ``reference``, its own heads avoided where possible.

    For each layer holding ``c`` heads of ``reference``, ``c`` of that layer's other heads are drawn without
    replacement (``numpy.random.default_rng(seed)``, layers in increasing order); when fewer than ``c`` other
    heads exist, all are taken and the rest drawn from ``reference``'s heads in that layer. A stricter control
    than :func:`random_same_stage`: it also matches depth within a stage. Returns a sorted list.
    """
    rng = np.random.default_rng(seed)
    ref = sorted(set(reference))
    out: list[Head] = []
    for layer in sorted({lyr for lyr, _ in ref}):
        own = [h for lyr, h in ref if lyr == layer]
        others = [h for h in range(n_heads) if h not in own]
        if len(own) <= len(others):
            picked = [others[i] for i in rng.choice(len(others), len(own), replace=False)]
        else:
            picked = others + [own[i] for i in rng.choice(len(own), len(own) - len(others), replace=False)]
        out += [(layer, h) for h in picked]
    return sorted(out)


def stage_subset(scores: np.ndarray, stage: str, k: int, order: str = "score", seed: int = 0) -> list[Head]:
    """``k`` heads of one stage (capped at its size): its best by ``scores`` or drawn at random (``order``)."""
    n_layers, n_heads = scores.shape
    heads = metrics.stage_heads(n_layers, n_heads, stage)
    k = min(k, len(heads))
    if order == "score":
        masked = np.full(scores.shape, np.nan)
        for lyr, h in heads:
            masked[lyr, h] = -np.finfo(np.float64).max if np.isnan(scores[lyr, h]) else scores[lyr, h]
        return sorted(metrics.top_heads(masked, k))
    if order == "random":
        rng = np.random.default_rng(seed)
        return sorted(heads[i] for i in rng.choice(len(heads), k, replace=False))
    raise ValueError(f"order must be 'score' or 'random', got {order!r}")


def head_sets(scores: np.ndarray, k: int, conditions: Sequence[str] = CONDITIONS, seed: int = 0,
              stage_order: str = "score") -> dict[str, list[Head]]:
    """The heads each condition masks at ``k`` (see the module docstring); ``scores`` is ``[layers, heads]``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [layers, heads], got shape {scores.shape}")
    n_layers, n_heads = scores.shape
    top = sorted(metrics.top_heads(scores, k)) if k else []
    out: dict[str, list[Head]] = {}
    for cond in conditions:
        if cond == "top":
            out[cond] = top
        elif cond == "random":
            out[cond] = random_same_stage(top, n_layers, n_heads, seed=seed + k)
        elif cond == "random_layer":
            out[cond] = random_same_layer(top, n_heads, seed=seed + k)
        elif cond in metrics.STAGES:
            out[cond] = stage_subset(scores, cond, k, stage_order, seed=seed + k)
        else:
            raise ValueError(f"unknown condition {cond!r}; known: top, random, random_layer, "
                             f"{', '.join(metrics.STAGES)}")
    return out


# ---------------------------------------------------------------------------------------------
# Masked accuracy


def masking_curve(model: Any, processor: Any, samples: Sequence[data.Sample], scores: np.ndarray, *,
                  ks: Sequence[int], conditions: Sequence[str] = CONDITIONS, seed: int = 0, mode: str = "uniform",
                  stage_order: str = "score", batch_size: int = 16, max_new_tokens: int = 3,
                  random_draws: int = 1, means: torch.Tensor | None = None) -> pd.DataFrame:
    """Accuracy on ``samples`` as ``k`` heads are masked under each condition: one row per (condition, k, draw, sample).

    ``k = 0`` (nothing masked) is run once and shared by every condition, so all curves start at the
    unmasked accuracy. ``random_draws``: independent random same-stage (and same-layer) sets per ``k`` (draw ``d`` uses
    seed ``seed + k + 7919 * d``); :func:`curve_table` averages over them, since one draw is a noisy
    control. Columns: ``model``, ``condition``, ``k`` (asked), ``draw``, ``n_masked`` (masked, after
    capping stage conditions at the stage size), ``early`` / ``middle`` / ``late`` (masked heads per
    stage), ``heads`` (the pairs, as text), and the columns of :func:`helpers.extract.answers`. ``mode="mean"``: mean
    ablation with ``means`` (:func:`helpers.extract.reference_means`; None: computed once over ``samples``).
    """
    if mode == "mean" and means is None:
        means = extract.reference_means(model, processor, samples, batch_size=batch_size)
    if random_draws < 1:
        raise ValueError(f"random_draws must be at least 1, got {random_draws}")
    name = spec_of(model).name
    n_layers, n_heads = scores.shape
    parts = []
    cache: dict[tuple[Head, ...], pd.DataFrame] = {}
    for k in sorted(set(ks)):
        sets = head_sets(scores, k, conditions, seed, stage_order)
        jobs = [(cond, 0, heads) for cond, heads in sets.items()]
        top = head_sets(scores, k, ("top",), seed, stage_order)["top"]
        if "random" in sets:
            jobs += [("random", d, random_same_stage(top, n_layers, n_heads, seed=seed + k + 7919 * d))
                     for d in range(1, random_draws)]
        if "random_layer" in sets:
            jobs += [("random_layer", d, random_same_layer(top, n_heads, seed=seed + k + 7919 * d))
                     for d in range(1, random_draws)]
        for cond, draw, heads in jobs:
            key = tuple(heads)
            if key not in cache:
                cache[key] = extract.answers(model, processor, samples, heads=heads, mode=mode, batch_size=batch_size,
                                             max_new_tokens=max_new_tokens, means=means)
            part = cache[key].copy()
            stages = metrics.stage_distribution(heads, n_layers, normalize=False)
            part.insert(0, "model", name)
            part.insert(1, "condition", cond)
            part.insert(2, "k", k)
            part.insert(3, "draw", draw)
            part.insert(4, "n_masked", len(heads))
            for stage, count in stages.items():
                part[stage] = int(count)
            part["heads"] = " ".join(f"{lyr}.{h}" for lyr, h in heads)
            parts.append(part)
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Tables


def curve_table(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (model, condition, k) from :func:`masking_curve` rows (the mean over samples and, for the
    random control, over its draws), with sample, draw and head counts (``n_masked`` etc. of the first draw;
    and ``total_heads`` when the rows carry it, as :func:`run_models` rows do). ``read`` and ``first_word``
    (when the rows carry :func:`helpers.extract.answers`' answer form; rows saved before it do not): the share
    of answers the scorer reads an option from, and the accuracy of the first word alone."""
    group = per_sample.groupby(["model", "condition", "k"], sort=False)
    extra = {"total_heads": ("total_heads", "first")} if "total_heads" in per_sample else {}
    if {"read", "first_word_correct"} <= set(per_sample):
        extra.update(read=("read", "mean"), first_word=("first_word_correct", "mean"))
    table = group.agg(n_masked=("n_masked", "first"), early=("early", "first"), middle=("middle", "first"),
                      late=("late", "first"), accuracy=("correct", "mean"), samples=("sample_id", "nunique"),
                      **({"draws": ("draw", "nunique")} if "draw" in per_sample else {}), **extra)
    return table.reset_index()


def form_table(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Accuracy next to the answer form, per (model, condition, measure) row and ``k`` column: ``accuracy``
    (:func:`helpers.data.is_correct`), ``read`` (the scorer reads an option) and ``first_word`` (the first word
    alone is right), from :func:`curve_table`. Accuracy falling while ``first_word`` holds means the masked heads
    broke the answer format (the answer runs on), not the choice. Empty when the rows lack the answer form."""
    table = curve_table(per_sample)
    if "first_word" not in table:
        return pd.DataFrame()
    long = table.melt(id_vars=["model", "condition", "k"], value_vars=["accuracy", "read", "first_word"],
                      var_name="measure")
    return long.pivot_table(index=["model", "condition", "measure"], columns="k", values="value", sort=False)


def stage_table(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Table 2 (ours): accuracy by stage condition (rows: model, condition) and k (columns)."""
    table = curve_table(per_sample)
    table = table[table["condition"].isin(metrics.STAGES + ("top", "random"))]
    return table.pivot_table(index=["model", "condition"], columns="k", values="accuracy", sort=False)


def kind_table(per_sample: pd.DataFrame, k: int | str = "max", condition: str = "top") -> pd.DataFrame:
    """Table 3 (ours): accuracy per question kind x prompt kind, unmasked and with ``k`` heads masked.

    ``k="max"``: each model's largest ``k``. Rows: (model, question kind); columns: (setting, prompt
    kind) with setting ``"unmasked"`` and ``"{condition} k={k}"`` (``"{condition} k=max"`` for ``"max"``).
    """
    base = per_sample[per_sample["k"] == 0].drop_duplicates(["model", "sample_id"]).assign(setting="unmasked")
    masked = per_sample[per_sample["condition"] == condition]
    if k == "max":
        masked = masked[masked["k"] == masked.groupby("model")["k"].transform("max")]
    else:
        masked = masked[masked["k"] == k]
    if masked.empty:
        raise ValueError(f"no rows with condition={condition!r} and k={k}; available k: {sorted(per_sample['k'].unique())}")
    both = pd.concat([base, masked.assign(setting=f"{condition} k={k}")])
    return both.pivot_table(index=["model", "question_kind"], columns=["setting", "prompt_kind"], values="correct",
                            aggfunc="mean", sort=False)


def accuracy_table(results_list: Sequence[Results]) -> pd.DataFrame:
    """Table 1 (ours): accuracy per model (rows) and dataset (columns), with the sample count."""
    rows = [{"model": r.model_name, "dataset": r.dataset, "accuracy": r.accuracy, "samples": len(r)}
            for r in results_list]
    frame = pd.DataFrame(rows)
    return frame.pivot_table(index="model", columns="dataset", values=["accuracy", "samples"], sort=False)


def stage_distribution_table(scores: dict[str, np.ndarray], k: int | float) -> pd.DataFrame:
    """Share of each model's top visual heads in each stage, and the stage's share of all heads.

    ``scores``: model name -> ``[layers, heads]``; ``k``: a head count, or a fraction of all heads when
    below 1. One row per (model, stage): ``top`` (share of the top-k heads), ``all`` (share of all
    heads, the expectation for heads placed at random), ``k``.
    """
    rows = []
    for name, s in scores.items():
        n_layers, n_heads = s.shape
        kk = metrics.head_count(n_layers * n_heads, k)
        top = metrics.top_heads(np.asarray(s, dtype=np.float64), kk)
        dist = metrics.stage_distribution(top, n_layers)
        for stage in metrics.STAGES:
            share = len(metrics.stage_heads(n_layers, n_heads, stage)) / (n_layers * n_heads)
            rows.append({"model": name, "stage": stage, "top": dist[stage], "all": share, "k": kk})
    return pd.DataFrame(rows)


def concentration_accuracy(res: Results, heads: Sequence[Head], bins: int = 4,
                           by: Sequence[str] = ("question_kind", "prompt_kind")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concentration of the given heads vs accuracy, per sample bin and per group (our Figure 8).

    Per sample: the mean concentration (:func:`helpers.metrics.concentration`, NaN skipped) over
    ``heads``. Returns ``(binned, grouped)``: ``binned`` has one row per quantile bin of that value
    (``bins`` bins; fewer when values tie) with ``concentration`` (bin mean), ``accuracy``, ``samples``;
    ``grouped`` one row per group of ``by`` columns with the same fields. Both carry ``model``.
    """
    if not heads:
        raise ValueError("no heads given: pass e.g. the top visual heads")
    layers, hs = zip(*heads, strict=True)
    with np.errstate(invalid="ignore"):
        values = np.nanmean(res.scores["concentration"][:, list(layers), list(hs)], axis=1)
    frame = res.table[list(by)].copy() if by else pd.DataFrame(index=res.table.index)
    frame["concentration"] = values
    frame["correct"] = res.correct_mask()
    frame = frame.dropna(subset=["concentration"])
    frame["bin"] = pd.qcut(frame["concentration"].rank(method="first"), bins, labels=False) if len(frame) >= bins \
        else 0
    agg = {"concentration": ("concentration", "mean"), "accuracy": ("correct", "mean"), "samples": ("correct", "size")}
    binned = frame.groupby("bin").agg(**agg).reset_index()
    grouped = frame.groupby(list(by), sort=False).agg(**agg).reset_index() if by else binned.iloc[:0]
    binned.insert(0, "model", res.model_name)
    grouped.insert(0, "model", res.model_name)
    return binned, grouped


def sample_score(res: Results, score: str = "concentration") -> np.ndarray:
    """Per sample, one value of ``score`` over all heads: ``[samples]``.

    For the scores measured on the attention renormalised over the image
    (:data:`helpers.metrics.WEIGHTED_SCORES`: concentration, effective tokens) the mean over heads weighted by
    each head's image weight ``W`` on that sample (a head that barely looks at the image barely counts, as in
    :meth:`Results.per_head`); for the others the plain mean over heads. NaN heads skipped; NaN when none counts.
    """
    values = torch.from_numpy(res.scores[score].reshape(len(res), -1)).double()
    if score in metrics.WEIGHTED_SCORES and "weight" in res.scores:
        weights = torch.from_numpy(res.scores["weight"].reshape(len(res), -1)).double()
        return metrics.weighted_mean(values.T, weights.T).numpy()
    return values.nanmean(1).numpy()


def split_accuracy(results_list: Sequence[Results], score: str = "concentration") -> dict[str, float | int]:
    """Accuracy of the samples above vs at or below the median of :func:`sample_score`, pooled over results.

    Each result (one data set of one model) is split at its own median, so that data sets of different
    difficulty do not stand in for the score; the counts are then pooled. Samples whose score is NaN are left
    out. Returns ``high_correct``, ``high_n``, ``low_correct``, ``low_n``, and ``diff`` (accuracy above minus
    at or below the median) with its 95% interval ``diff_low``, ``diff_high``
    (:func:`helpers.metrics.difference_interval`). The interval treats samples as independent; the six samples
    of a counting record share one image, so on ``scenes-count`` it is somewhat too narrow.
    """
    counts = {"high_correct": 0, "high_n": 0, "low_correct": 0, "low_n": 0}
    for res in results_list:
        values, correct = sample_score(res, score), res.correct_mask()
        ok = ~np.isnan(values)
        if not ok.any():
            continue
        high = values > np.median(values[ok])
        for part, mask in (("high", ok & high), ("low", ok & ~high)):
            counts[f"{part}_correct"] += int(correct[mask].sum())
            counts[f"{part}_n"] += int(mask.sum())
    diff, low, high = metrics.difference_interval(counts["high_correct"], counts["high_n"], counts["low_correct"],
                                                  counts["low_n"])
    return {**counts, "diff": diff, "diff_low": low, "diff_high": high}


# ---------------------------------------------------------------------------------------------
# The whole experiment over several models


def _ties_text(scores: np.ndarray, ks: Sequence[int]) -> str:
    """How many heads tie at the cut-off of each ``k`` (:func:`helpers.metrics.ranking_ties`), for the printed notes."""
    scores = np.asarray(scores, dtype=np.float64)
    parts = [f"{metrics.ranking_ties(scores, 1)['tied_first']} share the best score"]
    for k in ks:
        tie = metrics.ranking_ties(scores, int(k)) if k else None
        if tie and tie["tied"] > tie["tied_in_top"]:
            parts.append(f"k={k}: {tie['tied']} tie at the cut-off, {tie['tied_in_top']} taken (seeded random)")
    return "; ".join(parts)


def run_models(model_names: Sequence[str | None], rank_samples: Sequence[data.Sample], *,
               eval_samples: Sequence[data.Sample], ks: Sequence[int] = REAL_KS,
               fractions: Sequence[float] = TOY_FRACTIONS, conditions: Sequence[str] = CONDITIONS,
               seed: int = 0, mode: str = "uniform", stage_order: str = "score", batch_size: int = 16,
               max_new_tokens: int = 3, saved: Sequence[Results] = (), device: str | None = None,
               min_correct: int = 8, dataset: str = "ranking", rows: str | None = None, random_draws: int = 1,
               k_union: bool = False) -> tuple[pd.DataFrame, dict[str, Ranking], dict[str, Results]]:
    """For each model in turn: rank heads on ``rank_samples``, mask on the held-out ``eval_samples``.

    Before any model is loaded, ``rank_samples`` and every ``saved`` result are checked against ``eval_samples``
    (:func:`helpers.selection.check_disjoint`: no shared sample, record or picture; :class:`helpers.selection.
    OverlapError` otherwise). The ranking comes from ``saved`` results of the same model name when given (e.g. a
    GPU sweep read with :func:`helpers.runs.load_saved`), else from :func:`helpers.extract.head_results` on
    ``rank_samples``. ``k`` values: :func:`k_grid` of the model's head count. Returns ``(per_sample, rankings,
    held_out)``: :func:`masking_curve` rows of all models; name -> :class:`helpers.results.Ranking`; name -> the
    unmasked per-head results on ``eval_samples`` (same attention row as the ranking), from which
    :func:`concentration_tables` draws Figure 8. ``dataset`` labels the ranking results (tables); ``rows``: the
    attention row the ranking is computed from (:func:`helpers.selection.rows_for`; ``None`` picks by model).
    ``random_draws``: random control sets per ``k``, averaged (:func:`masking_curve`). ``k_union``: every model
    is masked at ``ks`` and at ``fractions`` of its heads (:func:`k_grid` ``union``).
    """
    check_disjoint(rank_samples, eval_samples, what="run_models: rank_samples vs eval_samples")
    for res in saved:
        check_disjoint(res, eval_samples, what=f"run_models: saved results of {res.model_name} on {res.dataset} vs "
                                               "eval_samples")
    saved_by_name = {r.model_name: r for r in saved}
    parts, rankings, held_out = [], {}, {}
    for model, processor in iter_models(model_names, device):
        spec = spec_of(model)
        res = saved_by_name.get(spec.name)
        if res is None:
            res = extract.head_results(model, processor, rank_samples, batch_size=batch_size, dataset=dataset,
                                       rows=rows_for(model, rows))
        ranking = res.ranking(min_correct)
        total = ranking.scores.size  # the model's own head count (a spec may describe the full-size geometry)
        grid = k_grid(total, ks, fractions, union=k_union)
        print(f"{spec.name}: ranking accuracy {res.accuracy:.1%} on {len(res)} samples (rows="
              f"{res.settings.get('rows')!r}); heads ranked by {ranking.note}; "
              f"masking k = {grid} of {total} heads on {len(eval_samples)} held-out samples; "
              f"ties: {_ties_text(ranking.scores, grid)}")
        held_out[spec.name] = extract.head_results(model, processor, eval_samples, batch_size=batch_size,
                                                   dataset=f"{dataset} held-out",
                                                   rows=res.settings.get("rows") or rows_for(model, rows))
        part = masking_curve(model, processor, eval_samples, ranking.scores, ks=grid, conditions=conditions,
                             seed=seed, mode=mode, stage_order=stage_order, batch_size=batch_size,
                             max_new_tokens=max_new_tokens, random_draws=random_draws)
        part["total_heads"] = total
        parts.append(part)
        rankings[spec.name] = ranking
    return pd.concat(parts, ignore_index=True), rankings, held_out


RANKING_FOLDER = "ranking"
HELD_OUT_FOLDER = "held_out"
PER_SAMPLE_FILE = "masking_per_sample.parquet"


def save(per_sample: pd.DataFrame, rankings: dict[str, Ranking], folder: str | Path, *,
         held_out: Mapping[str, Results] | None = None) -> Path:
    """Write a masking experiment (:func:`run_models` output) to ``folder``: the per-sample rows, each
    model's ranking results (``ranking/{i}.parquet``, :func:`helpers.results.write`) and its held-out results
    (``held_out/{i}.parquet``). Returns the folder."""
    folder = Path(folder)
    (folder / RANKING_FOLDER).mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{PER_SAMPLE_FILE}.tmp"
    per_sample.to_parquet(tmp, index=False)
    tmp.replace(folder / PER_SAMPLE_FILE)
    for i, ranking in enumerate(rankings.values()):
        results.write(ranking.results, folder / RANKING_FOLDER / f"{i:03d}.parquet")
    for i, res in enumerate((held_out or {}).values()):
        results.write(res, folder / HELD_OUT_FOLDER / f"{i:03d}.parquet")
    return folder


def load(folder: str | Path, min_correct: int = 8) -> tuple[pd.DataFrame, dict[str, Ranking], dict[str, Results]]:
    """Read what :func:`save` wrote: ``(per_sample, rankings, held_out)``, the scores re-derived from the ranking
    results. A folder written before held-out results were saved gives ``held_out = {}``, with a warning."""
    folder = Path(folder).expanduser()
    path = folder / PER_SAMPLE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: point to a folder written by ablation.save (notebook 08 writes "
                                "one under the figure folder)")
    rankings = {}
    for part in sorted((folder / RANKING_FOLDER).glob("*.parquet")):
        res = results.read(part)
        rankings[res.model_name] = res.ranking(min_correct)
    held_out = {res.model_name: res for res in map(results.read, sorted((folder / HELD_OUT_FOLDER).glob("*.parquet")))}
    if rankings and not held_out:
        warnings.warn(f"{folder} holds no held-out results ({HELD_OUT_FOLDER}/, written since Figure 8 is measured "
                      "on the held-out samples): rerun the experiment to draw Figure 8", UserWarning, stacklevel=2)
    return pd.read_parquet(path), rankings, held_out


def concentration_tables(rankings: dict[str, Ranking], held_out: Mapping[str, Results], *, k: int | float = 0.1,
                         bins: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 8: :func:`concentration_accuracy` of every model's top-``k`` visual heads (:func:`helpers.metrics.
    head_count`), the heads chosen on its ranking (``rankings``, :func:`run_models`) and their concentration and
    the accuracy measured on its held-out results (``held_out[name]``, :func:`run_models`' third output), which
    must share no sample, record or picture with the ranking results (:func:`helpers.selection.check_disjoint`).
    Returns the binned and the grouped rows of all models, concatenated."""
    binned, grouped = [], []
    for name, ranking in rankings.items():
        if name not in held_out:
            raise ValueError(f"no held-out results for model {name!r} (held_out has {sorted(held_out)}): Figure 8 is "
                             "measured on the held-out samples; pass run_models' third output (or ablation.load's)")
        check_disjoint(ranking.results, held_out[name], what=f"Figure 8 ({name}): ranking vs held-out results")
        scores = np.asarray(ranking.scores, dtype=np.float64)
        heads = metrics.top_heads(scores, metrics.head_count(scores.size, k))
        b, g = concentration_accuracy(held_out[name], heads, bins)
        binned.append(b)
        grouped.append(g)
    return pd.concat(binned, ignore_index=True), pd.concat(grouped, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Which task set to mask on


@dataclass(frozen=True)
class MaskingTask:
    """The task set a model is masked on, and why: ``task`` (None: not masked), ``accuracy`` and its 95%
    interval ``low``/``high`` where it comes from a model card, ``chance``, and ``reason``."""

    model: str
    task: str | None
    accuracy: float
    low: float
    high: float
    chance: float
    reason: str


def masking_task(model: str, card: Mapping[str, Mapping[str, Any]] | None, *, fallback: str | None = None
                 ) -> MaskingTask:
    """The rule, fixed before any organism was masked: mask where the model does the task.

    ``card``: the model card's held-out accuracies per task set (``{task: {"accuracy", "ci95", "chance"}}``,
    an organism's ``card.json["scene"]``, measured on scenes of a seed no notebook uses). Among the task sets
    whose 95% interval lies above chance, the one with the largest margin (interval low end minus chance) is
    chosen; with none, the model is not masked (masking cannot lower an accuracy that is at chance). Without a
    card (the paper's models on a GPU), ``fallback`` is used as given.
    """
    if card is None:
        return MaskingTask(model, fallback, float("nan"), float("nan"), float("nan"), float("nan"),
                           "no model card: the notebook's EVAL_DATASET" if fallback else "no model card, no fallback")
    above = {t: v for t, v in card.items() if v["ci95"][0] > v["chance"]}
    if not above:
        best = max(card, key=lambda t: card[t]["ci95"][0] - card[t]["chance"])
        v = card[best]
        return MaskingTask(model, None, v["accuracy"], v["ci95"][0], v["ci95"][1], v["chance"],
                           "not masked: at chance on every task set (card)")
    task = max(above, key=lambda t: above[t]["ci95"][0] - above[t]["chance"])
    v = above[task]
    return MaskingTask(model, task, v["accuracy"], v["ci95"][0], v["ci95"][1], v["chance"],
                       "above chance on its card, by the largest margin")


def masking_task_table(choices: Sequence[MaskingTask]) -> pd.DataFrame:
    """One row per model: the task set it is masked on (or none) and the card numbers behind the choice."""
    return pd.DataFrame([asdict(c) for c in choices])
