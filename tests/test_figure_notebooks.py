"""Notebooks 05-08 (Figures 3-8): each figure's numbers, computed by the helpers the notebook calls on a small
run of the committed toy models (the notebooks' CPU path), equal an independent NumPy recomputation from the
same per-sample scores, lie in range, and are what the figure draws. Also the parameters, saved figures and
honest labels of the notebooks (they run whole under ``pytest --nbmake``, not here).

Budget: one run of the four toy models on 12 + 12 samples (about 10 s on one thread), one masking run of
two toys on 12 + 12 samples (about 10 s); the rest is table arithmetic.
"""

from __future__ import annotations

import json
import re
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import ablation, agreement, metrics, plots, runs, selection
from helpers.notebooks import NOTEBOOK_DIR
from helpers.results import Results

matplotlib.use("Agg")

FIGURE_NOTEBOOKS = ["05_layer_head_heatmaps", "06_cross_model_heads", "07_cross_dataset_consistency",
                    "08_head_masking"]
N = 12  # samples per model and data set: whole shapes records (3 question kinds x 2 prompt kinds)
# the helpers each value test below drives, as the notebook calls them (checked present in the notebook)
DRIVEN = {
    "05_layer_head_heatmaps": ["runs.collect", "condition_maps", "agreement.difference_maps",
                               "agreement.describe_conditions", "plots.layer_head_maps", "plots.model_layer_profiles"],
    "06_cross_model_heads": ["runs.collect", "agreement.score_maps", "plots.layer_profiles"],
    "07_cross_dataset_consistency": ["runs.collect", "Results.by_model", "agreement.dataset_consistency",
                                     "plots.dataset_consistency"],
    "08_head_masking": ["ablation.run_models", "ablation.curve_table", "plots.masking_curves",
                        "ablation.accuracy_table", "ablation.stage_distribution_table", "plots.stage_distribution",
                        "ablation.concentration_tables", "plots.concentration_accuracy"],
}


def cells(name: str) -> list[dict]:
    """The notebook's cells."""
    return json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text())["cells"]


def code_of(name: str) -> str:
    """All code cells of the notebook, joined."""
    return "\n".join("".join(c["source"]) for c in cells(name) if c["cell_type"] == "code")


