"""Which models and which samples a notebook, a sweep or the explorer runs: the one place they are chosen.

    model, processor = selection.load_default(None)                 # by hardware: 4-bit GPU default, or an organism
    names = selection.default_models(gpu=["llava-v1.5-7b"])          # the list a figure notebook runs
    selection.samples("shapes/general/visual", 12)                     # the first 12 (whole records)
    selection.samples("shapes", 12, offset=4)                          # held out: after the first 4 records
    selection.samples("shapes", 12, seed=0)                            # a seeded random choice, in data set order
    selection.panels("shapes", 8, seed=0)                              # figure panels by question kind

Data set names: ``"shapes"`` (the embedded synthetic PointQA-style set, :data:`helpers.data.SHAPES`, every
question kind x prompt kind), ``"shapes/general"``, ``"shapes/visual"``, ``"shapes/object/plain"`` (one
question kind and / or prompt kind; PointQA-style sets only), the organisms' committed task sets
``"scenes-count"`` (PointQA-style, same naming: ``"scenes-count/object/visual"``), ``"scenes-pope"`` and
``"scenes-choice"`` (``data/scenes-*``), and the benchmarks of :data:`helpers.data.LOADERS`, read from local
files (``data_files``) or from the hub.
"""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import data
from .env import DATA_DIR, REPO_ROOT, default_device
from .models import load
from .offline import save as save_offline

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
