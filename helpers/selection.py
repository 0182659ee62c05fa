"""Which models and which samples a notebook, a sweep or the explorer runs: the one place they are chosen.

    model, processor = selection.load_default(None)                 # by hardware: 4-bit GPU default, or an organism
    names = selection.default_models(gpu=["llava-v1.5-7b"])          # the list a figure notebook runs
    selection.samples("shapes/general/visual", 12)                     # the first 12 (whole records)
    selection.samples("shapes", 12, offset=4)                          # held out: after the first 4 records
    selection.samples("shapes", 12, seed=0)                            # a seeded random choice, in data set order
    selection.panels("shapes", 8, seed=0)                              # figure panels by question kind
    selection.check_disjoint(rank, held_out)                            # no sample, record or image in both

Data set names: ``"shapes"`` (the embedded synthetic PointQA-style set, :data:`helpers.data.SHAPES`, every
question kind x prompt kind), ``"shapes/general"``, ``"shapes/visual"``, ``"shapes/object/plain"`` (one
question kind and / or prompt kind; PointQA-style sets only), the organisms' committed task sets
``"scenes-count"`` (PointQA-style, same naming: ``"scenes-count/object/visual"``), ``"scenes-pope"`` and
``"scenes-choice"`` (``data/scenes-*``), and the benchmarks of :data:`helpers.data.LOADERS`, read from local
files (``data_files``) or from the hub.
"""

from __future__ import annotations

import gc
import json
import math
import random
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import data
from .env import DATA_DIR, REPO_ROOT, default_device
from .models import load
from .offline import save as save_offline
from .results import Results

RECORD_SETS = (data.SHAPES, "pointqa", "scenes-count")  # PointQA-style: one record gives question kinds x prompt kinds


# ---------------------------------------------------------------------------------------------
# Models

GPU_DEFAULT = "llava-v1.5-7b"
ORGANISMS_DIR = DATA_DIR / "organisms"
CPU_DEFAULT = "smollm2-lora"  # the organism a one-model notebook loads on CPU (``data/organisms/<name>``)


def organism_folders(folder: Path | None = None) -> list[str]:
    """The committed organisms (folders holding an ``organism.json``) in ``folder`` (default ``data/organisms``),
    sorted by name: two base LMs (Gemma-3-270M, SmolLM2-135M) x two variants (frozen LM, LoRA)."""
    folder = ORGANISMS_DIR if folder is None else Path(folder)
    return [str(p) for p in sorted(folder.glob("*")) if (p / "organism.json").is_file()]


def organism_card(model: str | Path | None) -> dict | None:
    """The held-out accuracies an organism's card records (``card.json["scene"]``: per task set ``accuracy``,
    ``ci95``, ``chance``, ``n``), or None for anything that is not an organism folder with a card."""
    card = Path(str(model)) / "card.json" if model is not None else None
    if card is None or not card.is_file():
        return None
    return json.loads(card.read_text()).get("scene")


def toy_models(folder: Path | None = None) -> list[str]:
    """The toy models with planted retrieval heads ``toy-*`` in ``folder`` (default ``data/``), sorted.

    They are no notebook's default any more (their "visual heads" exist by construction); tests that need a
    model whose visual heads are known in advance use them."""
    folder = DATA_DIR if folder is None else Path(folder)
    return [str(p) for p in sorted(folder.glob("toy-*")) if (p / "config.json").is_file()]


def embedded_default() -> Path:
    """Folder of the CPU default model: the organism :data:`CPU_DEFAULT` (else the first organism) when
    present, else a tiny random-weight LLaVA-1.5 built offline into ``build/offline/`` (a stand-in whose
    figures show code paths, not findings; notebooks say which one ran)."""
    found = organism_folders()
    preferred = ORGANISMS_DIR / CPU_DEFAULT
    if found:
        return preferred if str(preferred) in found else Path(found[0])
    folder = REPO_ROOT / "build" / "offline" / "llava-v1.5-7b-tiny-random"
    if not (folder / "config.json").is_file():
        save_offline("llava-v1.5-7b", folder, tiny=True, layers=4)
    return folder


