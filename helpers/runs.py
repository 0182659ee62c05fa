"""What the figure notebooks run: which models, which samples, and per-head results computed or loaded.

    names = runs.default_models(gpu=["llava-v1.5-7b", "llava-v1.6-vicuna-7b"])
    results = runs.collect(names, ["shapes"], n_samples=48)          # one Results per (model, dataset)
    results = runs.collect(names, ["shapes"], 48, results_dir="sweeps/")   # or: saved sweep results

A figure notebook either computes its results from models (:func:`helpers.extract.head_results`
over :mod:`helpers.data` samples) or, when ``results_dir`` is given, reads the saved results of
sweeps (``python -m helpers.sweep``, same :class:`helpers.results.Results` schema), so results
computed once on a GPU are re-plotted anywhere. Each Results carries ``settings["model_name"]``,
``settings["family"]`` and ``settings["dataset"]``: every figure says which model produced it.

Dataset names (:func:`load_samples`): ``"shapes"`` (the embedded synthetic PointQA-style set, every
question kind x prompt kind), ``"shapes/general"``, ``"shapes/visual"``, ``"shapes/object/plain"``
(one question kind and / or prompt kind), and the benchmarks of :data:`helpers.data.LOADERS` read
from local files (``data_files={"pope": "coco_pope_adversarial.parquet"}``) or from the hub.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import data, extract, results
from .env import default_device
from .models import REGISTRY, load_default, spec_of, toy_models
from .results import Results

SHAPES = "shapes"


def default_models(gpu: Sequence[str], device: str | None = None) -> list[str | None]:
    """The model list a figure notebook runs when its parameter is left at ``None``.

    On CUDA: ``gpu`` (registry names, hub ids). On CPU: every trained toy model in ``data/``, or
    ``[None]`` when there is none, which :func:`helpers.models.load_default` turns into the tiny
    random-weight stand-in (its figures show code paths, not findings).
    """
    device = device or default_device()
    if device.startswith("cuda"):
        return list(gpu)
    return list(toy_models()) or [None]


def parse_dataset(name: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """``"shapes/object/plain"`` -> ``("shapes", ("object",), ("plain",))``; kinds default to all.

    The parts after the benchmark are question kinds (general, object, super) and prompt kinds
    (visual, plain), in any order; they apply to PointQA-style sets only.
    """
    bench, *parts = name.split("/")
    qk = tuple(p for p in parts if p in data.QUESTION_KINDS)
    pk = tuple(p for p in parts if p in data.PROMPT_KINDS)
    unknown = [p for p in parts if p not in qk + pk]
    if unknown:
        raise ValueError(f"dataset {name!r}: {unknown} are neither question kinds {data.QUESTION_KINDS} nor prompt "
                         f"kinds {data.PROMPT_KINDS}")
    return bench, qk or data.QUESTION_KINDS, pk or data.PROMPT_KINDS


def load_samples(name: str, n_samples: int, offset: int = 0, data_files: Mapping[str, Any] | None = None,
                 image_folder: str | Path | None = None) -> list[data.Sample]:
    """The first ``n_samples`` samples of dataset ``name`` after skipping ``offset`` (records, for PointQA-style sets).

    PointQA-style sets (``shapes``, ``pointqa``) are taken whole records at a time, so every question
    kind x prompt kind asked for gets the same records: ``ceil(n_samples / kinds)`` records, truncated
    to ``n_samples``. ``offset`` counts records there (samples elsewhere), so a held-out set is
    ``load_samples(name, n, offset=n_ranking_records)``. ``data_files[benchmark]`` points at local files
    of that benchmark's schema (``pointqa`` needs ``image_folder``, ``pope`` / ``qbench`` files that store image
    paths too); without it the hub is used. Bad samples are skipped with a warning.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1, got {n_samples}")
    bench, qk, pk = parse_dataset(name)
    files = (data_files or {}).get(bench)
    if bench in (SHAPES, "shapes-pointqa", "pointqa"):
        per_record = len(qk) * len(pk)
        records = math.ceil(n_samples / per_record)
        kwargs = {"question_kinds": qk, "prompt_kinds": pk, "limit": offset + records, "on_error": "skip"}
        if bench == "pointqa":
            samples = data.load_pointqa(files, image_folder, **kwargs)
        else:
            samples = data.load_shapes(**kwargs)
        samples = list(samples)[offset * per_record:][:n_samples]
    else:
        kwargs = {"limit": offset + n_samples, "on_error": "skip"}
        if image_folder is not None and bench in ("pope", "qbench"):
            kwargs["image_folder"] = image_folder
        samples = list(data.load(bench, files, **kwargs))[offset:]
    if not samples:
        raise data.EmptySplitError(f"dataset {name!r}: no samples after skipping {offset}; lower the offset or "
                                   "give more data")
    return samples


