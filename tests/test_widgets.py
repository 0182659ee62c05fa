"""Head explorer (helpers.widgets) driven headless: set controls, click buttons, check state and renders.

The explorer runs a tiny random LLaVA-1.5 (2 layers x 4 heads, real 24x24 image grid) once per module;
a LLaVA-1.6 (anyres) explorer checks the two views. Rendering functions are tested on their own.
"""

from __future__ import annotations

import io
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import cache, capture, data, extract, layout, models, offline, plots, runs, selection, widgets

matplotlib.use("Agg")


class CallCounter:
    """Counts forward calls of a model (generate calls forward once per step)."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.calls += 1


@pytest.fixture(scope="module")
def llava():
    model, processor = offline.build("llava-v1.5-7b", tiny=True, layers=2, seed=0)
    return model, processor


@pytest.fixture(scope="module")
def samples():
    """Visual general, visual super (two words longer: the first batch is left padded), plain general."""
    by_id = {s.id: s for s in data.load_shapes(limit=1)}
    return [by_id[f"shapes-0000:{kind}"] for kind in ("general:visual", "super:visual", "general:plain")]


@pytest.fixture(scope="module")
def explorer(llava, samples):
    """About 5 s: one generate and one forward over 3 samples of 600-token prompts."""
    model, processor = llava
    return widgets.HeadExplorer(model, processor, samples, batch_size=2)  # two batches, different padding


def png_array(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_cache_matches_the_scored_rows(explorer):
    res, cache = explorer.cache.results, explorer.cache
    assert res.table["n_image_tokens"].tolist() == [576] * 3
    assert len(cache.image_rows) == 3 and all(r.shape == (2, 4, 576) for r in cache.image_rows)
    weights = np.stack([r.sum(-1) for r in cache.image_rows])  # [samples, layers, heads]
    np.testing.assert_allclose(weights, res.scores["weight"], rtol=1e-5, atol=1e-6)
    for i, s in enumerate(explorer.samples):
        expected = layout.region_token_mask(explorer.processor, cache.geometries[i].image_size, s.boxes).numpy()
        np.testing.assert_array_equal(cache.region[i], expected)
    assert res.table["sample_id"].tolist() == [s.id for s in explorer.samples]
    assert cache.baseline.answers == res.table["prediction"].tolist()
    assert ((cache.baseline.prob > 0) & (cache.baseline.prob < 1)).all()


def test_head_change_rerenders_from_cache_without_model_calls(explorer, llava):
    counter = CallCounter(llava[0])
    try:
        explorer.pinned = []
        explorer.pick(0, 0)
        before_png, before_heat = explorer.attention_image.value, explorer.heat.copy()
        before_map = explorer.score_image.value
        explorer.head.value = 2  # slider
        assert explorer.selected == [(0, 2)]
        assert explorer.attention_image.value != before_png and explorer.score_image.value != before_map
        assert not np.allclose(explorer.heat, before_heat, equal_nan=True)
        assert png_array(explorer.attention_image.value).shape == png_array(before_png).shape
        # the painted map is the cached row: the pixel at each patch centre holds that token's attention
        geo, row = explorer.cache.geometries[0], explorer.cache.image_rows[0][0, 2]
        fp = geo.footprints.numpy()
        cy = ((fp[:, 1] + fp[:, 3]) / 2).astype(int).clip(0, geo.image_size[0] - 1)
        cx = ((fp[:, 0] + fp[:, 2]) / 2).astype(int).clip(0, geo.image_size[1] - 1)
        np.testing.assert_allclose(explorer.heat[cy, cx], row, rtol=1e-6)
        assert "L0 H2" in explorer.info.value and "query row" in explorer.info.value

        explorer.layer.value = 1
        assert explorer.selected == [(1, 2)]
        explorer.pin_button.click()
        explorer.head.value = 3
        assert explorer.selected == [(1, 2), (1, 3)]
        expected = (explorer.cache.image_rows[0][1, 2] + explorer.cache.image_rows[0][1, 3]) / 2
        np.testing.assert_allclose(widgets.selection_values(explorer.cache.image_rows[0], explorer.selected),
                                   expected, rtol=1e-6)
        explorer.clear_button.click()
        assert explorer.selected == [(1, 3)]

        png = explorer.attention_image.value
        explorer.stretch.value = True
        assert explorer.attention_image.value != png
        png = explorer.attention_image.value
        explorer.sample.value = 2  # another sample: another image and rows
        assert explorer.attention_image.value != png and explorer.samples[2].id in explorer.info.value

        target = explorer.top_buttons[-1]._vh_head
        explorer.top_buttons[-1].click()
        assert explorer.current == target
        explorer.grid_buttons[1, 1].click()
        assert explorer.current == (1, 1) and explorer.grid_buttons[1, 1].layout.border.startswith("2px")
        explorer.score.value = "weight"
        scores = explorer.scores()
        assert explorer.top()[0] == tuple(np.unravel_index(np.nanargmax(scores), scores.shape))
        assert f"{scores[explorer.top()[0]]:.4g}" in explorer.top_buttons[0].description
        explorer.k.value = 3
        explorer.top_k_button.click()
        assert sorted(explorer.selected) == sorted(explorer.top(3)) and explorer.top(3) == explorer.top()[:3]
    finally:
        counter.handle.remove()
    assert counter.calls == 0


def test_mask_selected_heads_and_rerun(explorer, llava, samples):
    """About 4 s: two masked runs of 3 samples."""
    model, processor = llava
    explorer.sample.value = 0
    every = [(layer, head) for layer in range(2) for head in range(4)]
    explorer.select(every)
    explorer.mask_mode.value = "zero"
    explorer.mask_button.click()
    masked = explorer.masked
    assert masked.heads == tuple(every) and masked.mode == "zero"
    assert not np.allclose(masked.prob, explorer.cache.baseline.prob, rtol=1e-3)
    assert "masked (8 heads, zero)" in explorer.mask_result.value
    assert f"{masked.prob[0]:.4g}" in explorer.mask_result.value and masked.answers[0] in explorer.mask_result.value
    assert explorer.mask_result.value.count("% of 3") == 2
    # the reported probability is P(gold) under mask_heads, and the model is unmasked afterwards
    with capture.mask_heads(model, every, mode="zero"):
        direct = np.exp(widgets.answer_logprob(model, processor, samples[:1]))
    np.testing.assert_allclose(masked.prob[:1], direct, rtol=1e-4)
    again = np.exp(widgets.answer_logprob(model, processor, samples[:1]))
    np.testing.assert_allclose(again, explorer.cache.baseline.prob[:1], rtol=1e-4)


def test_answer_logprob_is_the_teacher_forced_sum(llava, samples):
    model, processor = llava
    sample = samples[0]
    _, (text,) = data.model_inputs([sample], models.spec_of(model))
    full = processor(images=[sample.model_image()], text=[text + " " + sample.answer], return_tensors="pt")
    prompt = processor(images=[sample.model_image()], text=[text], return_tensors="pt")
    n = full["input_ids"].shape[1] - prompt["input_ids"].shape[1]
    assert n >= 1
    with torch.no_grad():
        logp = torch.log_softmax(model(**full).logits[0].float(), -1)
    ids = full["input_ids"][0]
    expected = sum(float(logp[p - 1, ids[p]]) for p in range(len(ids) - n, len(ids)))
    np.testing.assert_allclose(widgets.answer_logprob(model, processor, [sample]), [expected], rtol=1e-4)


def test_bad_input_names_the_problem(explorer, llava):
    with pytest.raises(ValueError, match="samples is empty"):
        widgets.HeadExplorer(*llava, [])
    with pytest.raises(ValueError, match="rows must be one of"):
        widgets.HeadExplorer(*llava, explorer.samples, rows="middle")
    with pytest.raises(ValueError, match="out of range"):
        explorer.pick(2, 0)
    with pytest.raises(ValueError, match=r"\(0, 4\) is out of range"):
        explorer.select([(0, 1), (0, 4)])
    with pytest.raises(ValueError, match="view 'grid'"):
        widgets.view_heatmap(explorer.cache.geometries[0], np.ones(576), "grid")


def test_patch_map_follows_the_processor_geometry():
    crop = offline.build_processor("llava-v1.5-7b")
    geo = layout.image_geometry(crop, (100, 200))  # wide image: the centre crop drops the left and right
    values = np.arange(geo.n_tokens, dtype=float)
    heat = plots.patch_map(values, geo.footprints.numpy(), geo.image_size)
    assert heat.shape == (100, 200)
    assert np.isnan(heat[:, :45]).all() and np.isnan(heat[:, -45:]).all() and np.isfinite(heat[:, 55:145]).all()
    assert heat[0, 100] == values[12] and heat[99, 100] == values[23 * 24 + 12]  # top and bottom row, middle column
    one = np.zeros(geo.n_tokens)
    one[300] = 1.0
    painted = plots.patch_map(one, geo.footprints.numpy(), geo.image_size) == 1.0
    x1, y1, x2, y2 = geo.footprints[300].tolist()
    ys, xs = np.nonzero(painted)
    assert xs.min() + 0.5 >= x1 and xs.max() + 0.5 < x2 and ys.min() + 0.5 >= y1 and ys.max() + 0.5 < y2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anyres = offline.build_processor("llava-v1.6-vicuna-7b")
    geo = layout.image_geometry(anyres, (100, 200))
    base = widgets.view_heatmap(geo, np.ones(geo.n_tokens), "base")
    grid = widgets.view_heatmap(geo, np.ones(geo.n_tokens), "grid")
    assert np.isfinite(base).all() and np.isfinite(grid).all()  # both views show the whole image
    assert (geo.view == 0).sum() == 576 and (geo.view == 1).sum() > 576


def test_anyres_explorer_switches_views(samples):
    """About 6 s: a 1-layer tiny LLaVA-1.6 and 1 sample (1,176 image tokens)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, processor = offline.build("llava-v1.6-vicuna-7b", tiny=True, layers=1)
    ex = widgets.HeadExplorer(model, processor, samples[:1], grid=False)
    geo = ex.cache.geometries[0]
    assert geo.layout == "anyres" and ex.cache.image_rows[0].shape[-1] == geo.n_tokens
    assert ex.grid is None and ex.view.options == ("base", "grid")
    counter = CallCounter(model)
    base_png, base_heat = ex.attention_image.value, ex.heat.copy()
    ex.view.value = "grid"
    counter.handle.remove()
    assert counter.calls == 0 and ex.attention_image.value != base_png
    assert ex.heat.shape == base_heat.shape and not np.allclose(ex.heat, base_heat)
    grid_tokens = (geo.view == 1).numpy()
    assert np.isclose(np.nanmax(ex.heat), ex.cache.image_rows[0][0, 0][grid_tokens].max())