@dataclass(frozen=True)
class ModelChoice:
    """What a notebook parameter resolves to before anything loads: ``name`` (registry name, hub id or
    folder), ``device`` and ``quantization`` (``None``: unquantized)."""

    name: str
    device: str
    quantization: str | None


def resolve(model: str | Path | None = None, device: str | None = None,
            quantization: str | None = "auto") -> ModelChoice:
    """The model a parameter asks for. ``model=None``: :data:`GPU_DEFAULT` on CUDA, :func:`embedded_default`
    on CPU. ``quantization="auto"``: 4-bit on CUDA for hub models, else none (folders load as saved)."""
    device = device or default_device()
    on_gpu = device.startswith("cuda")
    name = str(model or (GPU_DEFAULT if on_gpu else embedded_default()))
    if quantization == "auto":
        quantization = "4bit" if on_gpu and not Path(name).is_dir() else None
    return ModelChoice(name, device, quantization)


def load_default(model: str | Path | None = None, device: str | None = None,
                 quantization: str | None = "auto") -> tuple[Any, Any]:
    """Load what a notebook's parameters ask for (:func:`resolve`); prints what was loaded."""
    choice = resolve(model, device, quantization)
    loaded = load(choice.name, quantization=choice.quantization, device=choice.device)
    spec = loaded[0].vh_spec
    print(f"loaded {spec.name} on {choice.device} (quantization={choice.quantization}; {spec.layers} layers x "
          f"{spec.heads} heads, {spec.kv_heads} kv heads){' - ' + spec.note if spec.note else ''}")
    return loaded


def default_models(gpu: Sequence[str], device: str | None = None) -> list[str | None]:
    """The model list a figure notebook runs when its parameter is left at ``None``.

    On CUDA: ``gpu`` (registry names, hub ids). On CPU: every committed organism (:func:`organism_folders`),
    or ``[None]`` when there is none, which :func:`load_default` turns into the tiny random-weight stand-in
    (its figures show code paths, not findings).
    """
    device = device or default_device()
    if device.startswith("cuda"):
        return list(gpu)
    return list(organism_folders()) or [None]


def iter_models(names: Sequence[str | None], device: str | None = None) -> Iterator[tuple[Any, Any]]:
    """Load each model in turn (``None``: the embedded default), yield ``(model, processor)``, free it after."""
    for name in names:
        model, processor = load_default(name, device=device)
        try:
            yield model, processor
        finally:
            del model, processor
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def rows_for(model: Any, rows: str | None = None) -> str:
    """The attention row to capture for ``model``: ``rows`` when given, else ``"answer"`` for every model.

    ``"answer"`` is the one rule of every notebook: the row that predicts the answer's first content token
    (``helpers.capture.first_content_index``). ``"first_generated"`` is the row the authors' code records.
    """
    if rows is not None:
        return rows
    return "answer"


