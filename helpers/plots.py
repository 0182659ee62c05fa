"""Figures: every notebook saves through :func:`save_figure` (PNG and PDF, one folder)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd

from .env import figure_dir
from .metrics import wilson_interval

if TYPE_CHECKING:
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


def sample_examples(samples: Sequence[Any], title: str | None = None, width: int = 34) -> matplotlib.figure.Figure:
    """One column per sample: the image as the model sees it (:meth:`helpers.data.Sample.model_image`: a visual
    prompt's box drawn), and under it the data set, the question, the options (lettered) and the gold answer,
    wrapped at ``width`` characters. ``samples``: :class:`helpers.data.Sample` objects of any task set."""
    import textwrap

    import matplotlib.pyplot as plt

    if not samples:
        raise ValueError("no samples to show")
    fig, axes = plt.subplots(2, len(samples), figsize=(3.3 * len(samples), 5.0), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 0.5]})
    for (img_ax, text_ax), s in zip(axes.T, samples, strict=True):
        img_ax.imshow(s.model_image())
        img_ax.set_title(f"{s.benchmark} ({s.prompt_kind} prompt)", fontsize=9)
        img_ax.set_xticks([])
        img_ax.set_yticks([])
        lines = textwrap.wrap(s.question, width)
        lines += [f"{chr(65 + i)}. {o}" for i, o in enumerate(s.options)]
        lines.append(f"gold: {s.answer}")
        text_ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8.5)
        text_ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def attention_vs_concentration(results: list, only_correct: bool = False, share_axes: bool = True,
                               cmap: str = "viridis", title: str | None = None) -> matplotlib.figure.Figure:
    """Figure 1: attention weight on the image (x) vs concentration (y), one point per head.

    ``results``: :class:`helpers.results.Results`, one per (model, dataset); panels form a grid
    with one row per model and one column per dataset, in order of first appearance. Each point is
    one (layer, head), its coordinates the means over samples (``only_correct``: over correctly
    answered samples only; :meth:`Results.per_head` defaults, so concentration is ``W``-weighted), its colour
    the layer's normalised depth (layer / last layer, so models of different depth share one colour bar). Each
    panel title names the model and the data set and ends with the accuracy and its 95% Wilson interval.
    ``title``: the figure's title.
    """
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model_name for r in results))
    datasets = list(dict.fromkeys(r.dataset for r in results))
    fig, axes = plt.subplots(len(models), len(datasets), figsize=(3.4 * len(datasets) + 0.8, 3.0 * len(models)),
                             squeeze=False, sharex=share_axes, sharey=share_axes)
    scatter = None
    for r in results:
        ax = axes[models.index(r.model_name), datasets.index(r.dataset)]
        w = r.per_head("weight", only_correct).flatten()
        c = r.per_head("concentration", only_correct).flatten()
        layers, heads = r.shape
        depth = [lyr / max(layers - 1, 1) for lyr in range(layers) for _ in range(heads)]
        scatter = ax.scatter(w, c, c=depth, cmap=cmap, s=10, alpha=0.8, vmin=0, vmax=1)
        correct, n = int(r.correct_mask().sum()), len(r)
        low, high = wilson_interval(correct, n)
        ax.set_title(f"{r.model_name}\n{r.dataset} · acc {correct / max(n, 1):.2f} [{low:.2f}, {high:.2f}]",
                     fontsize=8.5)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("attention weight on image")
    for ax in axes[:, 0]:
        ax.set_ylabel("concentration")
    for ax in axes.flat:
        if not ax.collections:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if scatter is not None:
        fig.colorbar(scatter, ax=axes, label="depth (layer / last layer)", shrink=0.6, fraction=0.03)
    return fig


def patch_map(values: torch.Tensor, footprints: torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """Paint per-patch ``values`` ``[n]`` into an ``image_size = (height, width)`` array (NaN where no patch).

    ``footprints``: ``[n, 4]`` ``(x1, y1, x2, y2)`` in original-image pixels (``helpers.layout``); each
    patch fills the pixels its footprint covers (nearest upsampling of the patch grid onto the image).
    NaN footprints (newline / CLS tokens) are skipped.
    """

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


# ======================================================================================
# Head explorer rendering (pure: arrays and figures in, figures / PNG bytes out; no widgets, no
# model). helpers.widgets wires these to controls.


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

# ---------------------------------------------------------------------------------------------
# Figures 3-8 (notebooks 05-08)


def _stamp(fig: matplotlib.figure.Figure, title: str | None) -> None:
    if title:
        fig.suptitle(title, fontsize=10)


def _integer_ticks(ax: matplotlib.axes.Axes, nbins: int = 6) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=nbins, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=nbins, integer=True))


def _annotate(ax: matplotlib.axes.Axes, values: object, limit: float = 1.0, fontsize: float = 7) -> None:
    """Write each finite cell value of a heatmap, white on dark cells."""

    for (i, j), v in np.ndenumerate(np.asarray(values, dtype=float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if abs(v) > 0.6 * limit else "black")


def layer_head_maps(maps: dict, title: str | None = None, cmap: str = "viridis", diverging: bool = False
                    ) -> matplotlib.figure.Figure:
    """Figure 3: layer x head heatmaps, one column per condition and one row per score.

    ``maps``: condition -> {score label -> ``[layers, heads]`` array}, e.g.
    ``{"visual": {"image attention": w_visual, "region attention": r_visual}, "plain": {...}}``.
    Each row (score) shares one colour scale and one colour bar, so conditions compare by eye;
    ``diverging``: a zero-centred red-blue scale for difference maps. Layer 0 is the top row of each map.
    """
    import matplotlib.pyplot as plt

    cols = list(maps)
    rows = list(dict.fromkeys(label for c in cols for label in maps[c]))
    if not rows or not cols:
        raise ValueError("no maps to draw")
    first = np.asarray(maps[cols[0]][rows[0]])
    height = 2.6 * min(max(first.shape[0] / max(first.shape[1], 1), 0.6), 1.6)
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False, layout="constrained",
                             figsize=(2.7 * len(cols) + 1.0, height * len(rows) + 0.5))
    for i, label in enumerate(rows):
        vals = np.concatenate([np.ravel(maps[c][label]) for c in cols if label in maps[c]]).astype(float)
        vals = vals[np.isfinite(vals)]
        lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
        if diverging:
            lo, hi = -(max(abs(lo), abs(hi)) or 1.0), max(abs(lo), abs(hi)) or 1.0
        im = None
        for j, cond in enumerate(cols):
            ax = axes[i, j]
            if label not in maps[cond]:
                ax.axis("off")
                ax.text(0.5, 0.5, "not computed", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                continue
            im = ax.imshow(np.asarray(maps[cond][label], dtype=float), aspect="auto", interpolation="nearest",
                           cmap="RdBu_r" if diverging else cmap, vmin=lo, vmax=hi)
            ax.set_title(cond, fontsize=9)
            _integer_ticks(ax)
            ax.tick_params(labelsize=7, labelleft=j == 0, labelbottom=i == len(rows) - 1)
            if i == len(rows) - 1:
                ax.set_xlabel("head", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{label}\nlayer", fontsize=8)
        if im is not None:
            fig.colorbar(im, ax=list(axes[i]), shrink=0.9, pad=0.01)
    _stamp(fig, title)
    return fig


def layer_profiles(profiles: dict, ylabel: str, title: str | None = None, styles: dict | None = None,
                   ax: matplotlib.axes.Axes | None = None) -> matplotlib.figure.Figure:
    """Per-layer curves on relative depth: ``profiles`` label -> ``[layers]`` (layer ``l`` of ``L`` at ``(l+0.5)/L``).

    Models of different depth share one axis. ``styles``: label -> matplotlib line keyword arguments.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
    else:
        fig = ax.figure
    for label, prof in profiles.items():
        prof = np.asarray(prof, dtype=float)
        depth = (np.arange(len(prof)) + 0.5) / len(prof)
        ax.plot(depth, prof, marker="o", ms=3, label=label, **(styles or {}).get(label, {}))
    ax.set_xlabel("relative depth (layer + 0.5) / layers")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def agreement_matrices(matrices: dict, families: dict | None = None, title: str | None = None,
                       vmin: float = -1.0, vmax: float = 1.0) -> matplotlib.figure.Figure:
    """Figure 4: model x model agreement heatmaps, one panel per ``matrices`` entry (label -> square DataFrame).

    Cells are annotated with their value (the diagonal holds what the matrices hold there, e.g. split-half
    agreement); ``families`` (name -> family) adds the family to the tick labels
    and draws lines between families (models are expected grouped by family).
    """
    import matplotlib.pyplot as plt

    n = max(len(m) for m in matrices.values())
    side = min(max(2.6, 0.55 * n + 1.2), 7.0)
    fig, axes = plt.subplots(1, len(matrices), squeeze=False, layout="constrained",
                             figsize=(side * len(matrices) + 2.5, side + 1.6))
    im = None
    for i, (ax, (label, mat)) in enumerate(zip(axes[0], matrices.items(), strict=True)):
        names = list(mat.index)
        values = mat.to_numpy(dtype=float)
        im = ax.imshow(values, cmap="RdBu_r", vmin=vmin, vmax=vmax)
        ticks = [f"{n}\n({families[n]})" if families and n in families else n for n in names]
        ax.set_xticks(range(len(names)), ticks, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), ticks if i == 0 else [""] * len(names), fontsize=7)
        _annotate(ax, values, max(abs(vmin), abs(vmax)))
        if families:
            fam = [families.get(n, n) for n in names]
            for i in range(1, len(fam)):
                if fam[i] != fam[i - 1]:
                    ax.axhline(i - 0.5, color="k", lw=1)
                    ax.axvline(i - 0.5, color="k", lw=1)
        diagonal = mat.attrs.get("diagonal")
        ax.set_title(f"{label}\n(diagonal: {diagonal})" if diagonal else label, fontsize=9)
    _stamp(fig, title)
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    return fig


