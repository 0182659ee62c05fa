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
