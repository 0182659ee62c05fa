"""Per-head results of the figure notebooks: computed from models, or read from saved sweeps.

    names = selection.default_models(gpu=["llava-v1.5-7b", "llava-v1.6-vicuna-7b"])
    results = runs.collect(names, ["shapes"], n_samples=48)                     # one Results per (model, dataset)
    results = runs.collect(names, ["shapes"], n_samples=48, results_dir="sweeps/")   # or: saved sweep results

A figure notebook either computes its results from models (:func:`helpers.extract.head_results` over the
samples of :func:`helpers.selection.samples`) or, when ``results_dir`` is given, reads the saved results of
sweeps (``python -m helpers.sweep``, same :class:`helpers.results.Results` schema), so results computed once
on a GPU are re-plotted anywhere. Each Results carries ``settings["model_name"]``, ``settings["family"]`` and
``settings["dataset"]``: every figure says which model produced it. Which models run and which samples they
see is :mod:`helpers.selection`'s; regrouping the results is :class:`helpers.results.Results`' and the analysis
is :mod:`helpers.agreement`'s and :mod:`helpers.ablation`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import extract, results
from .models import REGISTRY, spec_of
from .results import Results
from .selection import iter_models, rows_for, samples


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


def compute(model: Any, processor: Any, datasets: Sequence[str], *, n_samples: int, batch_size: int = 8,
            data_files: Mapping[str, Any] | None = None, image_folder: str | Path | None = None,
            rows: str | None = None, **kwargs: Any) -> list[Results]:
    """Per-head results of one loaded model on each dataset (``extract.head_results``), labelled.

    Samples: the first ``n_samples`` of each dataset (:func:`helpers.selection.samples`). ``rows``: the
    captured attention row (:func:`helpers.selection.rows_for`; ``None`` picks by model). Other keyword
    arguments go to :func:`helpers.extract.head_results` (``k``, ``max_new_tokens``, ...).
    """
    spec = spec_of(model)
    rows = rows_for(model, rows)
    out = []
    for name in datasets:
        chosen = samples(name, n_samples, data_files=data_files, image_folder=image_folder)
        res = extract.head_results(model, processor, chosen, batch_size=batch_size, dataset=name, rows=rows,
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


def collect(models: Sequence[str | None], datasets: Sequence[str], *, n_samples: int,
            results_dir: str | Path | None = None, batch_size: int = 8, device: str | None = None,
            data_files: Mapping[str, Any] | None = None, image_folder: str | Path | None = None,
            rows: str | None = None, **kwargs: Any) -> list[Results]:
    """One :class:`Results` per (model, dataset): read from ``results_dir`` when given, else computed.

    Computed: each model is loaded in turn (:func:`helpers.selection.iter_models`) and run on ``n_samples`` samples of
    each dataset (:func:`compute`). Read: ``models`` and ``datasets`` are ignored; every sweep below
    ``results_dir`` is returned (:func:`load_saved`).
    """
    if results_dir is not None:
        return load_saved(results_dir)
    out: list[Results] = []
    for model, processor in iter_models(models, device):
        out += compute(model, processor, datasets, n_samples=n_samples, batch_size=batch_size, data_files=data_files,
                       image_folder=image_folder, rows=rows, **kwargs)
    return out