def dataset_consistency(tables: dict, title: str | None = None) -> matplotlib.figure.Figure:
    """Figure 5: how one score per head changes across data sets, one row per model.

    ``tables``: :func:`helpers.agreement.dataset_consistency` (model name -> its profiles, matrix and
    variation). Columns: the layer profile (mean over heads) of the score on each data set; the data set x
    data set Pearson correlation of the per-head maps (on the diagonal the split-half correlation within the
    data set, the ceiling set by sampling noise); the coefficient of variation of each head across data sets.
    """
    import matplotlib.pyplot as plt

    models = list(tables)
    fig, axes = plt.subplots(len(models), 3, squeeze=False, figsize=(13.5, 3.4 * len(models) + 0.5),
                             gridspec_kw={"width_ratios": [1.3, 1, 1]})
    for row, name in zip(axes, models, strict=True):
        table = tables[name]
        score = table["score"]
        for dataset, (prof, accuracy) in table["profiles"].items():
            row[0].plot(np.arange(len(prof)), prof, marker="o", ms=3, label=f"{dataset} (acc {accuracy:.0%})")
        row[0].set_xlabel("layer")
        _integer_ticks(row[0])
        row[0].set_ylabel(f"mean {score} over heads")
        row[0].set_title(name, fontsize=9)
        row[0].grid(alpha=0.3)
        row[0].legend(fontsize=6.5)
        labels = list(table["matrix"].index)
        mat = table["matrix"].to_numpy(dtype=float)
        im = row[1].imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1)
        row[1].set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=6.5)
        row[1].set_yticks(range(len(labels)), labels, fontsize=6.5)
        _annotate(row[1], mat, fontsize=6.5)
        row[1].set_title(f"{name}: Pearson r of per-head {score}\n(diagonal: split-half reliability, Spearman-Brown)",
                         fontsize=8.5)
        fig.colorbar(im, ax=row[1], shrink=0.8)
        im = row[2].imshow(table["variation"], aspect="auto", interpolation="nearest", cmap="magma")
        row[2].set_title(f"{name}: variation across data sets (std/mean)", fontsize=9)
        row[2].set_xlabel("head")
        row[2].set_ylabel("layer")
        _integer_ticks(row[2])
        fig.colorbar(im, ax=row[2], shrink=0.8)
    _stamp(fig, title)
    fig.tight_layout()
    return fig


