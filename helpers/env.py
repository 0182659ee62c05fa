"""Switches read from the environment. Nothing here holds state; every function reads afresh.

- ``VH_FAST=1``: notebooks and sweeps use few samples and the tiniest models (CI, quick checks).
- ``VH_FIGURES``: folder where figures are written (default ``figures/`` in the working directory).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

FAST_ENV = "VH_FAST"
FIGURES_ENV = "VH_FIGURES"

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"


def fast_mode() -> bool:
    """True when ``VH_FAST`` is set to a true value (1, true, yes)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def pick(fast: object, full: object) -> object:
    """Return ``fast`` in fast mode, else ``full`` (for notebook parameter cells)."""
    return fast if fast_mode() else full


def figure_dir() -> Path:
    """Folder for figures, created if missing: ``$VH_FIGURES`` or ``./figures``."""
    path = Path(os.environ.get(FIGURES_ENV, "figures")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_device() -> str:
    """``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"