def mean_map(values: np.ndarray, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    """Independent per-head mean over the chosen samples, NaN skipped: ``[layers, heads]`` (float64)."""
    chosen = np.asarray(values, dtype=np.float64)[rows]
    with warnings.catch_warnings():  # a head with no finite value stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(chosen, axis=0)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over the heads finite in both maps (NumPy)."""
    a, b = np.ravel(a).astype(float), np.ravel(b).astype(float)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def images(fig: matplotlib.figure.Figure) -> list[np.ndarray]:
    """The arrays of the figure's heatmaps, panel by panel (colour bars hold none)."""
    return [np.asarray(im.get_array(), dtype=float) for ax in fig.axes for im in ax.images]


def assert_top_k(scores: np.ndarray, heads: list[tuple[int, int]]) -> None:
    """``heads`` are a top-``len(heads)`` set of ``scores`` (any tie order): none left out scores higher."""
    chosen = np.zeros(scores.shape, bool)
    for layer, head in heads:
        chosen[layer, head] = True
    s = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    assert chosen.sum() == len(heads) and s[chosen].min() >= s[~chosen].max()


@pytest.fixture(scope="module")
def toy_runs() -> dict[str, list[Results]]:
    """The notebooks' analysis chain on the four committed toy models (models with planted retrieval heads, small
    and fast; the notebooks themselves run the organisms) on ``N`` samples of ``shapes`` (Figure 3) and of
    ``shapes/visual`` (Figures 4, 5)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    models = selection.toy_models()
    assert len(models) == 4 and None not in models, models
    out = runs.collect(models, ["shapes", "shapes/visual"], n_samples=N, batch_size=8)
    return {d: [r for r in out if r.dataset == d] for d in ("shapes", "shapes/visual")}


def check_run(res: Results) -> None:
    """What every figure rests on: ``correct`` is the answer check, scores are shares in range."""
    t = res.table
    assert len(res) == N and res.shape == (6, 8)
    assert t["correct"].tolist() == [p.strip() == a for p, a in zip(t["prediction"], t["answer"], strict=True)]
    w, region = res.scores["weight"], res.scores["region_weight"]
    assert np.all((w >= 0) & (w <= 1 + 1e-6))
    assert np.all(region[np.isfinite(region)] <= w[np.isfinite(region)] + 1e-6)  # the region is part of the image
    hits = res.scores["region_hits"][np.isfinite(res.scores["region_hits"])]
    assert hits.size and np.all((hits >= 0) & (hits <= 1))


@pytest.mark.parametrize("name", FIGURE_NOTEBOOKS)
def test_parameters_cell_and_saved_figures(name):
    nb = cells(name)
    (params,) = [c for c in nb if "parameters" in c["metadata"].get("tags", [])]
    source = "".join(params["source"])
    for parameter in ("MODELS = None", "GPU_MODELS", "DEVICE", "SEED", "RESULTS_DIR", "env.pick("):
        assert parameter in source, f"{name}: parameters cell lacks {parameter}"
    code = code_of(name)
    assert "plots.save_figure(" in code and "torch.manual_seed(SEED)" in code
    assert "selection.default_models(GPU_MODELS, DEVICE)" in code
    assert "import matplotlib.pyplot" not in code, "plotting belongs in helpers.plots"


@pytest.mark.parametrize("name", FIGURE_NOTEBOOKS)
def test_the_value_tests_drive_what_the_notebook_calls(name):
    """The value tests below run these helpers because the notebook does: each is still called there."""
    code = code_of(name)
    for call in DRIVEN[name]:
        assert re.search(rf"\b{re.escape(call)}\(", code), f"{name} no longer calls {call}: update its value test"


def test_labels_say_what_ran_and_what_is_reconstructed():
    text = {n: "\n".join("".join(c["source"]) for c in cells(n)) for n in FIGURE_NOTEBOOKS}
    assert "anyres" in text["05_layer_head_heatmaps"] and "omits region maps" in text["05_layer_head_heatmaps"]
    masking = text["08_head_masking"]
    assert masking.count("our reconstruction") >= 3 and "Tables 1–3" in masking
    for name, body in text.items():
        assert "organism" in body, name


def test_figure3_maps_differences_and_profiles_are_the_runs_means(toy_runs):
    """Notebook 05: per-condition maps = NumPy means over that condition's samples; differences, the printed
    table and both figures hold exactly those numbers."""
    scores = {"image attention (weight)": "weight", "region attention (region_weight)": "region_weight"}
    pairs = [("visual", "plain"), ("object", "general"), ("super", "general")]
    for res in toy_runs["shapes"]:
        check_run(res)
        maps = res.condition_maps(scores)
        assert list(maps) == ["visual", "plain", "general", "object", "super"]
        t = res.table
        want = {v: {label: mean_map(res.scores[s], (t[col] == v).to_numpy()) for label, s in scores.items()}
                for col in ("prompt_kind", "question_kind") for v in t[col].unique()}
        for cond, by_label in want.items():
            assert (t["prompt_kind"] == cond).sum() in (0, N // 2) and (t["question_kind"] == cond).sum() in (0, N // 3)
            for label, m in by_label.items():
                np.testing.assert_allclose(maps[cond][label], m, rtol=1e-5, atol=1e-7, err_msg=f"{cond} {label}")
        diffs = agreement.difference_maps(maps, pairs)
        assert list(diffs) == ["visual - plain", "object - general", "super - general"]
        for a, b in pairs:
            for label in scores:
                np.testing.assert_allclose(diffs[f"{a} - {b}"][label], want[a][label] - want[b][label], atol=1e-6)
        table = agreement.describe_conditions(maps, pairs)
        assert len(table) == 6
        for _, row in table.iterrows():
            a, b = row["pair"].split(" vs ")
            ma, mb = want[a][row["score"]], want[b][row["score"]]
            assert row["mean a"] == pytest.approx(np.nanmean(ma), rel=1e-5)
            assert row["a - b"] == pytest.approx(np.nanmean(ma - mb), rel=1e-4, abs=1e-7)
            assert row["pearson"] == pytest.approx(pearson(ma, mb), abs=1e-5)
            assert_top_k(ma, [tuple(map(int, h.split("."))) for h in row["top heads a"].split()])
        fig = plots.layer_head_maps(maps)
        drawn = images(fig)  # rows: scores; columns: conditions
        expected = [want[c][label] for label in scores for c in maps]
        assert len(drawn) == len(expected) == 10
        for got, m in zip(drawn, expected, strict=True):
            np.testing.assert_allclose(got, m, rtol=1e-5, atol=1e-7)
        first_row = fig.axes[0].images[0].get_clim()
        lo = min(np.nanmin(want[c]["image attention (weight)"]) for c in maps)
        assert first_row[0] == pytest.approx(lo, rel=1e-5)  # one colour scale per score row
    fig = plots.model_layer_profiles(toy_runs["shapes"], scores)
    for ax, (label, s) in zip(fig.axes, scores.items(), strict=True):
        assert ax.get_title() == label and len(ax.lines) == 4
        for line, res in zip(ax.lines, toy_runs["shapes"], strict=True):
            assert line.get_label() == res.model_name
            np.testing.assert_allclose(line.get_xdata(), (np.arange(6) + 0.5) / 6)
            np.testing.assert_allclose(line.get_ydata(), np.nanmean(mean_map(res.scores[s]), axis=1), rtol=1e-5)


def test_figure4_matrices_are_correlations_of_the_runs_maps(toy_runs):
    """Notebook 06: ordered by family; off the diagonal the Pearson r and top-k Jaccard of the two models'
    maps (NumPy), symmetric, in range; the figure's panels and the detection profiles hold those numbers."""
    results = toy_runs["shapes/visual"]
    families = {r.model_name: runs.family_of(r) for r in results}
    assert families == {"toy-a1": "a", "toy-a2": "a", "toy-b1": "b", "toy-b2": "b"}
    min_correct = 8
    matrices, pair_rows, notes = agreement.model_matrices(results, ("detection", "weight"), families=families,
                                                          k=0.1, min_correct=min_correct, seed=0)
    detection = {}
    for res in results:
        check_run(res)
        assert (res.table["prompt_kind"] == "visual").all()
        right = res.correct_mask()
        use = right if right.sum() >= min_correct else np.ones(len(res), bool)
        detection[res.model_name] = mean_map(res.scores["region_hits"], use)
        assert (f"over {int(right.sum())} correct" if right.sum() >= min_correct else "over all") \
            in notes[f"detection · {res.model_name}"]
    weight = {r.model_name: mean_map(r.scores["weight"]) for r in results}
    names = ["toy-a1", "toy-a2", "toy-b1", "toy-b2"]
    k = metrics.head_count(48, 0.1)
    for score, maps in (("detection", detection), ("weight", weight)):
        r = matrices[f"{score}: pearson"]
        jac = matrices[f"{score}: top-k jaccard"]
        assert list(r.index) == list(r.columns) == names
        np.testing.assert_allclose(r.to_numpy(), r.to_numpy().T)
        assert np.all(np.abs(r.to_numpy()[np.isfinite(r.to_numpy())]) <= 1 + 1e-9)
        assert np.all((jac.to_numpy() >= 0) & (jac.to_numpy() <= 1))
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                assert r.loc[a, b] == pytest.approx(pearson(maps[a], maps[b]), abs=1e-5), (score, a, b)
                row = pair_rows[(pair_rows.score == score) & (pair_rows.a == a) & (pair_rows.b == b)]
                assert row["same_family"].item() == (families[a] == families[b])
                if score == "weight":  # continuous means: no ties at the cut-off
                    top = [set(map(tuple, np.argwhere(maps[n] >= np.sort(maps[n], axis=None)[-k]))) for n in (a, b)]
                    assert jac.loc[a, b] == pytest.approx(len(top[0] & top[1]) / len(top[0] | top[1]))
    fig = plots.agreement_matrices(matrices, families)
    for got, mat in zip(images(fig), matrices.values(), strict=True):
        np.testing.assert_allclose(got, mat.to_numpy(dtype=float))
    det_maps, _ = agreement.score_maps(results, "detection", min_correct)
    profiles = {n: metrics.layer_profile(m).numpy() for n, m in det_maps.items()}
    fig = plots.layer_profiles(profiles, "mean detection score over heads")
    for line, name in zip(fig.axes[0].lines, names, strict=True):
        np.testing.assert_allclose(line.get_ydata(), np.nanmean(detection[name], axis=1), rtol=1e-5)
        assert np.all((line.get_ydata() >= 0) & (line.get_ydata() <= 1))


def test_figure5_profiles_matrix_and_variation_per_question_kind(toy_runs):
    """Notebook 07 (CPU: the question kinds of shapes/visual as data sets): each part holds exactly its samples;
    profiles, cross-data-set Pearson r, variation and the summary equal NumPy on those samples; the figure draws them."""
    results = toy_runs["shapes/visual"]
    by_model = Results.by_model(results, "shapes/visual", "question_kind")
    assert list(by_model) == [r.model_name for r in results]
    tables = agreement.dataset_consistency(by_model, "weight", 0)
    summary = agreement.consistency_summary(by_model, "weight", seed=0).set_index("model")
    fig = plots.dataset_consistency(tables)
    for res in results:
        parts = by_model[res.model_name]
        kinds = ["general", "object", "super"]
        assert [p.dataset for p in parts] == [f"shapes/visual/{k}" for k in kinds]
        maps = {}
        for part, kind in zip(parts, kinds, strict=True):
            rows_ = (res.table["question_kind"] == kind).to_numpy()
            assert part.table["sample_id"].tolist() == res.table["sample_id"][rows_].tolist()
            maps[part.dataset] = mean_map(res.scores["weight"], rows_)
            prof, acc = tables[res.model_name]["profiles"][part.dataset]
            np.testing.assert_allclose(prof, np.nanmean(maps[part.dataset], axis=1), rtol=1e-5)
            assert acc == pytest.approx(res.table["correct"][rows_].mean())
        mat = tables[res.model_name]["matrix"]
        labels = list(maps)
        off = []
        for i, a in enumerate(labels):
            assert -1 <= mat.loc[a, a] <= 1  # split-half reliability on the diagonal
            for b in labels[i + 1:]:
                off.append(pearson(maps[a], maps[b]))
                assert mat.loc[a, b] == mat.loc[b, a] == pytest.approx(off[-1], abs=1e-5)
        stack = np.stack(list(maps.values()))
        variation = np.where(stack.mean(0) > 0, stack.std(0) / stack.mean(0), np.nan)
        np.testing.assert_allclose(tables[res.model_name]["variation"], variation, rtol=1e-4, atol=1e-6)
        s = summary.loc[res.model_name]
        assert s["datasets"] == 3 and s["r across datasets"] == pytest.approx(np.mean(off), abs=1e-5)
        assert s["variation"] == pytest.approx(np.nanmean(variation), rel=1e-4)
        assert s["mean score min"] == pytest.approx(min(np.nanmean(m) for m in maps.values()), rel=1e-5)
        assert s["mean score max"] == pytest.approx(max(np.nanmean(m) for m in maps.values()), rel=1e-5)
        profile_ax = fig.axes[[ax.get_title() for ax in fig.axes].index(res.model_name)]
        for line, m in zip(profile_ax.lines, maps.values(), strict=True):
            np.testing.assert_allclose(line.get_ydata(), np.nanmean(m, axis=1), rtol=1e-5)
        drawn = [np.asarray(im.get_array(), dtype=float) for ax in fig.axes
                 if ax.get_title().startswith(f"{res.model_name}:") for im in ax.images]
        assert len(drawn) == 2, res.model_name
        np.testing.assert_allclose(drawn[0], mat.to_numpy(dtype=float))
        np.testing.assert_allclose(drawn[1], variation, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def masking_run() -> tuple[pd.DataFrame, dict]:
    """Notebook 08's computation on two toys (one per family): rank on ``N`` samples of shapes/visual, mask
    on the next ``N`` held-out records of shapes at 0 and 10% of the heads, 2 random draws."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    models = [m for m in selection.toy_models() if m.endswith(("toy-a1", "toy-b1"))]
    rank = selection.samples("shapes/visual", N)
    held = selection.samples("shapes", N, offset=len({s.meta.get("record_id", s.id) for s in rank}))
    assert not {s.meta["record_id"] for s in rank} & {s.meta["record_id"] for s in held}
    return ablation.run_models(models, rank, eval_samples=held, ks=(0, 10), fractions=(0, 0.1),
                               conditions=("top", "random", "late"), seed=0, batch_size=16, min_correct=4,
                               dataset="shapes/visual", random_draws=2)


def test_figures6_to_8_tables_are_the_masking_runs_numbers(masking_run):
    """Notebook 08: the curve (Figure 6) = NumPy means of the per-sample answers; the masked top heads are the
    ranking's best; Figure 7's top heads are those masked at 10%; Figure 8's bins and groups = NumPy on the
    ranking samples; every figure draws its table."""
    per_sample, rankings, held_out = masking_run
    assert list(rankings) == ["toy-a1", "toy-b1"] and list(held_out) == ["toy-a1", "toy-b1"]
    top_k = metrics.head_count(48, 0.1)
    assert sorted(per_sample["k"].unique()) == [0, top_k]
    visual = per_sample[per_sample.prompt_kind == "visual"]
    curve = ablation.curve_table(visual)
    for row in curve.itertuples():
        sel = ((visual.model == row.model) & (visual.condition == row.condition) & (visual.k == row.k)).to_numpy()
        assert row.accuracy == pytest.approx(np.mean(visual["correct"].to_numpy()[sel]))
        assert row.samples == N // 2 and row.early + row.middle + row.late == row.n_masked
        assert row.draws == (2 if row.condition == "random" else 1)  # k = 0 too: two empty draws
    masked_top: dict[str, list[tuple[int, int]]] = {}
    unmasked = curve[curve.k == 0].groupby("model")["accuracy"]
    assert (unmasked.nunique() == 1).all()  # k = 0 is one run shared by every condition
    for name, ranking in rankings.items():
        res = ranking.results
        right = res.correct_mask()
        use = right if right.sum() >= 4 else np.ones(len(res), bool)
        detection = mean_map(res.scores["region_hits"], use)
        np.testing.assert_allclose(res.ranking(4, then=None).scores, detection, atol=1e-6)
        a, d = ranking.scores.ravel(), detection.ravel()  # ties ordered by region_weight, nothing else reordered
        assert np.all((d[:, None] > d[None, :]) <= (a[:, None] > a[None, :])) and "ordered by region_weight" in ranking.note
        masked = per_sample[(per_sample.model == name) & (per_sample.condition == "top") & (per_sample.k == top_k)]
        heads = [tuple(map(int, h.split("."))) for h in masked["heads"].iloc[0].split()]
        assert len(heads) == top_k
        assert_top_k(ranking.scores, heads)
        masked_top[name] = heads
        late = per_sample[(per_sample.model == name) & (per_sample.condition == "late") & (per_sample.k == top_k)]
        assert (late["late"] == late["n_masked"]).all() and (late["n_masked"] == top_k).all()
        stages = ablation.stage_distribution_table({name: ranking.scores}, 0.1).set_index("stage")
        counts = {s: sum(metrics.stage_of(lyr, 6) == s for lyr, _ in heads) for s in metrics.STAGES}
        for s in metrics.STAGES:
            assert stages.loc[s, "top"] == pytest.approx(counts[s] / top_k)
            assert stages.loc[s, "all"] == pytest.approx(sum(metrics.stage_of(lyr, 6) == s for lyr in range(6)) / 6)
        assert (stages["k"] == top_k).all()
    fig = plots.masking_curves(curve, 0.25, conditions=("top", "random", "late"))
    for ax, name in zip(fig.axes, rankings, strict=True):
        part = curve[curve.model == name]
        for line, cond in zip(ax.lines, ("top", "random", "late"), strict=False):
            sel = part[part.condition == cond].sort_values("k")
            np.testing.assert_allclose(line.get_xdata(), sel["n_masked"])
            np.testing.assert_allclose(line.get_ydata(), sel["accuracy"])
    table1 = ablation.accuracy_table([r.results for r in rankings.values()])
    for name, r in rankings.items():
        assert table1.loc[name, ("accuracy", "shapes/visual")] == pytest.approx(r.results.table["correct"].mean())
        assert table1.loc[name, ("samples", "shapes/visual")] == N
    stages = ablation.stage_distribution_table({n: r.scores for n, r in rankings.items()}, 0.1)
    fig = plots.stage_distribution(stages)
    bars = [p.get_height() for p in fig.axes[0].patches]
    want = np.concatenate([stages[stages.stage == s].set_index("model").loc[list(rankings), "top"]
                           for s in metrics.STAGES])
    np.testing.assert_allclose(bars, want, err_msg="bars: stage by stage, model by model")
    binned, grouped = ablation.concentration_tables(rankings, held_out, k=0.1)
    for name in rankings:
        res = held_out[name]  # Figure 8 is measured on the held-out samples
        heads = masked_top[name]  # Figure 8's heads are the ones masked at 10% too
        conc = np.nanmean(np.stack([res.scores["concentration"][:, lyr, h] for lyr, h in heads], 1), axis=1)
        b = binned[binned.model == name]
        assert b["samples"].sum() == np.isfinite(conc).sum() and len(b) <= 4
        assert b["concentration"].is_monotonic_increasing
        assert np.average(b["concentration"], weights=b["samples"]) == pytest.approx(np.nanmean(conc), rel=1e-5)
        assert np.average(b["accuracy"], weights=b["samples"]) == pytest.approx(res.correct_mask()[np.isfinite(conc)].mean())
        for g in grouped[grouped.model == name].itertuples():
            sel = ((res.table.question_kind == g.question_kind) & (res.table.prompt_kind == g.prompt_kind)).to_numpy()
            sel = sel & np.isfinite(conc)
            assert g.concentration == pytest.approx(conc[sel].mean(), rel=1e-5)
            assert g.accuracy == pytest.approx(res.correct_mask()[sel].mean()) and g.samples == sel.sum()
    fig = plots.concentration_accuracy(binned, grouped)
    for line, name in zip(fig.axes[0].lines, rankings, strict=True):
        np.testing.assert_allclose(line.get_ydata(), binned[binned.model == name]["accuracy"])


def test_notebooks_01_03_04_run_on_the_organisms_and_task_sets():
    """01 (one model), 03 (Figure 1) and 04 (Figure 2): shared parameters, cached extraction, a findings table."""
    sets = ("scenes-count", "scenes-pope", "scenes-choice")
    for name in ("01_load_quantized_mllm", "03_attention_vs_concentration", "04_pointqa_examples"):
        nb = cells(name)
        (params,) = [c for c in nb if "parameters" in c["metadata"].get("tags", [])]
        source = "".join(params["source"])
        assert "DATASETS = " in source and all(s in source for s in sets), name
        code = "\n".join("".join(c["source"]) for c in nb if c["cell_type"] == "code")
        text = "\n".join("".join(c["source"]) for c in nb)
        assert "## What the organisms show" in "".join(nb[-2]["source"]), name
        assert "findings.show(" in "".join(nb[-1]["source"]), name
        assert "import matplotlib.pyplot" not in code and "toy-" not in text, name
        if name != "04_pointqa_examples":
            assert "N_SAMPLES = env.pick(12, 96)" in source, name
    figure1 = "\n".join("".join(c["source"]) for c in cells("03_attention_vs_concentration"))
    for needed in ("MODELS = None", "GPU_MODELS = [", "RESULTS_DIR = None", "selection.default_models(GPU_MODELS, DEVICE)",
                   "runs.collect(", "plots.save_figure(", "results.summary("):
        assert needed in figure1, needed
    assert "loaded=(model, processor)" in "\n".join("".join(c["source"]) for c in cells("01_load_quantized_mllm"))


ORGANISM_NOTEBOOKS = {"05_layer_head_heatmaps": '("scenes-count",)', "06_cross_model_heads": '("scenes-count",)',
                      "07_cross_dataset_consistency": '("scenes-count", "scenes-pope", "scenes-choice")'}


@pytest.mark.parametrize("name", ORGANISM_NOTEBOOKS)
def test_organism_notebooks_share_one_extraction_and_end_in_findings(name):
    """Notebooks 05-07 call runs.collect alike (one extraction per organism and task set in a run) and end in a
    findings table built by helpers.findings."""
    nb = cells(name)
    (params,) = [c for c in nb if "parameters" in c["metadata"].get("tags", [])]
    source = "".join(params["source"])
    assert f"DATASETS = {ORGANISM_NOTEBOOKS[name]}" in source and "N_SAMPLES = env.pick(12, 96)" in source
    code = "\n".join("".join(c["source"]) for c in nb if c["cell_type"] == "code")
    assert ("runs.collect(MODELS or selection.default_models(GPU_MODELS, DEVICE), DATASETS, n_samples=N_SAMPLES,\n"
            "                           results_dir=RESULTS_DIR, device=DEVICE)") in code
    headings = ["".join(c["source"]).split("\n")[0] for c in nb if c["cell_type"] == "markdown"]
    assert headings[-1] == "## What the organisms show"
    assert "findings.show(" in "".join(nb[-1]["source"]) and nb[-1]["cell_type"] == "code"