def set_cpu_threads(threads: int | None, device: str | None = None) -> int:
    """Set torch's CPU thread count when running on CPU (``threads=None``: leave it); returns the count in use.

    The toy models are so small (hidden size 128) that extra threads only add synchronisation: on a
    machine shared with other jobs, 2 threads ran a toy forward pass 8x slower than 1 thread. On CUDA
    nothing changes.
    """
    device = device or default_device()
    if threads is not None and not device.startswith("cuda"):
        if threads < 1:
            raise ValueError(f"threads must be at least 1 (or None to leave torch's setting), got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------
# Samples


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


def choose(pool: Sequence[data.Sample], n: int, rng: random.Random) -> list[data.Sample]:
    """A random choice of at most ``n`` of ``pool`` drawn with ``rng``, kept in ``pool``'s order."""
    return [pool[i] for i in sorted(rng.sample(range(len(pool)), min(n, len(pool))))]


def samples(name: str, n: int | None = None, *, offset: int = 0, seed: int | None = None, split: str | None = None,
            data_files: Mapping[str, Any] | Any = None, image_folder: str | Path | None = None) -> data.SampleList:
    """The samples of data set ``name`` (see the module docstring): ``n`` of them after skipping ``offset``.

    ``n=None``: all. ``seed=None``: the first ``n``; else a seeded random choice of ``n`` (:func:`choose`).
    PointQA-style sets (``shapes``, ``pointqa``) are taken whole records at a time, so every question
    kind x prompt kind asked for gets the same records: ``ceil(n / kinds)`` records, truncated to ``n``;
    ``offset`` counts records there (samples elsewhere), so a held-out set is
    ``samples(name, n, offset=n_ranking_records)``. ``split``: a split of the shapes set (default
    ``test``). ``data_files``: local files of the benchmark's schema, or ``{benchmark: files}``
    (``pointqa`` needs ``image_folder``, ``pope`` / ``qbench`` files that store image paths too); without
    them the hub is used. Bad samples are skipped; the result's ``skipped`` lists them.
    """
    if n is not None and n < 1:
        raise ValueError(f"n_samples must be at least 1, got {n}")
    bench, qk, pk = parse_dataset(name)
    files = data_files.get(bench) if isinstance(data_files, Mapping) else data_files
    if split is not None and bench != data.SHAPES:
        raise ValueError(f"split={split!r}: only the shapes set has splits here; {bench} reads its files or its "
                         "pinned hub split")
    everything = n is None or seed is not None
    if bench in RECORD_SETS:
        per_record = len(qk) * len(pk)
        records = None if everything else offset + math.ceil(n / per_record)
        kwargs = {"question_kinds": qk, "prompt_kinds": pk, "limit": records, "on_error": "skip"}
        if bench == "pointqa":
            loaded = data.load_pointqa(files, image_folder, **kwargs)
        elif bench == "scenes-count":
            loaded = data.load_scenes_count(files, **kwargs)
        else:
            loaded = data.load_shapes(split=split or "test", **kwargs)
        pool = list(loaded)[offset * per_record:]
    else:  # prompt kinds named in ``name`` filter these sets too (before counting)
        named = pk != data.PROMPT_KINDS
        kwargs = {"limit": None if everything or named else offset + n, "on_error": "skip"}
        if image_folder is not None and bench in ("pope", "qbench"):
            kwargs["image_folder"] = image_folder
        loaded = data.load(bench, files, **kwargs)
        pool = [s for s in loaded if not named or s.prompt_kind in pk][offset:]
    chosen = pool if n is None else pool[:n] if seed is None else choose(pool, n, random.Random(seed))
    if not chosen:
        raise data.EmptySplitError(f"dataset {name!r}{f' (split {split})' if split else ''}: no samples left after "
                                   f"filtering and skipping {offset}; lower the offset or give more data")
    return data.SampleList(chosen, loaded.skipped)


def held_out(name: str, n: int, *, after: int, **kwargs: Any) -> data.SampleList:
    """``n`` samples of ``name`` that come after the first ``after`` samples other notebooks use (``samples(name,
    after)``): for PointQA-style sets the records after those samples' records, else the samples after them."""
    bench = parse_dataset(name)[0]
    skip = len({s.meta.get("record_id", s.id) for s in samples(name, after, **kwargs)}) if bench in RECORD_SETS \
        else after
    return samples(name, n, offset=skip, **kwargs)


def panels(name: str, n: int, *, seed: int = 0, split_by: str | None = "question_kind",
           prompt_kind: str | None = "visual", **kwargs: Any) -> dict[str, list[data.Sample]]:
    """Samples of ``name`` (all of :func:`samples`, ``kwargs`` passed on) grouped into figure panels.

    ``split_by``: a :class:`helpers.data.Sample` attribute whose values name the panels
    (``"question_kind"``: general / object / super for PointQA) or None for one panel.
    ``prompt_kind``: keep only ``"visual"`` or ``"plain"`` samples (None: both). Each panel is a
    seeded random choice (:func:`choose`, one ``random.Random(seed)`` across the panels) of at most ``n``
    samples, in data set order.
    """
    pool = [s for s in samples(name, **kwargs) if prompt_kind is None or s.prompt_kind == prompt_kind]
    groups: dict[str, list] = {}
    for s in pool:
        key = name if split_by is None else f"{name} {getattr(s, split_by)}"
        groups.setdefault(key, []).append(s)
    if not groups:
        raise ValueError(f"{name}: no samples with prompt_kind={prompt_kind!r}")
    rng = random.Random(seed)
    return {k: choose(v, n, rng) for k, v in groups.items()}


# ---------------------------------------------------------------------------------------------
# Held-out discipline

IDENTITY_KEYS = ("sample", "record", "image")
_IDENTITY_NAMES = {"sample": "sample id", "record": "record id", "image": "image"}


class OverlapError(ValueError):
    """Samples used to rank heads that are also evaluated (same sample, record or image); the message names them."""


def identities(items: Sequence[data.Sample] | Results, *, pixels: bool = False, what: str = "samples"
               ) -> dict[str, dict[tuple[str | None, str], str]]:
    """What identifies each sample of ``items`` (samples, or the :class:`helpers.results.Results` of a saved sweep).

    Returns ``{"sample" | "record" | "image": {(benchmark, value): a sample id with it}}``: the sample id, the record
    (:func:`helpers.data.record_id_of`) and the picture (:func:`helpers.data.image_id_of`; ``pixels``: always the
    pixel digest) of every sample. Ids count within their benchmark; a pixel digest (``"sha1:..."``) everywhere, so
    its benchmark is ``None``, as is that of results without a ``benchmark`` column. Results written before the
    ``record_id`` / ``image_id`` columns existed give records by sample id and no images, with a ``UserWarning``
    naming ``what``: record and image overlap cannot be checked for them.
    """
    if isinstance(items, Results):
        return _results_identities(items, what)
    out: dict[str, dict[tuple[str | None, str], str]] = {key: {} for key in IDENTITY_KEYS}
    digests: dict[Any, str] = {}  # a picture shared by the samples of one record is decoded once
    for s in items:
        out["sample"].setdefault((s.benchmark, str(s.id)), s.id)
        out["record"].setdefault((s.benchmark, data.record_id_of(s)), s.id)
        shared = str(s.image) if isinstance(s.image, (str, Path)) else id(s.image)
        if not pixels and s.meta.get("image_id") is not None:
            image = data.image_id_of(s)
        else:
            image = digests.get(shared) or digests.setdefault(shared, data.image_id_of(s, pixels=True))
        out["image"].setdefault((None if image.startswith("sha1:") else s.benchmark, image), s.id)
    return out


def _results_identities(res: Results, what: str) -> dict[str, dict[tuple[str | None, str], str]]:
    """:func:`identities` of saved results, from their table's ``sample_id``, ``record_id``, ``image_id`` columns."""
    table = res.table
    if "sample_id" not in table:
        raise ValueError(f"{what}: the results have no sample_id column (columns: {list(table.columns)}), so they "
                         "cannot be checked against the evaluation samples; recompute them with helpers.extract")
    ids = table["sample_id"].astype(str).tolist()
    benches = table["benchmark"].tolist() if "benchmark" in table else [None] * len(ids)
    records = table["record_id"].tolist() if "record_id" in table else [None] * len(ids)
    images = table["image_id"].tolist() if "image_id" in table else [None] * len(ids)
    unknown = sum(pd.isna(r) or pd.isna(i) for r, i in zip(records, images, strict=True))
    if unknown:
        warnings.warn(f"{what}: {unknown} of {len(ids)} saved samples have no record_id / image_id (written before "
                      "they were recorded): record and image overlap could not be checked for them, only sample ids. "
                      "Recompute the sweep to check them", UserWarning, stacklevel=3)
    out: dict[str, dict[tuple[str | None, str], str]] = {key: {} for key in IDENTITY_KEYS}
    for sid, bench, record, image in zip(ids, benches, records, images, strict=True):
        bench = None if pd.isna(bench) else str(bench)
        out["sample"].setdefault((bench, sid), sid)
        out["record"].setdefault((bench, sid if pd.isna(record) else str(record)), sid)
        if not pd.isna(image):
            out["image"].setdefault((None if str(image).startswith("sha1:") else bench, str(image)), sid)
    return out


def check_disjoint(rank: Sequence[data.Sample] | Results, evaluate: Sequence[data.Sample] | Results, *,
                   what: str = "ranking vs evaluation samples", keys: Sequence[str] = IDENTITY_KEYS,
                   pixels: bool = False, show: int = 5) -> None:
    """Raise :class:`OverlapError` when ``rank`` and ``evaluate`` share a sample, a record or a picture.

    Either side is a list of :class:`helpers.data.Sample` or the :class:`helpers.results.Results` of a saved sweep
    (its ``sample_id``, ``record_id``, ``image_id`` columns; older files without the last two are checked by
    sample id only, with a warning). What is compared (:func:`identities`): ``keys`` of ``"sample"`` (sample id),
    ``"record"`` (two question kinds of one PointQA record share it) and ``"image"`` (``meta["image_id"]``, else
    a digest of the pixels: two records on one picture share it; ``pixels=True``: always the digest, for sets
    generated from different seeds that reuse ids). The message starts with ``what``, counts each kind of
    overlap, names the first ``show`` of each and says how to take disjoint samples.
    """
    bad = [k for k in keys if k not in IDENTITY_KEYS]
    if bad or not keys:
        raise ValueError(f"keys={tuple(keys)!r}: pass one or more of {IDENTITY_KEYS}")
    a = identities(rank, pixels=pixels, what=f"{what} (first set)")
    b = identities(evaluate, pixels=pixels, what=f"{what} (second set)")
    parts = []
    for key in keys:
        shared = _shared(a[key], b[key])
        if not shared:
            continue
        name = _IDENTITY_NAMES[key]
        named = []
        for ident, (ida, idb) in shared[:show]:
            label = ident[1][:17] + "..." if ident[1].startswith("sha1:") else ident[1]
            named.append(label if key == "sample" else f"{label} (samples {ida} / {idb})")
        more = f", and {len(shared) - show} more" if len(shared) > show else ""
        parts.append(f"{len(shared)} {name}{'s' if len(shared) != 1 else ''} ({', '.join(named)}{more})")
    if parts:
        raise OverlapError(
            f"{what}: the two sets share {'; '.join(parts)}. Heads ranked on a sample must not be evaluated on it, "
            "nor on another question of its record or another record on its picture: take the evaluation samples "
            "after the ranking records (helpers.selection.samples(name, n, offset=<records in the ranking set>)), "
            "or from another split or seed")


def _shared(a: dict[tuple[str | None, str], str], b: dict[tuple[str | None, str], str]
            ) -> list[tuple[tuple[str | None, str], tuple[str, str]]]:
    """``[(identity, (sample id in a, sample id in b)), ...]`` for the identities in both, sorted.

    Benchmarks are compared only where both sides know them (results without a ``benchmark`` column match any).
    """
    by_value: dict[str, list[tuple[str | None, str]]] = {}
    for bench, value in b:
        by_value.setdefault(value, []).append((bench, value))
    out = []
    for ident in sorted(a, key=lambda i: (i[1], str(i[0]))):
        for other in by_value.get(ident[1], ()):
            if ident[0] is None or other[0] is None or ident[0] == other[0]:
                out.append((ident, (a[ident], b[other])))
                break
    return out
