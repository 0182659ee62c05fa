"""Figures: every notebook saves through :func:`save_figure` (PNG and PDF, one folder)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from .env import figure_dir

matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


def save_figure(fig: matplotlib.figure.Figure, name: str, folder: Path | None = None) -> list[Path]:
    """Save ``fig`` as ``name.png`` and ``name.pdf`` in ``folder`` (default :func:`helpers.env.figure_dir`).

    Returns the two paths written.
    """
    folder = Path(folder) if folder is not None else figure_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.{ext}" for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path)
    return paths