CONDITION_STYLE = {
    "top": {"color": "tab:red", "marker": "o", "label": "top visual heads"},
    "random": {"color": "tab:gray", "marker": "s", "label": "random heads, same stages"},
    "random_layer": {"color": "tab:brown", "marker": "x", "label": "random heads, same layers"},
    "early": {"color": "tab:blue", "marker": "^", "label": "early-stage heads"},
    "middle": {"color": "tab:green", "marker": "v", "label": "middle-stage heads"},
    "late": {"color": "tab:purple", "marker": "D", "label": "late-stage heads"},
}


def masking_curves(curve: pd.DataFrame, chance: float | None = None, title: str | None = None,
                   conditions: Sequence[str] | None = None) -> matplotlib.figure.Figure:
    """Our Figure 6: accuracy vs number of masked heads, one panel per model, one line per condition.

    ``curve``: :func:`helpers.ablation.curve_table` rows (``model``, ``condition``, ``k``, ``n_masked``,
    ``accuracy``). The x axis is the number of heads actually masked. ``chance``: a dashed line.
    """
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(curve["model"]))
    conditions = list(conditions or dict.fromkeys(curve["condition"]))
    fig, axes = plt.subplots(1, len(models), squeeze=False, figsize=(3.8 * len(models) + 0.4, 3.4), sharey=True)
    for ax, name in zip(axes[0], models, strict=True):
        part = curve[curve["model"] == name]
        for cond in conditions:
            sel = part[part["condition"] == cond].sort_values("k")
            if sel.empty:
                continue
            style = CONDITION_STYLE.get(cond, {"label": cond})
            ax.plot(sel["n_masked"], sel["accuracy"], ms=4, **style)
        if chance is not None:
            ax.axhline(chance, ls="--", color="k", lw=0.8, label="chance")
        total = int(part["total_heads"].iloc[0]) if "total_heads" in part else None
        ax.set_title(name + (f" ({total} heads)" if total else ""), fontsize=9)
        ax.set_xlabel("heads masked")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7)
    _stamp(fig, title)
    fig.tight_layout()
    return fig


