"""Figures: every notebook saves through :func:`save_figure` (PNG and PDF, one folder)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

from .env import figure_dir

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

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


def pointqa_examples(samples: list, n_records: int = 3, title: str | None = None) -> matplotlib.figure.Figure:
    """Figure 2: example PointQA entries, one row per record.

    Columns: the image as the model sees it with the visual prompt (red box drawn), with the plain
    prompt (nothing drawn), and the record's general / object / super questions with the answer.
    ``samples``: :class:`helpers.data.Sample` objects from a PointQA loader; the first ``n_records``
    records holding both prompt kinds are shown.
    """
    import matplotlib.pyplot as plt

    records: dict[str, dict] = {}
    for s in samples:
        records.setdefault(s.meta["record_id"], {})[(s.question_kind, s.prompt_kind)] = s
    chosen = [r for r in records.values() if {p for _, p in r} >= {"visual", "plain"}][:n_records]
    if not chosen:
        raise ValueError("no record with both a visual and a plain sample; load with prompt_kinds=('visual', 'plain')")
    fig, axes = plt.subplots(len(chosen), 3, figsize=(10, 3.2 * len(chosen)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.6]})
    for row, record in zip(axes, chosen, strict=True):
        visual = next(s for (_, p), s in record.items() if p == "visual")
        plain = next(s for (_, p), s in record.items() if p == "plain")
        for ax, sample, label in ((row[0], visual, "visual prompt (box drawn)"), (row[1], plain, "plain prompt")):
            ax.imshow(sample.model_image())
            ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        lines = [f"{visual.meta['record_id']}"]
        for kind in ("general", "object", "super"):
            s = record.get((kind, "visual")) or record.get((kind, "plain"))
            if s is not None:
                lines.append(f"{kind:>8s}: {s.question}")
        lines.append(f"{'answer':>8s}: {visual.meta.get('count', visual.answer)}")
        row[2].text(0.0, 0.5, "\n".join(lines), va="center", ha="left", family="monospace", fontsize=8.5,
                    wrap=True)
        row[2].axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def attention_vs_concentration(results: list, only_correct: bool = False, share_axes: bool = True,
                               cmap: str = "viridis") -> matplotlib.figure.Figure:
    """Figure 1: attention weight on the image (x) vs concentration (y), one point per head.

    ``results``: :class:`helpers.results.Results`, one per (model, dataset); panels form a grid
    with one row per model and one column per dataset, in order of first appearance. Each point is
    one (layer, head), its coordinates the means over samples (``only_correct``: over correctly
    answered samples only), its colour the layer. Each panel title ends with the accuracy.
    """
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model_name for r in results))
    datasets = list(dict.fromkeys(r.dataset for r in results))
    fig, axes = plt.subplots(len(models), len(datasets), figsize=(3.4 * len(datasets) + 0.8, 3.0 * len(models)),
                             squeeze=False, sharex=share_axes, sharey=share_axes)
    scatter = None
    for r in results:
        ax = axes[models.index(r.model_name), datasets.index(r.dataset)]
        w = r.per_head("weight", only_correct).flatten().numpy()
        c = r.per_head("concentration", only_correct).flatten().numpy()
        layers, heads = r.shape
        layer = [lyr for lyr in range(layers) for _ in range(heads)]
        scatter = ax.scatter(w, c, c=layer, cmap=cmap, s=10, alpha=0.8, vmin=0, vmax=max(layers - 1, 1))
        ax.set_title(f"{r.model_name}\n{r.dataset} · acc {r.accuracy:.1%}", fontsize=8.5)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("attention weight on image")
    for ax in axes[:, 0]:
        ax.set_ylabel("concentration")
    for ax in axes.flat:
        if not ax.collections:
            ax.axis("off")
    fig.tight_layout()
    if scatter is not None:
        fig.colorbar(scatter, ax=axes, label="layer", shrink=0.6, fraction=0.03)
    return fig


def patch_map(values: torch.Tensor, footprints: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """Paint per-patch ``values`` ``[n]`` into an ``image_size = (height, width)`` array (NaN where no patch).

    ``footprints``: ``[n, 4]`` ``(x1, y1, x2, y2)`` in original-image pixels (``helpers.layout``); each
    patch fills the pixels its footprint covers (nearest upsampling of the patch grid onto the image).
    NaN footprints (newline / CLS tokens) are skipped.
    """
    import numpy as np

    h, w = image_size
    out = np.full((h, w), np.nan, dtype=np.float32)
    for value, (x1, y1, x2, y2) in zip(values.tolist(), footprints.tolist(), strict=True):
        if np.isnan(x1):
            continue
        c1, r1 = max(int(np.floor(x1 + 0.5)), 0), max(int(np.floor(y1 + 0.5)), 0)
        c2, r2 = min(int(np.floor(x2 + 0.5)), w), min(int(np.floor(y2 + 0.5)), h)
        out[r1:max(r2, r1 + 1), c1:max(c2, c1 + 1)] = value
    return out


def head_attention_on_image(image: Image.Image, rows: torch.Tensor, heads: list[tuple[int, int]],
                            image_positions: torch.Tensor, geometry: Any, region: torch.Tensor | None = None,
                            boxes: tuple = (), view: int = 0, cmap: str = "magma",
                            title: str | None = None) -> matplotlib.figure.Figure:
    """The image, then one panel per ``(layer, head)``: that head's attention on the image tokens over the image.

    ``rows``: one sample's captured rows ``[layers, heads, keys]``; ``image_positions``: the key
    positions of its image tokens ``[n_image_tokens]`` in token order; ``geometry``: its
    ``helpers.layout.ImageGeometry`` (same order). Only tokens of ``view`` are drawn (0: the base
    view, the only one for LLaVA-1.5; 1: LLaVA-NeXT's high-resolution grid). Each patch's
    probability fills its footprint (patch grid upsampled to image pixels), colour scale per panel.
    ``region``: bool ``[n_image_tokens]``, the region tokens, outlined in cyan; ``boxes``: the
    question's boxes, dashed red. Panel titles give the head's attention weight on the whole image.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h, w = geometry.image_size
    in_view = geometry.view == view
    fig, axes = plt.subplots(1, len(heads) + 1, figsize=(3.0 * (len(heads) + 1), 3.3), squeeze=False)
    axes = axes[0]
    axes[0].imshow(image)
    axes[0].set_title("input (as the model sees it)", fontsize=9)
    for ax, (layer, head) in zip(axes[1:], heads, strict=True):
        values = rows[layer, head, image_positions].float()
        heat = patch_map(values[in_view], geometry.footprints[in_view], (h, w))
        ax.imshow(image, alpha=0.35)
        shown = ax.imshow(heat, cmap=cmap, alpha=0.8, extent=(0, w, h, 0), interpolation="nearest")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(f"layer {layer}, head {head}\nweight on image {float(values.sum()):.2f}", fontsize=9)
    for ax in axes:
        if region is not None:
            for x1, y1, x2, y2 in geometry.footprints[region & in_view].tolist():
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="cyan", linewidth=0.8))
        for x1, y1, x2, y2 in boxes:
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", linewidth=1.2,
                                   linestyle="--"))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# =============================================================================================
