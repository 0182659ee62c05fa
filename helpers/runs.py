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
is :mod:`helpers.agreement`'s and :mod:`helpers.ablation`'s. Computed results go through the extraction cache
(:mod:`helpers.cache`): every notebook of one run that asks for the same model, samples and settings reads
them back instead of extracting again, and loads no model for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cache, extract, results
from .models import REGISTRY, spec_of
from .results import Results
from .selection import ModelChoice, iter_models, resolve, rows_for, samples


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


@dataclass(frozen=True)
class Planned:
    """One extraction a figure needs: ``dataset`` label, its ``samples`` and the extraction cache ``key``."""

    dataset: str
    samples: list
    key: str


def extraction_settings(batch_size: int = 8, rows: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """The settings of an extraction as the cache key sees them: ``batch_size``, ``rows``
    (:func:`helpers.selection.rows_for`) and the other keywords of :func:`helpers.extract.head_results`."""
    return {"batch_size": batch_size, "rows": rows_for(None, rows), **kwargs}


def cache_key(model: str | Path | None, chosen: Sequence[Any], *, device: str | None = None, batch_size: int = 8,
              rows: str | None = None, **kwargs: Any) -> str:
    """The extraction-cache key :func:`extractions` uses for ``model`` (a notebook's ``MODEL`` parameter,
    :func:`helpers.selection.resolve`) on the samples ``chosen`` under these settings: what the explorer
    (``helpers.widgets``) looks up so that it reads the per-head scores the figure notebooks stored."""
    return _key(resolve(model, device), chosen, extraction_settings(batch_size, rows, **kwargs))


def _key(choice: ModelChoice, chosen: Sequence[Any], settings: Mapping[str, Any]) -> str:
    """:func:`helpers.cache.key` of extracting ``chosen`` with the resolved ``choice`` under ``settings``."""
    return cache.key(choice.name, list(chosen), settings=settings, device=choice.device,
                     quantization=choice.quantization)


def plan(choice: ModelChoice, datasets: Sequence[str], *, n_samples: int, settings: Mapping[str, Any],
         data_files: Mapping[str, Any] | None = None, image_folder: str | Path | None = None,
         offset: int = 0) -> list[Planned]:
    """The samples of each dataset (:func:`helpers.selection.samples`: the first ``n_samples`` after ``offset``)
    and the cache key of extracting them with ``choice`` under ``settings`` (:func:`helpers.cache.key`)."""
    out = []
    for name in datasets:
        chosen = list(samples(name, n_samples, offset=offset, data_files=data_files, image_folder=image_folder))
        out.append(Planned(name, chosen, _key(choice, chosen, settings)))
    return out


def label(res: Results, model: Any) -> Results:
    """Label ``res`` with ``model``'s family, hub id and note (as every cached extraction is); returns ``res``."""
    spec = spec_of(model)
    res.settings.update(family=spec.family, hub_id=spec.hub_id, note=spec.note)
    return res


def store(key: str, res: Results, *, settings: Mapping[str, Any]) -> None:
    """Write ``res`` to the extraction cache under ``key``, described by its model, dataset, size and settings."""
    cache.write(key, res, described={"model": res.model_name, "dataset": res.dataset, "n": len(res),
                                     "settings": dict(settings)})


def compute(model: Any, processor: Any, planned: Sequence[Planned], *, settings: Mapping[str, Any]) -> list[Results]:
    """Per-head results of one loaded model on each planned extraction (``extract.head_results``), labelled
    with the model's family, hub id and note, and stored in the extraction cache."""
    out = []
    for p in planned:
        res = label(extract.head_results(model, processor, p.samples, dataset=p.dataset, **settings), model)
        store(p.key, res, settings=settings)
        out.append(res)
    return out


def _report(res: Results, source: str) -> None:
    print(f"{res.model_name} on {res.dataset}: {len(res)} samples, accuracy {res.accuracy:.1%}, "
          f"rows={res.settings.get('rows')!r} ({source})")


def extractions(model: str | Path | None, datasets: Sequence[str], *, n_samples: int, batch_size: int = 8,
                device: str | None = None, data_files: Mapping[str, Any] | None = None,
                image_folder: str | Path | None = None, rows: str | None = None, offset: int = 0,
                loaded: tuple[Any, Any] | None = None, **kwargs: Any) -> list[Results]:
    """One :class:`Results` per dataset for one model: read from the extraction cache (:mod:`helpers.cache`)
    where this model, these samples and these settings were extracted before, else computed (the model is
    loaded only when something is missing) and stored.

    Samples: the first ``n_samples`` of each dataset after ``offset`` (:func:`helpers.selection.samples`).
    ``rows``: the captured attention row (:func:`helpers.selection.rows_for`). ``loaded``: ``(model,
    processor)`` already loaded from ``model`` (a one-model notebook that also runs the model itself), used
    for what is missing instead of loading it again. Other keyword arguments go to
    :func:`helpers.extract.head_results` (``k``, ``max_new_tokens``, ``image_tokens``, ...).
    """
    choice = resolve(model, device)
    settings = extraction_settings(batch_size, rows, **kwargs)
    planned = plan(choice, datasets, n_samples=n_samples, settings=settings, data_files=data_files,
                   image_folder=image_folder, offset=offset)
    found = {p.key: cache.read(p.key) for p in planned}
    missing = [p for p in planned if found[p.key] is None]
    computed = {p.key for p in missing}
    if missing:
        models = [loaded] if loaded is not None else iter_models([choice.name], choice.device)
        for instance, processor in models:
            for p, res in zip(missing, compute(instance, processor, missing, settings=settings), strict=True):
                found[p.key] = res
                _report(res, "computed")
    for p in planned:
        if p.key not in computed:
            _report(found[p.key], "extraction cache")
    return [found[p.key] for p in planned]


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
            rows: str | None = None, loaded: tuple[Any, Any] | None = None, **kwargs: Any) -> list[Results]:
    """One :class:`Results` per (model, dataset): read from ``results_dir`` when given, else :func:`extractions`
    of each model in turn (from the extraction cache where possible). ``loaded``: ``(model, processor)`` of
    the one model in ``models``, already loaded (:func:`extractions`).

    Read: ``models`` and ``datasets`` are ignored; every sweep below ``results_dir`` is returned
    (:func:`load_saved`).
    """
    if results_dir is not None:
        return load_saved(results_dir)
    if loaded is not None and len(models) != 1:
        raise ValueError(f"loaded=(model, processor) is one model, but models names {len(models)}")
    out: list[Results] = []
    for name in models:
        out += extractions(name, datasets, n_samples=n_samples, batch_size=batch_size, device=device,
                           data_files=data_files, image_folder=image_folder, rows=rows, loaded=loaded, **kwargs)
    return out
