"""head_results on a tiny random model and embedded samples; Figure 1 plot from its results."""

from __future__ import annotations

import matplotlib
import torch

from helpers import data, extract, metrics, offline, plots

matplotlib.use("Agg")


def test_head_results_and_figure_1(tmp_path):
    """About 10 s on the shared CI machine (model build plus two generate calls of 600-token prompts)."""
    model, processor = offline.build("llava-v1.5-7b", tiny=True, layers=3)
    samples = [s for s in data.load_shapes() if s.question_kind == "general"][:3]
    res = extract.head_results(model, processor, samples, batch_size=2, dataset="shapes general")
    n, layers, heads = len(samples), 3, 4
    for name in ("weight", "concentration", "region_weight", "region_share", "region_hits"):
        assert getattr(res, name).shape == (n, layers, heads)
    assert ((res.weight > 0) & (res.weight <= 1)).all() and ((res.concentration >= 0) & (res.concentration <= 1)).all()
    assert (res.region_weight <= res.weight + 1e-6).all()
    assert len(res.outputs) == n and res.correct.dtype == torch.bool and 0 <= res.accuracy <= 1
    assert res.per_head("weight").shape == (layers, heads)
    assert torch.allclose(res.per_head("weight"), metrics.aggregate(res.weight).mean)
    fig = plots.attention_vs_concentration([res])
    paths = plots.save_figure(fig, "fig1", tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)
