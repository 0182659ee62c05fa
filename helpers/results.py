"""Per-sample, per-head results: one schema for sweeps, notebooks and the authors' released data.

A :class:`Results` holds
- ``table``: a pandas DataFrame, one row per sample (``index`` = position in the benchmark split,
  ``sample_id``, ``record_id``, ``image_id`` (what held-out checks compare; absent in older files),
  ``benchmark``, ``question_kind``, ``prompt_kind``, ``answer``, ``prediction``, ``correct``,
  ``n_image_tokens``, ``n_region_tokens``);
- ``scores``: name -> float32 array ``[samples, layers, heads]`` (``weight``, ``concentration``,
  ``region_weight``, ``region_share``, ``topk_share``, ...), rows aligned with ``table``;
- ``settings``: the run's settings (model id, revision, quantization, prompts, package version).

On disk it is Parquet: each score is a fixed-size list column of ``layers * heads`` float32 values,
and the settings sit in the file's key-value metadata. Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .metrics import WEIGHTED_SCORES, spearman, weighted_mean, wilson_interval

SETTINGS_KEY = b"visual_heads.settings"
SHAPE_KEY = b"visual_heads.shape"


class ResultsError(ValueError):
    """Result files or parts that cannot be read or merged; the message names the file and says what to do."""


@dataclass
class Results:
    """Per-sample metadata, per-head score arrays ``[samples, layers, heads]`` and run settings."""

    table: pd.DataFrame
    scores: dict[str, np.ndarray]
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, arr in self.scores.items():
            if arr.ndim != 3 or arr.shape[0] != len(self.table):
                raise ValueError(f"score {name!r} has shape {arr.shape}; expected [{len(self.table)}, layers, heads]")

    def __getattr__(self, name: str) -> np.ndarray:
        """Scores read as attributes: ``res.weight`` is ``res.scores["weight"]``."""
        scores = self.__dict__.get("scores", {})
        if name in scores:
            return scores[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or score {name!r}")

    def __len__(self) -> int:
        return len(self.table)

    @property
    def shape(self) -> tuple[int, int]:
        """``(layers, heads)``."""
        first = next(iter(self.scores.values()))
        return first.shape[1], first.shape[2]

    def select(self, mask: np.ndarray | pd.Series) -> Results:
        """The samples where boolean ``mask`` is true (e.g. ``res.table.correct``)."""
        mask = np.asarray(mask, dtype=bool)
        return Results(self.table[mask].reset_index(drop=True), {k: v[mask] for k, v in self.scores.items()},
                       dict(self.settings))

    @property
    def accuracy(self) -> float:
        """Share of correctly answered samples (NaN when correctness is unknown, e.g. released data)."""
        correct = self.table["correct"].dropna() if "correct" in self.table else []
        return float(correct.astype(float).mean()) if len(correct) else float("nan")

    @property
    def model_name(self) -> str:
        """The model that produced these results (``settings["model_name"]``)."""
        return str(self.settings.get("model_name", self.settings.get("model", "")))

    @property
    def dataset(self) -> str:
        """The data set (and split / question kind) they were computed on (``settings["dataset"]``)."""
        return str(self.settings.get("dataset", self.settings.get("benchmark", "")))

    def correct_mask(self) -> np.ndarray:
        """Boolean ``[samples]``: correctly answered (unknown counts as not correct)."""
        return self.table["correct"].fillna(False).to_numpy(dtype=bool)

    def per_head(self, name: str, only_correct: bool = False, weighted: bool | None = None) -> np.ndarray:
        """Mean over samples of score ``name``, NaN skipped: float32 ``[layers, heads]`` (NaN where no sample counts).

        ``weighted``: weight each sample by its image weight ``W`` (score ``"weight"``,
        :func:`helpers.metrics.weighted_mean`). Default None: weighted for the scores measured on the attention
        renormalised over the image (:data:`helpers.metrics.WEIGHTED_SCORES`: concentration, effective tokens),
        so a sample whose head barely looks at the image barely counts; plain mean for the others.
        A NumPy array, which :mod:`helpers.metrics` takes as it is.
        """
        keep = self.correct_mask() if only_correct else slice(None)
        values = self.scores[name][keep]
        if not len(values):
            return np.full(self.shape, np.nan, dtype=np.float32)
        if weighted is None:
            weighted = name in WEIGHTED_SCORES and "weight" in self.scores
        if weighted:
            return weighted_mean(torch.from_numpy(values).double(),
                                 torch.from_numpy(self.scores["weight"][keep]).double()).float().numpy()
        return torch.from_numpy(values).float().nanmean(0).numpy()

    def layer_profile(self, name: str, only_correct: bool = False) -> np.ndarray:
        """Per-layer mean over heads of :meth:`per_head` (NaN heads skipped): float32 ``[layers]``."""
        return np.nanmean(self.per_head(name, only_correct), axis=1)

    def sink_table(self) -> pd.DataFrame:
        """Attention sinks per layer, one row per layer: means over samples and heads of the captured row's
        ``first_token`` share (score ``first_key_share``: the first visible key, the usual attention sink),
        ``first_token_top`` (the layer's largest per-head mean of it), ``image_weight`` (``W``), ``uniform_share``
        (``|V| / K``: what uniform attention over the ``K`` visible keys gives the ``|V|`` image tokens; per
        sample ``W / weight_vs_uniform``, the same for every head) and ``weight_vs_uniform`` (mean of
        ``W / (|V| / K)``; above 1: the layer prefers the image to uniform attention).
        """
        first = self.per_head("first_key_share")
        ratio = self.scores["weight_vs_uniform"]
        with np.errstate(divide="ignore", invalid="ignore"):
            uniform = np.nanmedian(np.where(ratio > 0, self.scores["weight"] / ratio, np.nan).reshape(len(self), -1),
                                   axis=1)  # [samples]
        return pd.DataFrame({"layer": np.arange(self.shape[0]), "first_token": np.nanmean(first, axis=1),
                             "first_token_top": np.nanmax(first, axis=1), "image_weight": self.layer_profile("weight"),
                             "uniform_share": float(np.nanmean(uniform)),
                             "weight_vs_uniform": self.layer_profile("weight_vs_uniform")})

    def detection_score(self) -> np.ndarray:
        """The detection score ``[layers, heads]``: mean ``region_hits`` over correctly answered samples."""
        return self.per_head("region_hits", only_correct=True)

    def ranking(self, min_correct: int = 8, score: str = "region_hits", then: str | None = "region_weight"
                ) -> Ranking:
        """The visual-head score ``[layers, heads]`` used to rank heads, with a note saying what it is.

        The detection score (``score``, default ``region_hits``, averaged over correctly answered samples
        with a box: :meth:`detection_score`). When fewer than ``min_correct`` such samples exist (an
        untrained stand-in answers nothing right), it is averaged over all boxed samples instead, and the
        note says so. ``then``: a second score, averaged over the same samples, that orders heads whose
        detection scores tie (our choice: ``region_weight``, the attention mass on the box; in models that
        look little at the image most heads never place a top key in the box and tie at zero). It is added
        scaled below the smallest gap between distinct detection scores, so it never reorders them; the note
        says how many heads it separated. ``then=None``: ties stay ties (seeded random tie-breaking in
        :func:`helpers.metrics.top_heads`).
        """
        if score not in self.scores:
            raise KeyError(f"results have no score {score!r}; scores: {sorted(self.scores)}")
        boxed = ~np.isnan(self.scores[score]).all(axis=(1, 2))
        if not boxed.any():
            raise ValueError(f"{self.model_name} on {self.dataset}: no sample has a box, so no detection score; rank "
                             "on a PointQA-style set (shapes, pointqa, scenes-count)")
        n_correct = int((boxed & self.correct_mask()).sum())
        only = n_correct >= min_correct
        primary = self.per_head(score, only_correct=only)
        note = (f"detection score ({score}) over {n_correct} correct samples" if only else
                f"detection score ({score}) over all {int(boxed.sum())} boxed samples: only {n_correct} correct "
                f"(< {min_correct})")
        if then is None or then not in self.scores:
            return Ranking(self, primary, note)
        return Ranking(self, *_break_ties(primary, self.per_head(then, only_correct=only), note, then))

    # ----- regrouping

    def split_by(self, column: str) -> dict[str, Results]:
        """The samples grouped by a table column (e.g. ``prompt_kind``), in order of first appearance.

        Each part keeps the settings; its ``dataset`` becomes ``"{dataset}/{value}"``.
        """
        if column not in self.table:
            raise KeyError(f"results have no column {column!r}; columns: {list(self.table.columns)}")
        values = [v for v in dict.fromkeys(self.table[column].tolist()) if v not in ("", None)]
        parts = {}
        for value in values:
            part = self.select(self.table[column].to_numpy() == value)
            part.settings["dataset"] = f"{self.dataset}/{value}"
            parts[str(value)] = part
        return parts

    def condition_maps(self, scores: Mapping[str, str] | Sequence[str] = ("weight", "region_weight"),
                       columns: Sequence[str] = ("prompt_kind", "question_kind")) -> dict[str, dict[str, np.ndarray]]:
        """Per-head mean maps ``[layers, heads]`` for every value of each condition column (Figure 3).

        ``scores``: score names, or ``{label: score name}`` to label the columns of the figure. Returns
        ``{condition value: {label: map}}`` (e.g. ``{"visual": {"weight": ...}, "plain": ..., "general": ...}``),
        values in order of first appearance, columns in the order given.
        """
        labels = dict(scores) if isinstance(scores, Mapping) else {s: s for s in scores}
        out: dict[str, dict[str, np.ndarray]] = {}
        for column in columns:
            if column not in self.table:
                continue
            for value, part in self.split_by(column).items():
                out[value] = {label: part.per_head(name) for label, name in labels.items() if name in part.scores}
        return out

    @staticmethod
    def stack(results_list: Sequence[Results]) -> Results:
        """Samples of several results of one model stacked into one (settings of the first; ``index`` renumbered)."""
        if not results_list:
            raise ValueError("no results to merge")
        table = pd.concat([r.table for r in results_list], ignore_index=True)
        table["index"] = np.arange(len(table))
        scores = {k: np.concatenate([r.scores[k] for r in results_list]) for k in results_list[0].scores}
        return Results(table, scores, dict(results_list[0].settings))

    @staticmethod
    def by_model(results_list: Sequence[Results], split_dataset: str | None = None, split: str | None = None
                 ) -> dict[str, list[Results]]:
        """Results grouped by model name, in order of first appearance; with ``split``, the results on
        ``split_dataset`` are replaced by their parts by table column ``split`` (:meth:`split_by`).

        E.g. ``Results.by_model(res, "shapes", "question_kind")``: the synthetic set's general / object / super
        questions become three "data sets" next to any real benchmarks (Figure 5 on CPU).
        """
        out: dict[str, list[Results]] = {}
        for res in results_list:
            parts = list(res.split_by(split).values()) if split and res.dataset == split_dataset else [res]
            out.setdefault(res.model_name, []).extend(parts)
        return out


@dataclass(frozen=True)
class Ranking:
    """How one model's heads are ranked: the ranking ``results``, the ``scores [layers, heads]`` and a ``note``
    saying what the scores are (:meth:`Results.ranking`)."""

    results: Results
    scores: np.ndarray
    note: str

    @property
    def name(self) -> str:
        """The model's name."""
        return self.results.model_name


SUMMARY_SCORES = ("weight", "concentration", "effective_tokens", "first_key_share", "weight_vs_uniform")


def summary(results_list: Sequence[Results], scores: Sequence[str] = SUMMARY_SCORES) -> pd.DataFrame:
    """One row per result (model x data set): accuracy with its 95% Wilson interval and what its heads do.

    Columns: ``model``, ``dataset``, ``samples``, ``correct``, ``accuracy``, ``acc_low``, ``acc_high``,
    ``image_tokens`` (mean ``n_image_tokens`` per sample), then for each of ``scores`` the mean over heads of
    :meth:`Results.per_head` (its defaults: concentration and effective tokens are ``W``-weighted over samples,
    the others plain means), NaN heads skipped; ``spearman_wc``: the Spearman correlation across heads of the
    per-head weight and concentration (the shape of a Figure 1 panel). Scores a result lacks are NaN.
    """
    rows = []
    for res in results_list:
        correct, n = int(res.correct_mask().sum()), len(res)
        low, high = wilson_interval(correct, n)
        row = {"model": res.model_name, "dataset": res.dataset, "samples": n, "correct": correct,
               "accuracy": correct / n if n else float("nan"), "acc_low": low, "acc_high": high,
               "image_tokens": float(res.table["n_image_tokens"].mean()) if "n_image_tokens" in res.table
               else float("nan")}
        for name in scores:
            row[name] = float(np.nanmean(res.per_head(name))) if name in res.scores else float("nan")
        both = {"weight", "concentration"} <= set(res.scores)
        row["spearman_wc"] = spearman(res.per_head("weight"), res.per_head("concentration")) if both else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _break_ties(primary: np.ndarray, second: np.ndarray, note: str, name: str) -> tuple[np.ndarray, str]:
    """``primary`` ``[layers, heads]`` plus ``second`` scaled into ``[0, gap/2)`` (``gap``: the smallest difference
    between distinct finite primary values, 1 when all tie), so that ``second`` orders only the tied heads."""
    values = np.unique(primary[np.isfinite(primary)])
    gap = float(np.diff(values).min()) if values.size > 1 else 1.0
    spread = np.nanmax(np.abs(second)) if np.isfinite(second).any() else 0.0
    if not spread:
        return primary, note
    tied = int(sum(int((primary == v).sum()) for v in values if (primary == v).sum() > 1))
    adjusted = primary + np.nan_to_num(second / spread, nan=0.0).astype(primary.dtype) * np.float32(gap / 2)
    return adjusted.astype(primary.dtype), f"{note}; ties ({tied} heads) ordered by {name}"


def concat(parts: list[Results], names: list[str] | None = None, *, unique_ids: bool = False) -> Results:
    """Concatenate results of one run, sorted by ``index``.

    Every part must have the same settings (compared after a JSON round trip, as on disk), the same
    score names and the same ``[layers, heads]``; a part that differs from the first raises
    :class:`ResultsError` naming it (``names``: one label per part, e.g. its file; default ``part i``)
    and the difference. Duplicate indices raise too (and duplicate sample ids, with ``unique_ids``).
    """
    if not parts:
        raise ValueError("no results to concatenate")
    names = names or [f"part {i}" for i in range(len(parts))]
    for name, part in zip(names[1:], parts[1:], strict=True):
        _check_same_run(parts[0], part, names[0], name)
    table = pd.concat([p.table for p in parts], ignore_index=True)
    scores = {k: np.concatenate([p.scores[k] for p in parts]) for k in parts[0].scores}
    for column in ("index", "sample_id") if unique_ids else ("index",):
        if column not in table:
            continue
        dup = table[column][table[column].duplicated()]
        if len(dup):
            raise ResultsError(f"samples written twice: {column} {sorted(dup.astype(str).tolist())[:10]} (in "
                               f"{', '.join(names[:3])}{'...' if len(names) > 3 else ''}). Delete the part files of "
                               "one of the runs")
    if "index" in table:
        order = np.argsort(table["index"].to_numpy(), kind="stable")
        table = table.iloc[order].reset_index(drop=True)
        scores = {k: v[order] for k, v in scores.items()}
    return Results(table, scores, dict(parts[0].settings))


def _as_stored(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as they read back from a file (tuples become lists, other objects strings)."""
    return json.loads(json.dumps(settings, default=str))


def settings_difference(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """``["key (a vs b)", ...]`` for every setting that differs (a missing key counts), compared as stored."""
    a, b = _as_stored(a), _as_stored(b)
    missing = object()
    return [f"{key} ({a.get(key, 'not recorded')!r} vs {b.get(key, 'not recorded')!r})"
            for key in sorted(set(a) | set(b), key=str) if a.get(key, missing) != b.get(key, missing)]


def _check_same_run(first: Results, part: Results, first_name: str, name: str) -> None:
    """Raise :class:`ResultsError` unless ``part`` has ``first``'s settings, score names and [layers, heads]."""
    advice = ("Parts of different runs cannot be merged: move them to separate folders or delete the parts of the "
              "other run")
    if set(part.scores) != set(first.scores):
        raise ResultsError(f"{name} has scores {sorted(part.scores)} but {first_name} has {sorted(first.scores)}. "
                           + advice)
    if part.scores and part.shape != first.shape:
        raise ResultsError(f"{name} has [layers, heads] = {list(part.shape)} but {first_name} has "
                           f"{list(first.shape)}. " + advice)
    diff = settings_difference(first.settings, part.settings)
    if diff:
        raise ResultsError(f"{name} differs from {first_name} in settings: {'; '.join(diff)}. " + advice)


def write(results: Results, path: str | Path) -> Path:
    """Write ``results`` to a Parquet file atomically (a reader never sees a half-written file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(results.table, preserve_index=False)
    layers, heads = results.shape if results.scores else (0, 0)
    for name, arr in results.scores.items():
        flat = pa.array(arr.reshape(-1).astype(np.float32))
        table = table.append_column(f"score.{name}", pa.FixedSizeListArray.from_arrays(flat, layers * heads))
    meta = {**(table.schema.metadata or {}), SETTINGS_KEY: json.dumps(results.settings, default=str).encode(),
            SHAPE_KEY: json.dumps([layers, heads]).encode()}
    table = table.replace_schema_metadata(meta)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def read(path: str | Path) -> Results:
    """Read one Parquet file written by :func:`write`.

    A file that is not such a file (truncated, corrupt, written by something else) raises
    :class:`ResultsError` naming it; in a sweep folder, delete it and resume the sweep to recompute its samples.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        layers, heads = json.loads(meta[SHAPE_KEY])
        settings = json.loads(meta.get(SETTINGS_KEY, b"{}"))
        scores = {}
        for name in [c for c in table.column_names if c.startswith("score.")]:
            col = table.column(name).combine_chunks()
            scores[name.removeprefix("score.")] = np.array(col.flatten().to_numpy().reshape(len(table), layers, heads))  # writable
            table = table.drop_columns([name])
        return Results(table.to_pandas(), scores, settings)
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError) as err:
        raise ResultsError(f"{path} cannot be read as a results file ({type(err).__name__}: {err}). If it is a part "
                           "of a sweep, delete this file and resume the sweep: its samples are computed again") from err


def read_dir(folder: str | Path) -> Results:
    """Read and merge every part file of a sweep folder (all processes' shards), sorted by sample index.

    Parts of different runs (settings, score names or [layers, heads] differ), a sample written twice and a
    corrupt part raise :class:`ResultsError` naming the file.
    """
    parts = sorted(Path(folder).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"no part-*.parquet files in {folder}: has the sweep written anything yet?")
    return concat([read(p) for p in parts], names=[str(p) for p in parts], unique_ids=True)


# ---------------------------------------------------------------------------------------------
# The authors' released per-head files (Hugging Face dataset jing-bi/visual-head)

RELEASED_FILES = {
    "imatt_sum.pt": "weight",
    "imatt_concen.pt": "concentration",
    "spatt_sum.pt": "region_weight",
    "spatt_concen.pt": "region_concentration",
    "txtatt_sum.pt": "text_weight",
    "txtatt_concen.pt": "text_concentration",
}


def load_released(folder: str | Path, model: str = "", split: str = "") -> Results:
    """Map one model/split folder of the authors' released files into a :class:`Results`.

    Each file present (``imatt_sum.pt`` ...) is loaded with ``torch.load(weights_only=True)`` and must be a
    tensor ``[samples, layers, heads]`` (a list of ``[layers, heads]`` tensors is stacked), every file of the
    same shape; a file that is not raises :class:`ResultsError` naming it. The released files carry no answers
    or correctness, so those columns are empty (``correct`` is NA).
    """
    folder = Path(folder)
    scores: dict[str, np.ndarray] = {}
    first = ""
    for filename, name in RELEASED_FILES.items():
        path = folder / filename
        if not path.is_file():
            continue
        arr = _released_array(path)
        if scores and arr.shape != scores[RELEASED_FILES[first]].shape:
            raise ResultsError(f"{path} holds [samples, layers, heads] = {list(arr.shape)} but {folder / first} "
                               f"holds {list(scores[RELEASED_FILES[first]].shape)}: every file of one model and "
                               "split has the same shape. Is one of them from another model or split?")
        first = first or filename
        scores[name] = arr
    if not scores:
        raise FileNotFoundError(f"none of {', '.join(RELEASED_FILES)} in {folder}")
    count = len(next(iter(scores.values())))
    table = pd.DataFrame({"index": np.arange(count), "sample_id": [f"{split}-{i}" for i in range(count)],
                          "benchmark": split, "correct": pd.array([pd.NA] * count, dtype="boolean")})
    return Results(table, scores, {"source": "jing-bi/visual-head (released)", "model": model, "split": split})


def _released_array(path: Path) -> np.ndarray:
    """One released file as float32 ``[samples, layers, heads]``; :class:`ResultsError` naming it otherwise."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    try:
        if isinstance(obj, (list, tuple)):
            obj = torch.stack([torch.as_tensor(o) for o in obj])
        arr = torch.as_tensor(obj).float().numpy()
    except (RuntimeError, TypeError, ValueError) as err:
        raise ResultsError(f"{path} holds a {type(obj).__name__}, not a tensor [samples, layers, heads] or a list of "
                           f"[layers, heads] tensors ({err})") from err
    if arr.ndim != 3:
        raise ResultsError(f"{path}: expected [samples, layers, heads], got shape {tuple(arr.shape)}")
    return arr