def family_of(res: Results) -> str:
    """The model family of a result: its settings, else the registry, else the toy folder's card, else "unknown"."""
    if res.settings.get("family"):
        return str(res.settings["family"])
    name = res.model_name
    if name in REGISTRY:
        return REGISTRY[name].family
    for key in ("hub_id", "model"):
        card = Path(str(res.settings.get(key, ""))) / "visual_heads.json"
        if card.is_file():
            return str(json.loads(card.read_text()).get("family", "unknown"))
    return "unknown"


def iter_models(names: Sequence[str | None], device: str | None = None) -> Iterator[tuple[Any, Any]]:
    """Load each model in turn (``None``: the embedded default), yield ``(model, processor)``, free it after."""
    for name in names:
        model, processor = load_default(name, device=device)
        try:
            yield model, processor
        finally:
            del model, processor
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:  # pragma: no cover
                pass


def rows_for(model: Any, rows: str | None = None) -> str:
    """The attention row to capture for ``model``: ``rows`` when given, else ``"answer"`` for every model.

    ``"answer"`` is the one rule of every notebook: the row that predicts the answer's first content token
    (``helpers.capture.first_content_index``). ``"first_generated"`` is the row the authors' code records.
    """
    if rows is not None:
        return rows
    return "answer"


def compute(model: Any, processor: Any, datasets: Sequence[str], n_samples: int, batch_size: int = 8,
            data_files: Mapping[str, Any] | None = None, image_folder: str | Path | None = None,
            rows: str | None = None, **kwargs: Any) -> list[Results]:
    """Per-head results of one loaded model on each dataset (``extract.head_results``), labelled.

    ``rows``: the captured attention row (:func:`rows_for`; ``None`` picks by model). Other keyword
    arguments go to :func:`helpers.extract.head_results` (``k``, ``max_new_tokens``, ...).
    """
    spec = spec_of(model)
    rows = rows_for(model, rows)
    out = []
    for name in datasets:
        samples = load_samples(name, n_samples, data_files=data_files, image_folder=image_folder)
        res = extract.head_results(model, processor, samples, batch_size=batch_size, dataset=name, rows=rows,
                                   **kwargs)
        res.settings.update(family=spec.family, hub_id=spec.hub_id, note=spec.note)
        print(f"{spec.name} on {name}: {len(res)} samples, accuracy {res.accuracy:.1%}, rows={rows!r}")
        out.append(res)
    return out


