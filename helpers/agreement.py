"""How much per-head score maps agree: across models (Figure 4) and across data sets (Figure 5).

    maps = {r.model_name: r.detection_score() for r in results}          # each [layers, heads]
    pairs = agreement.pairs(maps, families, k=10)                           # one row per pair of maps
    agreement.matrix(pairs, "pearson")                                      # square, for a heatmap

Maps of equal shape are compared head by head (:func:`helpers.metrics.pearson`, ``spearman``,
``topk_jaccard`` of the flattened ``[layers, heads]`` maps). Maps of different shape (a 32-layer and
a 40-layer model) cannot be: they are compared by their per-layer profiles on normalised depth
(:func:`helpers.metrics.profile_correlation`), and the ``basis`` column says which comparison a row is.
The split-half reliability (:func:`split_half`) is how well a model's full-sample map is measured: the
correlation ``r_half`` of the maps of two disjoint halves of its samples, stepped up to the full sample size
with the Spearman-Brown formula ``rel = 2 r_half / (1 + r_half)`` (:func:`spearman_brown`; ``r_half`` alone
is the reliability of a *half*-size map and understates it). Two models whose true maps were identical
would still correlate only up to ``sqrt(rel_a * rel_b)`` (:func:`noise_ceiling`), the ceiling of the
``ceiling`` column of :func:`model_matrices`' pair rows.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from . import metrics
from .results import Results

METRICS = ("pearson", "spearman", "jaccard")


def compare(a: np.ndarray, b: np.ndarray, k: int | float = 0.1, points: int = 20) -> dict[str, float | str]:
    """Agreement of two ``[layers, heads]`` maps.

    Equal shapes: ``pearson``, ``spearman`` (flattened maps, NaN pairs dropped) and ``jaccard`` of the
    top-``k`` heads (``k`` below 1: a fraction of all heads, :func:`helpers.metrics.head_count`), ``basis="heads"``. Different shapes: Pearson
    and Spearman correlation of the depth profiles (mean over heads per layer, ``points`` depths),
    ``jaccard`` NaN, ``basis="depth profile"``.
    """
    ta, tb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if ta.ndim != 2 or tb.ndim != 2:
        raise ValueError(f"maps must be [layers, heads], got shapes {tuple(ta.shape)} and {tuple(tb.shape)}")
    if ta.shape == tb.shape:
        kk = metrics.head_count(ta.size, k)
        return {"pearson": metrics.pearson(ta, tb), "spearman": metrics.spearman(ta, tb),
                "jaccard": metrics.topk_jaccard(ta, tb, kk), "basis": "heads"}
    return {"pearson": metrics.profile_correlation(ta, tb, points),
            "spearman": metrics.profile_correlation(ta, tb, points, method="spearman"),
            "jaccard": float("nan"), "basis": "depth profile"}


def pairs(maps: Mapping[str, np.ndarray], families: Mapping[str, str] | None = None, k: int | float = 0.1,
          points: int = 20) -> pd.DataFrame:
    """One row per unordered pair of maps: ``a``, ``b``, ``same_family``, :func:`compare`'s fields.

    ``families``: name -> family (missing names count as their own family).
    """
    families = families or {}
    rows = []
    for a, b in itertools.combinations(maps, 2):
        fa, fb = families.get(a, a), families.get(b, b)
        rows.append({"a": a, "b": b, "family_a": fa, "family_b": fb, "same_family": fa == fb,
                     **compare(maps[a], maps[b], k, points)})
    return pd.DataFrame(rows, columns=["a", "b", "family_a", "family_b", "same_family", *METRICS, "basis"])


def matrix(pair_rows: pd.DataFrame, metric: str = "pearson", names: Sequence[str] | None = None,
           diagonal: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Square symmetric table of ``metric`` from :func:`pairs` rows; the diagonal is ``diagonal[name]``
    (e.g. split-half reliability) or 1."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    names = list(names) if names is not None else list(dict.fromkeys([*pair_rows["a"], *pair_rows["b"]]))
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for row in pair_rows.itertuples():
        if row.a in out.index and row.b in out.index:
            out.loc[row.a, row.b] = out.loc[row.b, row.a] = getattr(row, metric)
    for name in names:
        out.loc[name, name] = (diagonal or {}).get(name, 1.0)
    return out


def family_summary(pair_rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and count of each agreement metric within and across families."""
    frame = pair_rows.assign(pair=np.where(pair_rows["same_family"], "within family", "across families"))
    return frame.groupby("pair")[list(METRICS)].agg(["mean", "count"])


