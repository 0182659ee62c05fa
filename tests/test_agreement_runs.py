"""helpers.agreement (Figures 3, 4, 5), helpers.runs (saved results), helpers.selection (models, samples),
Results' regrouping and their plots."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from helpers import agreement, data, plots, results, runs, selection
from helpers.results import Results

matplotlib.use("Agg")


def res_from_map(base: np.ndarray, n: int = 10, noise: float = 0.05, seed: int = 0, model: str = "m",
                 dataset: str = "d") -> Results:
    rng = np.random.default_rng(seed)
    w = (base[None] + rng.normal(0, noise, (n, *base.shape))).astype(np.float32)
    table = pd.DataFrame({"index": np.arange(n), "sample_id": [f"s{i}" for i in range(n)],
                          "prompt_kind": (["visual", "plain"] * n)[:n], "question_kind": "general",
                          "correct": [True] * n})
    return Results(table, {"weight": w, "region_hits": w.copy()}, {"model_name": model, "dataset": dataset})


def test_compare_equal_and_different_shapes():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(6, 4))
    same = agreement.compare(a, a * 2 + 1, k=5)
    assert same["basis"] == "heads" and same["pearson"] == pytest.approx(1) and same["jaccard"] == 1.0
    neg = agreement.compare(a, -a, k=0.25)
    assert neg["spearman"] == pytest.approx(-1) and neg["jaccard"] == 0.0
    deep = np.repeat(a, 2, axis=0)[:, :3]  # 12 layers x 3 heads, same layer profile shape
    other = agreement.compare(a[:, :3], deep)
    assert other["basis"] == "depth profile" and np.isnan(other["jaccard"]) and other["pearson"] > 0.8
    with pytest.raises(ValueError, match=r"\[layers, heads\]"):
        agreement.compare(a.ravel(), a)


def test_pairs_matrix_and_family_summary():
    rng = np.random.default_rng(1)
    fa, fb = rng.uniform(size=(6, 4)), rng.uniform(size=(6, 4))
    maps = {"a1": fa, "a2": fa + rng.normal(0, 0.05, fa.shape), "b1": fb, "b2": fb + rng.normal(0, 0.05, fb.shape)}
    fam = {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}
    rows = agreement.pairs(maps, fam, k=4)
    assert len(rows) == 6 and rows["same_family"].sum() == 2
    summary = agreement.family_summary(rows)
    assert summary.loc["within family", ("pearson", "mean")] > 0.9 > summary.loc["across families", ("pearson", "mean")]
    assert summary.loc["across families", ("pearson", "count")] == 4
    mat = agreement.matrix(rows, "spearman", diagonal={"a1": 0.5})
    assert mat.shape == (4, 4) and mat.loc["a1", "a1"] == 0.5 and mat.loc["b2", "b2"] == 1.0
    assert mat.loc["a2", "a1"] == mat.loc["a1", "a2"] == rows.iloc[0]["spearman"]
    with pytest.raises(ValueError):
        agreement.matrix(rows, "kendall")
    fig = plots.agreement_matrices({"pearson": agreement.matrix(rows)}, fam, title="t")
    assert fig.axes


def test_split_half_tracks_noise():
    rng = np.random.default_rng(2)
    base = rng.uniform(size=(6, 4))
    clean = agreement.split_half(res_from_map(base, n=20, noise=0.01), "weight")
    noisy = agreement.split_half(res_from_map(base, n=20, noise=3.0), "weight")
    assert clean["pearson"] > 0.95 > noisy["pearson"] and clean["samples"] == 20
    with pytest.raises(ValueError, match="at least 2"):
        agreement.split_half(res_from_map(base, n=1), "weight", only_correct=False)


def test_across_datasets_and_head_variation(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 1, size=(6, 4))
    res = [res_from_map(base, seed=i, dataset=f"d{i}") for i in range(3)]
    res.append(res_from_map(base[::-1], seed=9, dataset="flipped"))
    rows, per = agreement.across_datasets(res, "weight")
    assert len(rows) == 6 and list(per["dataset"]) == ["d0", "d1", "d2", "flipped"]
    same = rows[(rows.a == "d0") & (rows.b == "d1")]["pearson"].item()
    flipped = rows[(rows.a == "d0") & (rows.b == "flipped")]["pearson"].item()
    assert same > 0.9 > flipped
    cv = agreement.head_variation(res[:3], "weight")
    assert cv.shape == (6, 4) and np.nanmax(cv) < 0.2
    assert np.nanmean(agreement.head_variation(res, "weight")) > np.nanmean(cv)
    with pytest.raises(ValueError, match="one model"):
        agreement.across_datasets([res[0], res_from_map(base, model="other")])
    fig = plots.dataset_consistency(agreement.dataset_consistency({"m": res}, "weight"), title="t")
    assert all(p.stat().st_size > 0 for p in plots.save_figure(fig, "fig5", tmp_path))


def test_layer_head_maps_and_profiles(tmp_path):
    a = np.arange(24, dtype=float).reshape(6, 4)
    fig = plots.layer_head_maps({"visual": {"weight": a, "region": a / 2}, "plain": {"weight": a * 2}}, title="x")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 3  # the missing plain region map is an empty panel
    assert images[0].get_clim() == images[1].get_clim() == (0.0, 46.0)  # the weight row shares one scale
    assert images[2].get_clim() == (0.0, 11.5)
    diff = plots.layer_head_maps({"visual - plain": {"weight": a - 10}}, diverging=True)
    assert diff.axes[0].images[0].get_clim() == (-13.0, 13.0)
    prof = plots.layer_profiles({"32 layers": np.ones(32), "40 layers": np.zeros(40)}, "w")
    lines = prof.axes[0].lines
    assert lines[0].get_xdata()[0] == pytest.approx(0.5 / 32) and lines[1].get_xdata()[-1] == pytest.approx(39.5 / 40)
    assert all(p.stat().st_size > 0 for p in plots.save_figure(fig, "fig3", tmp_path))
    with pytest.raises(ValueError):
        plots.layer_head_maps({})


def test_parse_dataset_and_load_samples():
    assert selection.parse_dataset("shapes") == ("shapes", data.QUESTION_KINDS, data.PROMPT_KINDS)
    assert selection.parse_dataset("shapes/plain/object") == ("shapes", ("object",), ("plain",))
    with pytest.raises(ValueError, match="neither"):
        selection.parse_dataset("shapes/visaul")
    samples = selection.samples("shapes", 12)
    assert len(samples) == 12 and len({s.meta["record_id"] for s in samples}) == 2
    held_out = selection.samples("shapes/general/visual", 3, offset=2)
    assert [s.meta["record_id"] for s in held_out] == [s.meta["record_id"] for s in selection.samples(
        "shapes/general/visual", 5)][2:]
    assert {(s.question_kind, s.prompt_kind) for s in held_out} == {("general", "visual")}
    assert not {s.meta["record_id"] for s in held_out} & {s.meta["record_id"] for s in samples}
    with pytest.raises(ValueError):
        selection.samples("shapes", 0)


def test_split_by_saved_results_and_family(tmp_path, monkeypatch):
    res = res_from_map(np.ones((6, 4)), n=6, model="toy-x")
    parts = res.split_by("prompt_kind")
    assert list(parts) == ["visual", "plain"] and len(parts["plain"]) == 3 and parts["plain"].dataset == "d/plain"
    with pytest.raises(KeyError):
        res.split_by("nope")
    card = tmp_path / "toy-x"
    card.mkdir()
    (card / "visual_heads.json").write_text(json.dumps({"family": "fam-a"}))
    res.settings["hub_id"] = str(card)
    results.write(res, tmp_path / "sweeps" / "one" / "part-r0-000000.parquet")
    results.write(res_from_map(np.ones((6, 4)), n=4, model="llava-v1.5-7b"),
                  tmp_path / "sweeps" / "two" / "part-r0-000000.parquet")
    loaded = runs.collect([None], ["shapes"], n_samples=1, results_dir=tmp_path / "sweeps")
    assert [r.model_name for r in loaded] == ["toy-x", "llava-v1.5-7b"]
    assert [runs.family_of(r) for r in loaded] == ["fam-a", "llama2-vicuna"]
    assert len(runs.collect([], [], n_samples=1, results_dir=tmp_path / "sweeps" / "one")) == 1
    with pytest.raises(FileNotFoundError, match="helpers.sweep"):
        runs.load_saved(card)
    merged = Results.stack(loaded)
    assert len(merged) == 10 and merged.table["index"].tolist() == list(range(10))


def test_default_models(monkeypatch, tmp_path):
    assert selection.default_models(["llava-v1.5-7b"], device="cuda") == ["llava-v1.5-7b"]
    for name in ("toy-b1", "toy-a1", "toy-broken"):
        (tmp_path / name).mkdir()
    for name in ("toy-b1", "toy-a1"):
        (tmp_path / name / "config.json").write_text("{}")
    assert selection.toy_models(tmp_path) == [str(tmp_path / "toy-a1"), str(tmp_path / "toy-b1")]
    for name in ("smollm2-lora", "gemma3-frozen", "no-card"):
        (tmp_path / "organisms" / name).mkdir(parents=True)
    for name in ("smollm2-lora", "gemma3-frozen"):
        (tmp_path / "organisms" / name / "organism.json").write_text("{}")
    monkeypatch.setattr(selection, "ORGANISMS_DIR", tmp_path / "organisms")
    organisms = [str(tmp_path / "organisms" / n) for n in ("gemma3-frozen", "smollm2-lora")]
    assert selection.default_models(["x"], device="cpu") == organisms  # the toys are no default any more
    assert selection.embedded_default() == tmp_path / "organisms" / "smollm2-lora"
    monkeypatch.setattr(selection, "ORGANISMS_DIR", tmp_path / "none")
    assert selection.default_models(["x"], device="cpu") == [None]


def test_condition_maps_differences_and_description():
    res = res_from_map(np.zeros((6, 4)), n=6, noise=0.0)
    res.scores["weight"][res.table["prompt_kind"] == "visual", 2, 1] = 1.0
    res.table["question_kind"] = ["general", "object", "super"] * 2
    maps = res.condition_maps({"image attention": "weight", "missing": "nope"})
    assert list(maps) == ["visual", "plain", "general", "object", "super"]
    assert list(maps["visual"]) == ["image attention"] and maps["visual"]["image attention"][2, 1] == 1.0
    assert maps["plain"]["image attention"][2, 1] == 0.0 and maps["general"]["image attention"][2, 1] == 0.5
    diffs = agreement.difference_maps(maps, [("visual", "plain"), ("object", "absent")])
    assert list(diffs) == ["visual - plain"] and diffs["visual - plain"]["image attention"].sum() == 1.0
    table = agreement.describe_conditions(maps, [("visual", "plain")], top=1)
    assert table.loc[0, "top heads a"] == "2.1" and table.loc[0, "a - b"] == pytest.approx(1 / 24)


def test_score_maps_and_consistency_summary():
    rng = np.random.default_rng(4)
    base = rng.uniform(0.2, 1, size=(6, 4))
    a = res_from_map(base, model="a")
    b = res_from_map(base, model="b", seed=1)
    maps, notes = agreement.score_maps([a, b], "detection", min_correct=2)
    assert list(maps) == ["a", "b"] and "correct samples" in notes["a"]
    maps, notes = agreement.score_maps([a, res_from_map(base, model="a", dataset="e")], "weight")
    assert list(maps) == ["a · d", "a · e"] and notes["a · d"] == "mean weight over 10 samples"
    stable = [res_from_map(base, n=20, seed=i, dataset=f"d{i}", noise=0.01) for i in range(3)]
    shaky = [res_from_map(rng.uniform(0.2, 1, size=(6, 4)), n=20, seed=i, dataset=f"d{i}", model="s")
             for i in range(3)]
    summary = agreement.consistency_summary({"m": stable, "s": shaky}).set_index("model")
    assert summary.loc["m", "r across datasets"] > 0.9 > summary.loc["s", "r across datasets"]
    assert summary.loc["s", "r split-half"] > 0.9 and summary.loc["m", "variation"] < summary.loc["s", "variation"]
    fig = plots.model_layer_profiles([a, b], {"image attention": "weight"})
    assert len(fig.axes[0].lines) == 2
    np.testing.assert_allclose(a.layer_profile("weight"), np.nanmean(a.per_head("weight"), axis=1))
    assert a.layer_profile("weight").shape == (6,)


def test_model_matrices_order_by_family_with_split_half_diagonal():
    rng = np.random.default_rng(5)
    fa, fb = rng.uniform(size=(6, 4)), rng.uniform(size=(6, 4))
    res = [res_from_map(fb, n=12, model="b1", seed=1), res_from_map(fa, n=12, model="a1", seed=2),
           res_from_map(fa, n=12, model="a2", seed=3)]
    fam = {"a1": "A", "a2": "A", "b1": "B"}
    mats, rows, notes = agreement.model_matrices(res, ("detection", "weight"), families=fam, k=0.25, min_correct=2)
    assert list(mats) == ["detection: pearson", "detection: top-k jaccard", "weight: pearson", "weight: top-k jaccard"]
    pearson = mats["weight: pearson"]
    assert list(pearson.index) == ["a1", "a2", "b1"]
    assert pearson.loc["a1", "a2"] > 0.9 > pearson.loc["a1", "b1"]
    assert 0.9 < pearson.loc["a1", "a1"] < 1.0  # split-half, not the trivial 1
    assert 0 <= mats["weight: top-k jaccard"].loc["b1", "b1"] <= 1
    assert len(rows) == 6 and set(rows["score"]) == {"detection", "weight"}
    assert set(notes) == {f"{s} · {m}" for s in ("detection", "weight") for m in ("a1", "a2", "b1")}


def test_as_datasets_splits_one_dataset():
    res = res_from_map(np.ones((6, 4)), n=6, model="m", dataset="shapes")
    res.table["question_kind"] = ["general", "object", "super"] * 2
    other = res_from_map(np.ones((6, 4)), n=4, model="m", dataset="pope")
    out = Results.by_model([res, other], "shapes", "question_kind")
    assert [r.dataset for r in out["m"]] == ["shapes/general", "shapes/object", "shapes/super", "pope"]
    assert [r.dataset for r in Results.by_model([res, other])["m"]] == ["shapes", "pope"]
    assert plots.figure_name("fig3", "llava-hf/llava 1.5", None, "shapes/visual") == "fig3_llava-hf-llava-1.5_shapes-visual"


def test_set_cpu_threads():
    import torch

    before = torch.get_num_threads()
    try:
        assert selection.set_cpu_threads(1, "cpu") == 1 == torch.get_num_threads()
        assert selection.set_cpu_threads(None, "cpu") == 1
        assert selection.set_cpu_threads(3, "cuda") == 1  # untouched on CUDA
        with pytest.raises(ValueError):
            selection.set_cpu_threads(0, "cpu")
    finally:
        torch.set_num_threads(before)


def test_load_samples_from_a_local_benchmark_file(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    rows = [{"question_id": i, "image": "a.jpg", "text": f"Is there a cat {i}?", "label": "yes"} for i in range(5)]
    path = tmp_path / "pope.json"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    samples = selection.samples("pope", 2, offset=1, data_files={"pope": path}, image_folder=tmp_path)
    assert [s.id for s in samples] == ["1", "2"] and samples[0].answer == "yes"
    with pytest.raises(data.EmptySplitError, match="offset"):
        selection.samples("pope", 2, offset=5, data_files={"pope": path}, image_folder=tmp_path)


def test_rows_for_picks_the_one_analysed_row_for_every_model():
    from dataclasses import replace
    from types import SimpleNamespace

    from helpers.models import REGISTRY

    real = SimpleNamespace(vh_spec=REGISTRY["llava-v1.5-7b"])
    toy = SimpleNamespace(vh_spec=replace(REGISTRY["llava-v1.5-7b"], name="toy-a1"))
    assert selection.rows_for(real) == "answer" and selection.rows_for(toy) == "answer"  # issue 17: one rule
    assert selection.rows_for(toy, "prompt_end") == "prompt_end"