def sweep_folders(folder: str | Path) -> list[Path]:
    """``folder`` itself if it holds sweep part files, else every folder below it that does, sorted."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder {folder} does not exist")
    if any(folder.glob("part-*.parquet")):
        return [folder]
    found = sorted({p.parent for p in folder.rglob("part-*.parquet")})
    if not found:
        raise FileNotFoundError(f"no sweep results (part-*.parquet) in or below {folder}: run python -m helpers.sweep "
                                "--out DIR first, or set the results folder to None to compute from a model")
    return found


def load_saved(folder: str | Path) -> list[Results]:
    """Every sweep under ``folder`` as :class:`Results` (one per sweep folder), with its family filled in."""
    out = []
    for sub in sweep_folders(folder):
        res = results.read_dir(sub)
        res.settings["family"] = family_of(res)
        out.append(res)
        print(f"read {sub}: {res.model_name} on {res.dataset}, {len(res)} samples, accuracy {res.accuracy:.1%}")
    return out


def collect(models: Sequence[str | None], datasets: Sequence[str], n_samples: int,
            results_dir: str | Path | None = None, batch_size: int = 8, device: str | None = None,
            data_files: Mapping[str, Any] | None = None, image_folder: str | Path | None = None,
            rows: str | None = None, **kwargs: Any) -> list[Results]:
    """One :class:`Results` per (model, dataset): read from ``results_dir`` when given, else computed.

    Computed: each model is loaded in turn (:func:`iter_models`) and run on ``n_samples`` samples of
    each dataset (:func:`compute`). Read: ``models`` and ``datasets`` are ignored; every sweep below
    ``results_dir`` is returned (:func:`load_saved`).
    """
    if results_dir is not None:
        return load_saved(results_dir)
    out: list[Results] = []
    for model, processor in iter_models(models, device):
        out += compute(model, processor, datasets, n_samples, batch_size, data_files, image_folder, rows, **kwargs)
    return out


def split_by(res: Results, column: str) -> dict[str, Results]:
    """The samples of ``res`` grouped by a table column (e.g. ``prompt_kind``), in order of first appearance.

    Each part keeps the settings; its ``dataset`` becomes ``"{dataset}/{value}"``.
    """
    if column not in res.table:
        raise KeyError(f"results have no column {column!r}; columns: {list(res.table.columns)}")
    values = [v for v in dict.fromkeys(res.table[column].tolist()) if v not in ("", None)]
    parts = {}
    for value in values:
        part = res.select(res.table[column].to_numpy() == value)
        part.settings["dataset"] = f"{res.dataset}/{value}"
        parts[str(value)] = part
    return parts


def by_model(results_list: Sequence[Results]) -> dict[str, list[Results]]:
    """Results grouped by model name, in order of first appearance."""
    out: dict[str, list[Results]] = {}
    for res in results_list:
        out.setdefault(res.model_name, []).append(res)
    return out


def merged(results_list: Sequence[Results]) -> Results:
    """Samples of several results of one model stacked into one (settings of the first; ``index`` renumbered)."""
    if not results_list:
        raise ValueError("no results to merge")
    table = pd.concat([r.table for r in results_list], ignore_index=True)
    table["index"] = np.arange(len(table))
    scores = {k: np.concatenate([r.scores[k] for r in results_list]) for k in results_list[0].scores}
    return Results(table, scores, dict(results_list[0].settings))


CONDITION_COLUMNS = ("prompt_kind", "question_kind")


def condition_maps(res: Results, scores: Mapping[str, str] | Sequence[str] = ("weight", "region_weight"),
                   columns: Sequence[str] = CONDITION_COLUMNS) -> dict[str, dict[str, np.ndarray]]:
    """Per-head mean maps ``[layers, heads]`` for every value of each condition column (Figure 3).

    ``scores``: score names, or ``{label: score name}`` to label the columns of the figure. Returns
    ``{condition value: {label: map}}`` (e.g. ``{"visual": {"weight": ...}, "plain": ..., "general": ...}``),
    values in order of first appearance, columns in the order given.
    """
    labels = dict(scores) if isinstance(scores, Mapping) else {s: s for s in scores}
    out: dict[str, dict[str, np.ndarray]] = {}
    for column in columns:
        if column not in res.table:
            continue
        for value, part in split_by(res, column).items():
            out[value] = {label: part.per_head(name) for label, name in labels.items() if name in part.scores}
    return out


def difference_maps(maps: Mapping[str, Mapping[str, np.ndarray]], pairs: Sequence[tuple[str, str]]
                    ) -> dict[str, dict[str, np.ndarray]]:
    """``{"a - b": {label: maps[a][label] - maps[b][label]}}`` for each ``(a, b)`` in ``pairs`` present in ``maps``."""
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
    from . import agreement, metrics

    rows = []
    for a, b in pairs:
        if a not in maps or b not in maps:
            continue
        for label in maps[a]:
            if label not in maps[b]:
                continue
            ma, mb = maps[a][label], maps[b][label]
            top_a = metrics.top_heads(_tensor(ma), top)
            top_b = metrics.top_heads(_tensor(mb), top)
            rows.append({"pair": f"{a} vs {b}", "score": label, "mean a": float(np.nanmean(ma)),
                         "mean b": float(np.nanmean(mb)), "a - b": float(np.nanmean(ma - mb)),
                         "pearson": agreement.compare(ma, mb)["pearson"],
                         "top heads a": " ".join(f"{lyr}.{h}" for lyr, h in top_a),
                         "top heads b": " ".join(f"{lyr}.{h}" for lyr, h in top_b)})
    return pd.DataFrame(rows)


def _tensor(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def as_datasets(results_list: Sequence[Results], split_dataset: str | None = None, split: str | None = None
                ) -> dict[str, list[Results]]:
    """Results per model, with the results on ``split_dataset`` replaced by its parts by table column ``split``.

    E.g. ``as_datasets(res, "shapes", "question_kind")``: the synthetic set's general / object / super
    questions become three "data sets" next to any real benchmarks (Figure 5 on CPU).
    """
    out: dict[str, list[Results]] = {}
    for res in results_list:
        parts = list(split_by(res, split).values()) if split and res.dataset == split_dataset else [res]
        out.setdefault(res.model_name, []).extend(parts)
    return out


def set_cpu_threads(threads: int | None, device: str | None = None) -> int:
    """Set torch's CPU thread count when running on CPU (``threads=None``: leave it); returns the count in use.

    The toy models are so small (hidden size 128) that extra threads only add synchronisation: on a
    machine shared with other jobs, 2 threads ran a toy forward pass 8x slower than 1 thread. On CUDA
    nothing changes.
    """
    import torch

    device = device or default_device()
    if threads is not None and not device.startswith("cuda"):
        if threads < 1:
            raise ValueError(f"threads must be at least 1 (or None to leave torch's setting), got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()