def spearman_brown(r: float, factor: float = 2.0) -> float:
    """The Spearman-Brown prophecy ``factor r / (1 + (factor - 1) r)``: the reliability of a measure ``factor``
    times as long (here: a map from twice the samples of the half maps that correlate ``r``). NaN stays NaN;
    ``r <= -1/(factor-1)`` gives NaN."""
    if r is None or not np.isfinite(r):
        return float("nan")
    den = 1 + (factor - 1) * r
    return float(factor * r / den) if den > 0 else float("nan")


def noise_ceiling(rel_a: float, rel_b: float) -> float:
    """The highest correlation two maps measured with reliabilities ``rel_a`` and ``rel_b`` can reach when their
    true maps are identical: ``sqrt(rel_a * rel_b)`` (NaN unless both are finite and positive)."""
    if not (np.isfinite(rel_a) and np.isfinite(rel_b)) or rel_a <= 0 or rel_b <= 0:
        return float("nan")
    return float(np.sqrt(rel_a * rel_b))


def split_half(res: Results, score: str = "region_hits", only_correct: bool = True, seed: int = 0,
               k: int | float = 0.1) -> dict[str, float | str]:
    """Split-half reliability of the per-head map of ``score``: two random disjoint halves of the samples.

    ``only_correct``: average over correctly answered samples only (as the detection score does), falling
    back to all samples when fewer than 4 are correct. Returns :func:`compare`'s fields for the two *half*
    maps (``pearson``, ``spearman``, ``jaccard``: half against half), ``reliability`` and
    ``spearman_reliability`` (the Pearson / Spearman ``r`` stepped up to the full sample size with
    :func:`spearman_brown`: the reliability of the full-sample map), and ``samples``.
    """
    values = res.scores[score]
    use = res.correct_mask() if only_correct and res.correct_mask().sum() >= 4 else np.ones(len(res), bool)
    idx = np.flatnonzero(use)
    if len(idx) < 2:
        raise ValueError(f"{res.model_name} on {res.dataset}: need at least 2 samples for a split half, got {len(idx)}")
    idx = np.random.default_rng(seed).permutation(idx)
    with warnings.catch_warnings():  # all-NaN heads (never a correct boxed sample) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        a = np.nanmean(values[idx[: len(idx) // 2]], axis=0)
        b = np.nanmean(values[idx[len(idx) // 2:]], axis=0)
    out = compare(a, b, k)
    return {**out, "reliability": spearman_brown(out["pearson"]),
            "spearman_reliability": spearman_brown(out["spearman"]), "samples": int(len(idx))}


def across_datasets(results_list: Sequence[Results], score: str = "weight", k: int | float = 0.1
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How one model's per-head ``score`` changes from data set to data set (Figure 5).

    ``results_list``: results of one model, one per data set (``res.dataset`` labels). Returns
    ``(pair_rows, per_dataset)``: :func:`pairs` of the per-head mean maps across data sets, and one row per
    data set with the mean ``score`` over all heads and samples (``mean``), its spread over heads
    (``head_std``) and the accuracy.
    """
    names = [r.model_name for r in results_list]
    if len(set(names)) > 1:
        raise ValueError(f"across_datasets takes results of one model, got {sorted(set(names))}")
    maps = {r.dataset: r.per_head(score) for r in results_list}
    if len(maps) != len(results_list):
        raise ValueError("two results share a data set label; give each a distinct res.settings['dataset']")
    rows = [{"model": r.model_name, "dataset": r.dataset, "mean": float(np.nanmean(maps[r.dataset])),
             "head_std": float(np.nanstd(maps[r.dataset])), "accuracy": r.accuracy, "samples": len(r)}
            for r in results_list]
    return pairs(maps, k=k), pd.DataFrame(rows)


def head_variation(results_list: Sequence[Results], score: str = "weight") -> np.ndarray:
    """Coefficient of variation across data sets of each head's mean ``score``: ``[layers, heads]``.

    ``std / mean`` over the data sets' per-head means (population std); NaN where the mean is 0.
    """
    stack = np.stack([r.per_head(score) for r in results_list])
    mean = stack.mean(0)
    return np.where(mean > 0, stack.std(0) / np.where(mean > 0, mean, 1), np.nan)


def score_maps(results_list: Sequence[Results], score: str = "detection", min_correct: int = 8
               ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """One ``[layers, heads]`` map per result, keyed by model name (``"{model} · {dataset}"`` when a model repeats).

    ``score="detection"``: the detection score (:meth:`helpers.results.Results.ranking`, with its
    fallback to all boxed samples when fewer than ``min_correct`` are correct); any other name: the
    per-head mean of that score over all samples. Returns ``(maps, notes)``, notes saying what each map is.
    """
    names = [r.model_name for r in results_list]
    maps, notes = {}, {}
    for r in results_list:
        key = r.model_name if names.count(r.model_name) == 1 else f"{r.model_name} · {r.dataset}"
        if score == "detection":
            ranking = r.ranking(min_correct, then=None)  # the detection map itself, ties left as they are
            maps[key], notes[key] = ranking.scores, ranking.note
        else:
            maps[key], notes[key] = r.per_head(score), f"mean {score} over {len(r)} samples"
    return maps, notes


def consistency_summary(results_by_model: Mapping[str, Sequence[Results]], score: str = "weight", *,
                        seed: int = 0) -> pd.DataFrame:
    """Per model: how consistent per-head ``score`` is across its data sets (Figure 5's numbers).

    Columns: ``datasets``; ``r across datasets`` (mean Pearson r of the per-head maps over data-set pairs);
    ``r split-half`` (mean over data sets of the split-half reliability within a data set, Spearman-Brown
    corrected, :func:`split_half`; the ceiling a perfectly consistent model reaches across data sets is
    about this value);
    ``variation`` (mean over heads of :func:`head_variation`); ``mean score`` per data set, min and max.
    """
    rows = []
    for name, res_list in results_by_model.items():
        pair_rows, per = across_datasets(res_list, score)
        halves = [split_half(r, score, only_correct=False, seed=seed)["reliability"] for r in res_list
                  if len(r) >= 4]
        rows.append({"model": name, "datasets": len(res_list),
                     "r across datasets": float(pair_rows["pearson"].mean()) if len(pair_rows) else float("nan"),
                     "r split-half": float(np.nanmean(halves)) if halves else float("nan"),
                     "variation": float(np.nanmean(head_variation(res_list, score))),
                     "mean score min": float(per["mean"].min()), "mean score max": float(per["mean"].max())})
    return pd.DataFrame(rows)


def model_matrices(results_list: Sequence[Results], scores: Sequence[str] = ("detection", "weight"), *,
                   families: Mapping[str, str] | None = None, k: int | float = 0.1, min_correct: int = 8,
                   seed: int = 0) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict[str, str]]:
    """Figure 4's numbers: model x model agreement of each score's per-head map.

    For each score (``"detection"`` or a score name, :func:`score_maps`): the Pearson matrix and the
    top-``k`` Jaccard matrix. Off the diagonal: the two models' full-sample maps. On the diagonal (said in each
    matrix's ``attrs["diagonal"]``, which :func:`helpers.plots.agreement_matrices` prints): the Pearson matrix
    holds the model's split-half reliability (Spearman-Brown corrected, :func:`split_half`), the ceiling of a
    model with itself; the Jaccard matrix holds the top-``k`` Jaccard of the model's two *half-sample* maps
    (how stable its top heads are under resampling; a map against itself is 1). Models are ordered by family,
    then name. Returns ``(matrices, pair_rows, notes)``: ``"{score}: pearson"`` / ``"{score}: top-k jaccard"``
    -> square DataFrame; all :func:`pairs` rows with ``score``, ``reliability_a`` / ``reliability_b`` and
    ``ceiling`` (:func:`noise_ceiling`) columns; and ``"{score} · {model}"`` -> what the map is.
    """
    families = dict(families or {})
    matrices, all_rows, all_notes = {}, [], {}
    labels = {"pearson": "split-half reliability (Spearman-Brown corrected)",
              "jaccard": "top-k Jaccard of two half-sample maps (split-half; a map against itself is 1)"}
    for score in scores:
        maps, notes = score_maps(results_list, score, min_correct)
        order = sorted(maps, key=lambda n: (families.get(n.split(" · ")[0], n), n))
        fam = {n: families.get(n.split(" · ")[0], n) for n in maps}
        rows = pairs({n: maps[n] for n in order}, fam, k).assign(score=score)
        values = "region_hits" if score == "detection" else score
        halves = {}
        for n, r in zip(maps, results_list, strict=True):
            try:
                halves[n] = split_half(r, values, only_correct=score == "detection", seed=seed, k=k)
            except ValueError:
                halves[n] = {"reliability": float("nan"), "jaccard": float("nan")}
        rel = {n: float(h["reliability"]) for n, h in halves.items()}
        rows = rows.assign(reliability_a=rows["a"].map(rel), reliability_b=rows["b"].map(rel))
        rows["ceiling"] = [noise_ceiling(x, y) for x, y in zip(rows["reliability_a"], rows["reliability_b"],
                                                                strict=True)]
        for metric, label, key in (("pearson", "pearson", "reliability"), ("jaccard", "top-k jaccard", "jaccard")):
            diag = {n: float(h[key]) for n, h in halves.items()}
            mat = matrix(rows, metric, order, diagonal=diag)
            mat.attrs["diagonal"] = labels[metric]
            matrices[f"{score}: {label}"] = mat
        all_rows.append(rows)
        all_notes.update({f"{score} · {n}": note for n, note in notes.items()})
    return matrices, pd.concat(all_rows, ignore_index=True), all_notes


def dataset_consistency(results_by_model: Mapping[str, Sequence[Results]], score: str = "weight", seed: int = 0
                        ) -> dict[str, dict]:
    """Figure 5's numbers, per model: what :func:`helpers.plots.dataset_consistency` draws.

    ``{model: {"profiles": {dataset: (layer profile [layers], accuracy)}, "matrix": DataFrame, "variation":
    [layers, heads]}}``: the layer profile (mean over heads) of ``score`` on each data set; the data set x data
    set Pearson correlation of the per-head maps (:func:`across_datasets`), the split-half reliability within a
    data set on the diagonal (:func:`split_half`'s Spearman-Brown ``reliability``, the ceiling set by sampling
    noise; data sets of at least 4 samples); the coefficient of variation of each head across data sets (:func:`head_variation`).
    """
    out = {}
    for name, res_list in results_by_model.items():
        pair_rows, _ = across_datasets(res_list, score)
        labels = [r.dataset for r in res_list]
        halves = {r.dataset: split_half(r, score, only_correct=False, seed=seed)["reliability"] for r in res_list
                  if len(r) >= 4}
        out[name] = {"profiles": {r.dataset: (np.nanmean(r.per_head(score), axis=1), r.accuracy) for r in res_list},
                     "matrix": matrix(pair_rows, "pearson", labels, diagonal=halves),
                     "variation": head_variation(res_list, score), "score": score}
    return out


# ---------------------------------------------------------------------------------------------
# Conditions within one model (Figure 3)


def difference_maps(maps: Mapping[str, Mapping[str, np.ndarray]], pairs: Sequence[tuple[str, str]]
                    ) -> dict[str, dict[str, np.ndarray]]:
    """``{"a - b": {label: maps[a][label] - maps[b][label]}}`` for each ``(a, b)`` in ``pairs`` present in ``maps``
    (``maps`` from :meth:`helpers.results.Results.condition_maps`)."""
    out = {}
    for a, b in pairs:
        if a in maps and b in maps:
            out[f"{a} - {b}"] = {label: maps[a][label] - maps[b][label] for label in maps[a] if label in maps[b]}
    return out


def describe_conditions(maps: Mapping[str, Mapping[str, np.ndarray]], pairs: Sequence[tuple[str, str]],
                        top: int = 3) -> pd.DataFrame:
    """One row per condition pair and score: mean of each map, their difference, Pearson r and the top heads.

    Printed under Figure 3 so that its reading rests on numbers of the model that ran.
    """
    rows = []
    for a, b in pairs:
        if a not in maps or b not in maps:
            continue
        for label in maps[a]:
            if label not in maps[b]:
                continue
            ma, mb = maps[a][label], maps[b][label]
            top_a = metrics.top_heads(np.asarray(ma, dtype=np.float64), top)
            top_b = metrics.top_heads(np.asarray(mb, dtype=np.float64), top)
            rows.append({"pair": f"{a} vs {b}", "score": label, "mean a": float(np.nanmean(ma)),
                         "mean b": float(np.nanmean(mb)), "a - b": float(np.nanmean(ma - mb)),
                         "pearson": compare(ma, mb)["pearson"],
                         "top heads a": " ".join(f"{lyr}.{h}" for lyr, h in top_a),
                         "top heads b": " ".join(f"{lyr}.{h}" for lyr, h in top_b)})
    return pd.DataFrame(rows)


def score_correlation(res: Results, a: str, b: str, *, n_boot: int = 200, seed: int = 0,
                      min_records: int = 8) -> dict[str, float | int]:
    """Spearman correlation across heads of the per-head maps of scores ``a`` and ``b`` of one result, with a
    95% bootstrap interval over samples (Figure 1: do the heads that score high on ``a`` also score high on
    ``b``?).

    Maps: :meth:`Results.per_head` with its defaults over all samples (``W``-weighted for concentration and
    effective tokens; ``region_hits`` averaged over the boxed samples, correct or not: a choice, so that a
    model that answers few counts right still has a map). Interval: percentiles 2.5 / 97.5 of the correlation
    over ``n_boot`` resamples of the records with replacement (``numpy.random.default_rng(seed)``): a
    PointQA-style record (sample ids ``"{record}:{question kind}:{prompt kind}"``) is resampled whole, since its
    samples share the image; other samples are their own record. Heads are not resampled, so the interval
    measures sampling noise, not how general the relation is over heads. Resampling repeats samples, which makes
    the per-head maps noisier and pulls the resampled correlations towards 0: the interval is conservative
    (wider on the side of 0). With fewer than ``min_records`` records a bootstrap says nothing (two records give
    three distinct resamples): the interval is NaN. Returns ``rho``, ``low``, ``high``, ``heads`` (heads with both scores defined),
    ``samples`` and ``records``.
    """
    missing = [s for s in (a, b) if s not in res.scores]
    if missing:
        raise KeyError(f"{res.model_name} on {res.dataset}: no score {missing}; scores: {sorted(res.scores)}")
    keep = [s for s in {a, b, "weight"} if s in res.scores]

    def rho(idx: np.ndarray | slice) -> float:
        part = Results(res.table.iloc[idx].reset_index(drop=True), {s: res.scores[s][idx] for s in keep},
                       res.settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return metrics.spearman(part.per_head(a), part.per_head(b))

    full_a, full_b = res.per_head(a), res.per_head(b)
    heads = int((~(np.isnan(full_a) | np.isnan(full_b))).sum())
    record = res.table["sample_id"].astype(str).str.split(":").str[0].to_numpy()
    members = [np.flatnonzero(record == r) for r in dict.fromkeys(record)]
    rng = np.random.default_rng(seed)
    boot = np.array([rho(np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))]))
                     for _ in range(n_boot if len(members) >= max(min_records, 2) else 0)], dtype=float)
    boot = boot[~np.isnan(boot)]
    low, high = (np.percentile(boot, [2.5, 97.5]) if len(boot) else (float("nan"), float("nan")))
    return {"rho": rho(slice(None)), "low": float(low), "high": float(high), "heads": heads, "samples": len(res),
            "records": len(members)}


# ---------------------------------------------------------------------------------------------
# Agreement judged against sampling noise (Figures 3, 4, 5 of the organisms' notebooks)

BASES = ("heads", "depth profile")
MIN_UNITS = 4  # fewer units (records, samples) than this: map_agreement gives no interval


def _mean_map(values: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
    """NaN-aware mean over samples of ``values [samples, layers, heads]`` (rows ``idx``): ``[layers, heads]``."""
    part = values if idx is None else values[idx]
    if len(part) and not np.isnan(part).any():
        return part.mean(axis=0)
    with warnings.catch_warnings():  # a head with no counted sample stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(part, axis=0)


def _r(a: np.ndarray, b: np.ndarray, basis: str, points: int) -> float:
    """Pearson r of two maps on ``basis``: flattened heads (:func:`helpers.metrics.pearson`), or depth profiles
    (:func:`helpers.metrics.profile_correlation`); NaN pairs dropped."""
    if basis == "depth profile":
        a, b = _depth_profile(a, points), _depth_profile(b, points)
    elif basis != "heads":
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    # metrics.pearson / metrics.profile_correlation in NumPy: this runs thousands of times per comparison
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape {a.shape} vs {b.shape}: compare them on depth profiles")
    x, y = a.ravel(), b.ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return float("nan")
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    den = float(np.sqrt((x @ x) * (y @ y)))
    return float(x @ y / den) if den > 0 else float("nan")


def _depth_profile(m: np.ndarray, points: int) -> np.ndarray:
    """:func:`helpers.metrics.depth_profile` (mean over heads) in NumPy: ``[points]``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prof = np.nanmean(m, axis=1)
    n = len(prof)
    pos = np.clip(np.linspace(0, 1, points) * n - 0.5, 0, n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    return prof[lo] * (1 - frac) + prof[hi] * frac


def sample_values(res: Results, score: str, *, min_correct: int = 8) -> np.ndarray:
    """The per-sample values whose mean is the map of ``score``: float64 ``[samples, layers, heads]``.

    ``score="detection"``: ``region_hits`` with the rows of incorrectly answered samples set to NaN (the detection
    score, :meth:`helpers.results.Results.ranking`), or of every sample when fewer than ``min_correct`` boxed
    samples are correct (the ranking's fallback). Any other name: that score of every sample.
    """
    if score != "detection":
        return np.asarray(res.scores[score], dtype=np.float64)
    values = np.asarray(res.scores["region_hits"], dtype=np.float64).copy()
    boxed = ~np.isnan(values).all(axis=(1, 2))
    correct = res.correct_mask()
    if int((boxed & correct).sum()) >= min_correct:
        values[~correct] = np.nan
    return values


def reliability(values: np.ndarray, basis: str = "heads", *, splits: int = 20, seed: int = 0,
                points: int = 20) -> float:
    """Split-half reliability of the mean map of ``values [samples, layers, heads]`` on ``basis``.

    For each of ``splits`` random halvings of the samples: Pearson r of the two half maps (``"heads"``: flattened
    maps; ``"depth profile"``: their depth profiles, :func:`helpers.metrics.profile_correlation`); the mean r over
    halvings, stepped up to the full sample size with :func:`spearman_brown`. Averaging over halvings is our
    choice (one halving, :func:`split_half`, is itself noisy at a few dozen samples). NaN below 4 samples.
    """
    n = len(values)
    if n < 4:
        return float("nan")
    rng = np.random.default_rng(seed)
    rs = []
    for _ in range(splits):
        order = rng.permutation(n)
        rs.append(_r(_mean_map(values, order[: n // 2]), _mean_map(values, order[n // 2:]), basis, points))
    return spearman_brown(float(np.nanmean(rs)) if np.isfinite(rs).any() else float("nan"))


def _groups(units: Sequence[object] | None, n: int) -> dict[object, np.ndarray]:
    """Unit label -> the sample rows it holds (each sample its own unit when ``units`` is None)."""
    labels = list(range(n)) if units is None else list(units)
    if len(labels) != n:
        raise ValueError(f"need one unit label per sample: {len(labels)} labels for {n} samples")
    out: dict[object, list[int]] = {}
    for i, u in enumerate(labels):
        out.setdefault(u, []).append(i)
    return {u: np.asarray(rows) for u, rows in out.items()}


def _rows(draw: Sequence[object], groups: Mapping[object, np.ndarray]) -> np.ndarray:
    parts = [groups[u] for u in draw if u in groups]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=int)


def _cross_half(va: np.ndarray, vb: np.ndarray, ga: Mapping, gb: Mapping, draw_a: np.ndarray, draw_b: np.ndarray,
                paired: bool, rng: np.random.Generator, splits: int, basis: str, points: int
                ) -> tuple[float, float, float]:
    """Mean over ``splits`` halvings of the units: ``(within a, within b, cross)`` half-map correlations."""
    wa, wb, cross = [], [], []
    for _ in range(splits):
        pa = rng.permutation(draw_a)
        ha = (pa[: len(pa) // 2], pa[len(pa) // 2:])
        if paired:
            hb = ha
        else:
            pb = rng.permutation(draw_b)
            hb = (pb[: len(pb) // 2], pb[len(pb) // 2:])
        a1, a2 = (_mean_map(va, _rows(h, ga)) for h in ha)
        b1, b2 = (_mean_map(vb, _rows(h, gb)) for h in hb)
        wa.append(_r(a1, a2, basis, points))
        wb.append(_r(b1, b2, basis, points))
        cross.append((_r(a1, b2, basis, points) + _r(a2, b1, basis, points)) / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(wa)), float(np.nanmean(wb)), float(np.nanmean(cross))


def _ratio(within_a: float, within_b: float, cross: float) -> float:
    if not (np.isfinite(within_a) and np.isfinite(within_b)) or within_a <= 0 or within_b <= 0:
        return float("nan")
    return float(cross / np.sqrt(within_a * within_b))


def map_agreement(values_a: np.ndarray, values_b: np.ndarray, basis: str = "heads", *,
                  units_a: Sequence[object] | None = None, units_b: Sequence[object] | None = None,
                  n_boot: int = 100, splits: int = 20, boot_splits: int = 4, seed: int = 0,
                  points: int = 20) -> dict[str, float]:
    """Agreement of the mean maps of two sample sets, judged against the noise of each.

    ``values_a [samples_a, layers_a, heads_a]``, ``values_b [samples_b, ...]`` (``basis="heads"`` needs equal
    ``[layers, heads]``). ``units_a`` / ``units_b``: one label per sample saying which unit (image) it belongs to;
    units, not samples, are halved and resampled (the six samples of a scenes-count record share one scene). When the
    two sets share unit labels they are *paired* (a record seen under two conditions, one sample seen by two models)
    and their units are halved and resampled jointly; otherwise each set on its own. No units: each sample is one.

    Returns
    - ``r``: Pearson r of the two full-sample maps on ``basis``; ``rel a`` / ``rel b``: split-half reliability of
      each map (mean half-map r over ``splits`` halvings, stepped up with :func:`spearman_brown`); ``ceiling``:
      :func:`noise_ceiling` ``sqrt(rel_a rel_b)``. With paired sets ``r`` can exceed ``ceiling``: the shared images
      make the two maps share their noise.
    - ``ratio``: the disattenuated agreement that the verdicts use, ``cross / sqrt(within_a within_b)``: ``cross``
      correlates a half map of ``a`` with the half map of ``b`` from the *other* half of the units, ``within`` the
      two halves of one set, all at half size and averaged over ``splits`` halvings. Shared images never enter
      ``cross``, so paired and independent sets are judged alike; 1 means the two maps agree as well as two noisy
      measurements of one true map. ``ratio low`` / ``ratio high``: ``ratio`` plus and minus 1.96 bootstrap
      standard errors (``n_boot`` resamplings of the units with replacement, ``boot_splits`` halvings each);
      NaN when a set has fewer than :data:`MIN_UNITS` units (its halves would hold one unit each).
    Our reconstruction: the paper states no noise model.
    """
    va, vb = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    paired = units_a is not None and units_b is not None and bool(set(units_a) & set(units_b))
    ga, gb = _groups(units_a, len(va)), _groups(units_b, len(vb))
    draw_a = np.asarray(list(dict.fromkeys([*ga, *gb])) if paired else list(ga), dtype=object)
    draw_b = draw_a if paired else np.asarray(list(gb), dtype=object)
    rng = np.random.default_rng(seed)
    wa, wb, cross = _cross_half(va, vb, ga, gb, draw_a, draw_b, paired, rng, splits, basis, points)
    ratio = _ratio(wa, wb, cross)
    boot = []
    for _ in range(n_boot):
        da = draw_a[rng.integers(0, len(draw_a), len(draw_a))]
        db = da if paired else draw_b[rng.integers(0, len(draw_b), len(draw_b))]
        boot.append(_ratio(*_cross_half(va, vb, ga, gb, da, db, paired, rng, boot_splits, basis, points)))
    few = len(draw_a) < MIN_UNITS or len(draw_b) < MIN_UNITS  # a half of one unit: no interval
    se = float(np.nanstd(boot)) if np.isfinite(boot).sum() >= 2 and not few else float("nan")
    rel_a, rel_b = spearman_brown(wa), spearman_brown(wb)
    return {"r": _r(_mean_map(va), _mean_map(vb), basis, points), "rel a": rel_a, "rel b": rel_b,
            "ceiling": noise_ceiling(rel_a, rel_b), "ratio": ratio, "ratio low": ratio - 1.96 * se,
            "ratio high": ratio + 1.96 * se, "samples a": len(va), "samples b": len(vb)}


def record_of(res: Results) -> list[str]:
    """The record (image) each sample belongs to: ``sample_id`` up to its first ``":"`` (scenes-count's
    ``scenes-count-0003:object:visual`` -> ``scenes-count-0003``); a sample without one is its own record."""
    return [str(s).split(":")[0] for s in res.table["sample_id"]]


def condition_agreement(res: Results, pairs: Sequence[tuple[str, str]],
                        scores: Sequence[str] = ("weight", "region_weight"), *,
                        columns: Sequence[str] = ("prompt_kind", "question_kind"), n_boot: int = 100,
                        seed: int = 0) -> pd.DataFrame:
    """Figure 3's comparisons against sampling noise: one row per condition pair ``(a, b)`` and score.

    Conditions are values of the table ``columns`` (:meth:`helpers.results.Results.split_by`: ``"visual"``,
    ``"plain"``, ``"general"``, ``"object"``, ``"super"``). Each row: ``model``, ``dataset``, ``pair``, ``score``,
    ``mean a`` / ``mean b`` (mean of each condition's map) and :func:`map_agreement`'s fields on the head basis,
    paired by record (:func:`record_of`: the two conditions of one record share its image).
    """
    parts: dict[str, Results] = {}
    for column in columns:
        if column in res.table:
            parts.update(res.split_by(column))
    rows = []
    for a, b in pairs:
        if a not in parts or b not in parts:
            continue
        for score in scores:
            if score not in res.scores:
                continue
            va, vb = sample_values(parts[a], score), sample_values(parts[b], score)
            rows.append({"model": res.model_name, "dataset": res.dataset, "pair": f"{a} vs {b}", "score": score,
                         "mean a": float(np.nanmean(va)), "mean b": float(np.nanmean(vb)),
                         **map_agreement(va, vb, "heads", units_a=record_of(parts[a]),
                                         units_b=record_of(parts[b]), n_boot=n_boot, seed=seed)})
    return pd.DataFrame(rows)


def family_agreement(results_list: Sequence[Results], score: str = "detection", *,
                     families: Mapping[str, str] | None = None, min_correct: int = 8, n_boot: int = 100,
                     seed: int = 0, points: int = 20) -> pd.DataFrame:
    """Figure 4's comparisons against sampling noise: one row per pair of models and basis.

    ``results_list``: one Results per model, on the same samples (paired by ``sample_id``, :func:`map_agreement`). Pairs of one family (same base LM, equal ``[layers, heads]``) get two rows: ``basis="heads"``
    (head by head) and ``basis="depth profile"``; pairs across families get only the depth-profile row (their heads
    do not correspond). The depth-profile row of a within-family pair is what makes within and across comparable:
    both are then the same statistic. Columns: ``a``, ``b``, ``family a``, ``family b``, ``same family``,
    ``basis``, ``score`` and :func:`map_agreement`'s fields, whose reliabilities are on the row's basis.
    """
    families = dict(families or {})
    values = {r.model_name: sample_values(r, score, min_correct=min_correct) for r in results_list}
    ids = {r.model_name: list(r.table["sample_id"]) for r in results_list}
    rows = []
    for a, b in itertools.combinations(values, 2):
        fa, fb = families.get(a, a), families.get(b, b)
        same = fa == fb and values[a].shape[1:] == values[b].shape[1:]
        for basis in (("heads", "depth profile") if same else ("depth profile",)):
            rows.append({"a": a, "b": b, "family a": fa, "family b": fb, "same family": fa == fb, "basis": basis,
                         "score": score, **map_agreement(values[a], values[b], basis, units_a=ids[a], units_b=ids[b],
                                                         n_boot=n_boot, seed=seed, points=points)})
    return pd.DataFrame(rows)


def task_set_agreement(results_by_model: Mapping[str, Sequence[Results]], score: str = "weight", *,
                       n_boot: int = 100, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 5's comparisons against sampling noise, per model across its task sets.

    ``results_by_model``: model -> its Results, one per task set (``res.dataset`` labels). Returns
    ``(pair_rows, levels)``: one row per model and pair of task sets with :func:`map_agreement`'s fields on the
    head basis (different images: independent sets); and one row per model and task set with the mean
    ``score`` over heads and samples (``mean``: the mean over records of the per-sample head means), its 95%
    interval (``low`` / ``high``: plus and minus 1.96 standard errors over records, :func:`record_of`, since the
    samples of one record share a scene; NaN below :data:`MIN_UNITS` records), ``samples`` and ``accuracy``. Maps are halved and resampled by record.
    """
    pair_rows, levels = [], []
    for name, res_list in results_by_model.items():
        for r in res_list:
            per_sample = pd.Series(np.nanmean(sample_values(r, score).reshape(len(r), -1), axis=1))
            per_unit = per_sample.groupby(record_of(r), sort=False).mean().to_numpy()
            mean = float(per_unit.mean())
            few = len(per_unit) < MIN_UNITS  # too few records for a standard error
            se = float("nan") if few else float(np.std(per_unit, ddof=1) / np.sqrt(len(per_unit)))
            levels.append({"model": name, "dataset": r.dataset, "mean": mean, "low": mean - 1.96 * se,
                           "high": mean + 1.96 * se, "samples": len(r), "accuracy": r.accuracy})
        for ra, rb in itertools.combinations(res_list, 2):
            pair_rows.append({"model": name, "a": ra.dataset, "b": rb.dataset, "score": score,
                              **map_agreement(sample_values(ra, score), sample_values(rb, score), "heads",
                                              units_a=record_of(ra), units_b=record_of(rb), n_boot=n_boot,
                                              seed=seed)})
    return pd.DataFrame(pair_rows), pd.DataFrame(levels)