def test_figures_render_to_png():
    scores = np.arange(12, dtype=float).reshape(3, 4)
    scores[0, 0] = np.nan
    fig = plots.head_score_figure(scores, [(1, 2)], title="t")
    image = png_array(plots.figure_png(fig))
    assert image.ndim == 3 and image.shape[0] > 100
    heat = np.full((20, 30), np.nan)
    heat[5:10, 5:10] = 0.5
    plain = png_array(plots.figure_png(plots.head_attention_figure(np.zeros((20, 30, 3), np.uint8), heat * 0)))
    shown = png_array(plots.figure_png(plots.head_attention_figure(np.zeros((20, 30, 3), np.uint8), heat,
                                                                   boxes=[(2, 2, 12, 12)])))
    assert plain.shape == shown.shape and (plain != shown).any()


def test_explorer_scores_come_from_the_extraction_cache(llava, samples, tmp_path, monkeypatch):
    """About 8 s: a miss computes and stores the scores of all samples (rows for the shown ones only); a hit reads
    them back and runs only the shown samples' batch; the key is the one runs.extractions uses."""
    model, processor = llava
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    key = "explorer-test-key"
    first = widgets.build_cache(model, processor, samples, batch_size=2, show=1, cache_key=key, dataset="shapes")
    assert first.source == "computed, stored in the extraction cache"
    assert len(first.ranking) == 3 and len(first.results) == 1 and len(first.image_rows) == 1
    direct = extract.head_results(model, processor, samples, batch_size=2, dataset="shapes")
    for name in ("weight", "concentration", "region_hits"):
        np.testing.assert_array_equal(first.ranking.scores[name], direct.scores[name])
    stored = cache.read(key)
    assert stored is not None and stored.dataset == "shapes" and stored.settings["batch_size"] == 2

    stored.scores["weight"] = np.full_like(stored.scores["weight"], 0.5)  # marked: the explorer shows the cache
    cache.write(key, stored)
    counter = CallCounter(model)
    try:
        hit = widgets.build_cache(model, processor, samples, batch_size=2, show=1, cache_key=key)
    finally:
        counter.handle.remove()
    assert hit.source == "extraction cache" and (hit.ranking.scores["weight"] == 0.5).all()
    assert len(hit.image_rows) == 1 and hit.image_rows[0].shape == (2, 4, 576)
    np.testing.assert_allclose(hit.image_rows[0].sum(-1), direct.scores["weight"][0], rtol=1e-5, atol=1e-6)
    assert counter.calls <= 4 + 1  # one batch: prefill + 3 decoding steps at most, and one forward for P(gold)
    assert widgets.cached_results(key, samples[:2]) is None  # other samples: not these results

    with pytest.raises(ValueError, match="show=4"):
        widgets.build_cache(model, processor, samples, show=4)


def test_extraction_key_is_the_key_of_runs_extractions():
    chosen = selection.samples("scenes-count", 6)
    planned = runs.plan(selection.resolve("llava-v1.5-7b", "cpu"), ["scenes-count"], n_samples=6,
                        settings=runs.extraction_settings())
    assert widgets.extraction_key("llava-v1.5-7b", chosen) == planned[0].key
    longer = runs.plan(selection.resolve("llava-v1.5-7b", "cpu"), ["scenes-count"], n_samples=6,
                       settings=runs.extraction_settings(max_new_tokens=6))
    assert widgets.extraction_key("llava-v1.5-7b", chosen, max_new_tokens=6) == longer[0].key
    assert widgets.extraction_key("llava-v1.5-7b", chosen, rows="prompt_end") != planned[0].key