def stage_distribution(table: pd.DataFrame, title: str | None = None) -> matplotlib.figure.Figure:
    """Our Figure 7: share of each model's top visual heads per stage (bars) vs the stage's share of all heads (ticks).

    ``table``: :func:`helpers.ablation.stage_distribution_table` rows (``model``, ``stage``, ``top``, ``all``, ``k``).
    """
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(table["model"]))
    stages = list(dict.fromkeys(table["stage"]))
    colors = {"early": "tab:blue", "middle": "tab:green", "late": "tab:purple"}
    width = 0.8 / len(stages)
    fig, ax = plt.subplots(figsize=(1.6 * len(models) + 2.5, 3.4))
    x = np.arange(len(models))
    for i, stage in enumerate(stages):
        sel = table[table["stage"] == stage].set_index("model").reindex(models)
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(pos, sel["top"], width, color=colors.get(stage), label=f"{stage}: share of top heads")
        ax.scatter(pos, sel["all"], marker="_", s=300, color="k", zorder=3,
                   label="share of all heads (random placement)" if i == 0 else None)
    ks = table.groupby("model", sort=False)["k"].first().reindex(models)
    ax.set_xticks(x, [f"{m}\n(top {k})" for m, k in ks.items()], fontsize=7.5)
    ax.set_ylabel("share of heads")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper right")
    _stamp(fig, title)
    fig.tight_layout()
    return fig


def concentration_accuracy(binned: pd.DataFrame, grouped: pd.DataFrame, title: str | None = None
                           ) -> matplotlib.figure.Figure:
    """Our Figure 8: accuracy vs concentration of the top visual heads.

    Left: samples binned by that concentration (:func:`helpers.ablation.concentration_accuracy`, ``binned``),
    one line per model. Right: one point per model and question kind x prompt kind (``grouped``), marker by
    prompt kind.
    """
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    models = list(dict.fromkeys(binned["model"]))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
    for m in models:
        sel = binned[binned["model"] == m]
        left.plot(sel["concentration"], sel["accuracy"], marker="o", color=colors[m], label=m)
    left.set_xlabel("mean concentration of top visual heads (sample bin)")
    left.set_ylabel("accuracy")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    markers = {"visual": "o", "plain": "s"}
    for row in grouped.itertuples():
        right.scatter(row.concentration, row.accuracy, color=colors.get(row.model, "k"),
                      marker=markers.get(getattr(row, "prompt_kind", ""), "^"), s=30)
        right.annotate(str(getattr(row, "question_kind", ""))[:3], (row.concentration, row.accuracy), fontsize=6.5,
                       xytext=(3, 2), textcoords="offset points")
    for kind, marker in markers.items():
        right.scatter([], [], color="gray", marker=marker, label=f"{kind} prompt")
    right.set_xlabel("mean concentration of top visual heads (group)")
    right.set_ylabel("accuracy")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    _stamp(fig, title)
    fig.tight_layout()
    return fig


