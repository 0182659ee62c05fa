"""extract.head_results on a tiny random model and embedded samples; Figure 1 plot from its results."""

from __future__ import annotations

import matplotlib
import torch

from helpers import capture, data, extract, metrics, offline, plots

matplotlib.use("Agg")


def test_run_scores_every_head_and_feeds_figure_1(tmp_path):
    """About 10 s on the shared CI machine (model build plus two generate calls of 600-token prompts)."""
    model, processor = offline.build("llava-v1.5-7b", tiny=True, layers=3)
    samples = [s for s in data.load_shapes() if s.question_kind == "general"][:3]
    res = extract.head_results(model, processor, samples, batch_size=2, dataset="shapes general")
    n, layers, heads = len(samples), 3, 4
    assert set(res.scores) == set(extract.SCORES)
    for name in extract.SCORES:
        assert res.scores[name].shape == (n, layers, heads)
    w, c = res.scores["weight"], res.scores["concentration"]
    assert ((w > 0) & (w <= 1)).all() and ((c >= 0) & (c <= 1)).all()
    assert (res.scores["region_weight"] <= w + 1e-6).all()
    assert res.table["index"].tolist() == [0, 1, 2] and res.table["n_image_tokens"].tolist() == [576] * 3
    assert len(res.table["prediction"]) == n and res.table["correct"].dtype == bool and 0 <= res.accuracy <= 1
    assert res.per_head("weight").shape == (layers, heads)
    torch.testing.assert_close(torch.from_numpy(res.per_head("weight")), metrics.aggregate(torch.from_numpy(w)).mean)
    assert res.model_name.startswith("llava-v1.5-7b") and res.dataset == "shapes general"
    fig = plots.attention_vs_concentration([res])
    paths = plots.save_figure(fig, "fig1", tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def test_eager_check_compares_the_analysed_rows_with_eager_attention():
    """About 5 s: a 2-layer tiny LLaVA-1.5 (float32), 2 samples of different lengths (left padded)."""
    model, processor = offline.build("llava-v1.5-7b", tiny=True, layers=2, seed=1)
    by_id = {s.id: s for s in data.load_shapes(limit=1)}
    samples = [by_id["shapes-0000:general:visual"], by_id["shapes-0000:super:plain"]]
    check = extract.eager_check(model, processor, samples, max_new_tokens=3)
    assert check.dtype == "float32" and (check.atol, check.rtol) == (1e-5, 0.0)
    assert check.samples == 2 and check.rows == 2 * 2 * 4
    assert check.agrees and 0 < check.max_abs_diff <= 1e-5  # equal to rounding, not identically zero
    assert capture.language_model(model).config._attn_implementation == "sdpa"  # switched back


def test_sink_table_per_layer():
    import numpy as np
    import pandas as pd

    from helpers.results import Results

    rng = np.random.default_rng(0)
    first = rng.uniform(0, 1, (2, 2, 3)).astype(np.float32)
    weight = rng.uniform(0.01, 0.5, (2, 2, 3)).astype(np.float32)
    uniform = np.array([0.1, 0.3], dtype=np.float32)[:, None, None]
    res = Results(pd.DataFrame({"sample_id": ["a", "b"], "correct": [True, False]}),
                  {"first_key_share": first, "weight": weight, "weight_vs_uniform": weight / uniform})
    table = res.sink_table()
    assert table["layer"].tolist() == [0, 1]
    np.testing.assert_allclose(table["first_token"], first.mean(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(table["first_token_top"], first.mean(0).max(1), rtol=1e-6)
    np.testing.assert_allclose(table["image_weight"], weight.mean(axis=(0, 2)), rtol=1e-6)
    np.testing.assert_allclose(table["uniform_share"], 0.2, rtol=1e-5)
    np.testing.assert_allclose(table["weight_vs_uniform"], (weight / uniform).mean(axis=(0, 2)), rtol=1e-5)