# Head explorer rendering (pure: arrays and figures in, figures / PNG bytes out; no widgets, no
# model). helpers.widgets wires these to controls. Imports kept with the section to ease merges.

from collections.abc import Sequence  # noqa: E402

import numpy as np  # noqa: E402


def head_attention_figure(image: np.ndarray, heat: np.ndarray, boxes: Sequence[Sequence[float]] = (),
                          title: str = "", cmap: str = "inferno", alpha: float = 0.6, vmin: float | None = 0.0,
                          size: float = 3.6) -> matplotlib.figure.Figure:
    """The ``image`` (``[height, width, 3]``; a PIL image works too) with an attention ``heat`` map
    ``[height, width]`` (:func:`patch_map`) over it.

    ``boxes``: region boxes ``(x1, y1, x2, y2)`` in pixels, drawn as cyan dashed outlines. The colour
    scale runs from ``vmin`` (default 0; ``None``: the map's minimum, which stretches small differences)
    to the map's maximum; a colourbar gives the values. Uses a bare
    :class:`matplotlib.figure.Figure` (no pyplot state, nothing is displayed by itself).
    """
    from matplotlib.patches import Rectangle

    fig, ax, cax = _map_axes(size, left=0.02, bottom=0.02)
    ax.imshow(np.asarray(image))
    finite = heat[np.isfinite(heat)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    low = (float(finite.min()) if finite.size else 0.0) if vmin is None else vmin
    shown = ax.imshow(np.ma.masked_invalid(heat), cmap=cmap, alpha=alpha, vmin=min(low, vmax), vmax=vmax,
                      interpolation="nearest")
    for x1, y1, x2, y2 in boxes:
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor="cyan", lw=1.5,
                               ls="--"))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    fig.colorbar(shown, cax=cax).ax.tick_params(labelsize=7)
    return fig


def _map_axes(size: float, left: float, bottom: float) -> tuple[matplotlib.figure.Figure, matplotlib.axes.Axes,
                                                               matplotlib.axes.Axes]:
    """A bare Figure with a map axes and a colourbar axes at fixed places (faster than tight_layout)."""
    from matplotlib.figure import Figure

    width = size + 0.9
    fig = Figure(figsize=(width, size), dpi=80)
    right = 1 - 0.75 / width
    ax = fig.add_axes((left, bottom, right - left - 0.03, 0.86 - bottom))
    cax = fig.add_axes((right, bottom + 0.02, 0.18 / width, 0.82 - bottom))
    return fig, ax, cax


def head_score_figure(scores: np.ndarray, selected: Sequence[tuple[int, int]] = (), title: str = "",
                      cmap: str = "viridis", size: float = 3.6) -> matplotlib.figure.Figure:
    """Layer x head score map ``scores [layers, heads]`` (layer 0 at the top), ``selected`` heads ringed.

    NaN cells (no sample counts, e.g. a detection score without correct answers) are left blank.
    """
    scores = np.asarray(scores, dtype=np.float64)
    layers, heads = scores.shape
    fig, ax, cax = _map_axes(size, left=0.15, bottom=0.12)
    shown = ax.imshow(np.ma.masked_invalid(scores), cmap=cmap, aspect="auto", interpolation="nearest")
    if selected:
        ax.scatter([h for _, h in selected], [lyr for lyr, _ in selected], s=max(8.0, 900.0 / max(layers, heads)),
                   facecolors="none", edgecolors="red", linewidths=1.5)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("head", fontsize=8)
    ax.set_ylabel("layer", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=8)
    fig.colorbar(shown, cax=cax).ax.tick_params(labelsize=7)
    return fig


def figure_png(fig: matplotlib.figure.Figure) -> bytes:
    """PNG bytes of ``fig`` (Agg, no pyplot), e.g. for an ``ipywidgets.Image``."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches=None)
    return buffer.getvalue()