def model_layer_profiles(results_list: Sequence, scores: dict | Sequence[str] = ("weight", "region_weight"),
                         title: str | None = None) -> matplotlib.figure.Figure:
    """Per-layer mean of each score for every result (one line per model and data set), one panel per score.

    Layers are placed on relative depth (:func:`layer_profiles`), so 32- and 40-layer models share an axis:
    the LLaVA-1.5 vs 1.6 comparison of Figure 3.
    """
    import matplotlib.pyplot as plt

    labels = dict(scores) if isinstance(scores, dict) else {s: s for s in scores}
    fig, axes = plt.subplots(1, len(labels), squeeze=False, figsize=(5.2 * len(labels), 3.6))
    multi = len({r.dataset for r in results_list}) > 1
    for ax, (label, name) in zip(axes[0], labels.items(), strict=True):
        profiles = {(f"{r.model_name} · {r.dataset}" if multi else r.model_name): r.layer_profile(name)
                    for r in results_list if name in r.scores}
        layer_profiles(profiles, "mean over heads", title=label, ax=ax)
    _stamp(fig, title)
    fig.tight_layout()
    return fig


def agreement_intervals(table: pd.DataFrame, labels: Sequence[str], *, group: str | None = None,
                        margin: float | None = None, title: str | None = None) -> matplotlib.figure.Figure:
    """Agreement judged against sampling noise, one row per comparison (Figures 3-5 of the organisms' notebooks).

    ``table``: rows with :func:`helpers.agreement.map_agreement`'s fields. Each row: the disattenuated agreement
    ``ratio`` with its 95% interval (dot and bar; 1, the solid line, is as well as two noisy measurements of one
    true map agree) and, as a grey cross, the full-sample ``r`` divided by the ``ceiling``. ``labels``: the columns
    joined into each row's label (name the basis there when rows differ in basis). ``group``: a column whose values
    colour the dots. ``margin``: a dashed line (the verdicts' threshold, :data:`helpers.findings.SAME_PATTERN`).
    """
    import matplotlib.pyplot as plt

    if not len(table):
        raise ValueError("no comparisons to draw")
    names = [" · ".join(str(row[c]) for c in labels) for _, row in table.iterrows()]
    groups = list(dict.fromkeys(table[group])) if group else [None]
    colors = {g: f"C{i}" for i, g in enumerate(groups)}
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(table) + 1.6))
    y = np.arange(len(table))[::-1]
    for yi, (_, row) in zip(y, table.iterrows(), strict=True):
        color = colors[row[group]] if group else "C0"
        ax.errorbar(row["ratio"], yi, xerr=[[row["ratio"] - row["ratio low"]], [row["ratio high"] - row["ratio"]]],
                    fmt="o", ms=4, color=color, capsize=2)
        ax.plot([row["r"] / row["ceiling"]], [yi], marker="x", ms=5, color="0.5")
    if group:
        for g in groups:
            ax.plot([], [], "o", color=colors[g], label=f"{group}: {g}")
    ax.plot([], [], "x", color="0.5", label="full-sample r / noise ceiling")
    ax.axvline(1, color="k", lw=1, label="noise ceiling (one true map)")
    if margin is not None:
        ax.axvline(margin, color="k", lw=1, ls="--", label=f"verdict threshold {margin:g}")
    ax.axvline(0, color="gray", lw=0.8)
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlabel("agreement / noise: cross-half r / sqrt(within a x within b), 95% bootstrap interval")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.5 / (0.32 * len(table) + 1.6) - 0.06),
              ncol=2, frameon=False)
    _stamp(fig, title)
    fig.tight_layout()
    return fig


def figure_name(*parts: object) -> str:
    """A file-name-safe figure name from parts (model names, data sets): ``fig3_toy-a1_shapes``."""
    import re

    text = "_".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "figure"
