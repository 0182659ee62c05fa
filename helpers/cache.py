"""The extraction cache: one extraction (model, samples, settings) is computed once and read back after.

    key = cache.key("data/organisms/smollm2-lora", samples, settings={"rows": "answer", "k": 0.05})
    res = cache.read(key)                       # None when this extraction was never stored
    cache.write(key, res)                       # atomically, beside a JSON of what the key was made of

Every figure notebook, the explorer and the organisms' cards ask :mod:`helpers.runs` for per-head results;
it looks here first and loads a model only for what is missing, so the nine notebooks of one run extract
each (organism, task set) once. A key is the sha256 of four parts, so that any change recomputes:

- the **model**: for a folder, the digest of its files (content for files up to 64 MiB, else size and
  modification time) and of the folders its ``organism.json`` names (the shared vision tower); for a
  registry name or hub id, the name; plus the device and quantization it runs with;
- the **samples**: id, benchmark, prompt, answer, boxes, prompt kind and image content, in order;
- the **settings**: every keyword the extraction takes (rows, k, max_new_tokens, image_tokens, batch size, ...);
- the **code**: the digest of every ``helpers`` source file and the package version.

Folder: ``$VH_EXTRACT_CACHE``, else ``build/cache/extract`` in the repository; ``VH_EXTRACT_CACHE=off``
turns the cache off (every call computes).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from functools import cache as memo
from pathlib import Path
from typing import Any

from . import __version__, data
from .env import REPO_ROOT
from .results import Results, ResultsError
from .results import read as read_results
from .results import write as write_results

CACHE_ENV = "VH_EXTRACT_CACHE"
CONTENT_LIMIT = 64 * 2**20  # files up to this size are hashed by content, larger ones by size and time


def folder() -> Path | None:
    """The cache folder (``$VH_EXTRACT_CACHE`` or ``build/cache/extract``), or None when the cache is off."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in {"off", "0", "false", "no"}:
        return None
    return Path(value).expanduser() if value else REPO_ROOT / "build" / "cache" / "extract"


@memo
def code_digest() -> str:
    """sha256 (16 hex) of every ``helpers/*.py`` file and the package version: a code change recomputes."""
    h = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


def _file_part(path: Path, root: Path) -> bytes:
    stat = path.stat()
    if stat.st_size <= CONTENT_LIMIT:
        body = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        body = f"{stat.st_size}:{stat.st_mtime_ns}"
    return f"{path.relative_to(root)}={body};".encode()


def folder_digest(path: Path) -> str:
    """sha256 (16 hex) of every file below ``path`` but its ``.md`` cards (module docstring: large files)."""
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".md"):
        h.update(_file_part(file, path))
    return h.hexdigest()[:16]


def model_identity(model: str | Path) -> dict[str, str]:
    """What identifies ``model`` without loading it: its folder's digest (and the folders its ``organism.json``
    refers to), or the registry name / hub id as given."""
    path = Path(str(model)).expanduser()
    if not path.is_dir():
        return {"name": str(model)}
    found = {"folder": path.resolve().name, "files": folder_digest(path)}
    meta = path / "organism.json"
    if meta.is_file():
        refs = json.loads(meta.read_text()).get("vision_tower")
        if isinstance(refs, str) and (path / refs).is_dir():
            found["vision_tower"] = folder_digest((path / refs).resolve())
    return found


def _image_part(image: Any) -> str:
    if image is None:
        return "none"
    if isinstance(image, (str, Path)):
        path = Path(image)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(image)
    pixels = image.convert("RGB")
    return hashlib.sha256(f"{pixels.size}".encode() + pixels.tobytes()).hexdigest()


def samples_digest(samples: Sequence[data.Sample]) -> str:
    """sha256 (16 hex) of the samples in order: id, benchmark, prompt, answer, boxes, prompt kind and image."""
    h = hashlib.sha256()
    for s in samples:
        fields = [s.id, s.benchmark, s.prompt, str(s.answer), str(s.boxes), s.prompt_kind, _image_part(s.image)]
        h.update(json.dumps(fields, default=str).encode())
    return h.hexdigest()[:16]


def key(model: str | Path, samples: Sequence[data.Sample], *, settings: Mapping[str, Any],
        device: str = "cpu", quantization: str | None = None) -> str:
    """The cache key (24 hex) of extracting ``samples`` with ``model`` under ``settings``."""
    parts = {"model": model_identity(model), "device": device, "quantization": quantization,
             "samples": samples_digest(samples), "n": len(samples), "settings": dict(settings),
             "code": code_digest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def read(cache_key: str) -> Results | None:
    """The stored results of ``cache_key``, or None (cache off, never stored, or unreadable: recomputed)."""
    root = folder()
    path = None if root is None else root / f"{cache_key}.parquet"
    if path is None or not path.is_file():
        return None
    try:
        return read_results(path)
    except ResultsError as err:
        print(f"extraction cache: {path.name} cannot be read ({err}); computing again")
        return None


def write(cache_key: str, results: Results, *, described: Mapping[str, Any] | None = None) -> Path | None:
    """Store ``results`` under ``cache_key`` (atomically), with ``described`` beside it as JSON; None when off."""
    root = folder()
    if root is None:
        return None
    path = write_results(results, root / f"{cache_key}.parquet")
    if described is not None:
        tmp = root / f".{cache_key}.json.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(dict(described), indent=1, sort_keys=True, default=str) + "\n")
        os.replace(tmp, root / f"{cache_key}.json")
    return path
