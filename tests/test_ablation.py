"""helpers.ablation: head sets, k grid, masking curve and the tables built from it."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from helpers import ablation, data, extract, metrics, offline, plots, selection
from helpers.results import Ranking, Results

matplotlib.use("Agg")


def fake_results(n: int = 12, layers: int = 6, heads: int = 4, seed: int = 0, correct: float = 0.5,
                 model: str = "m") -> Results:
    """Random per-head scores with a known structure: head (1, 2) is the best detector."""
    rng = np.random.default_rng(seed)
    hits = rng.uniform(0, 0.3, (n, layers, heads)).astype(np.float32)
    hits[:, 1, 2] = 0.9
    conc = rng.uniform(0, 1, (n, layers, heads)).astype(np.float32)
    table = pd.DataFrame({
        "index": np.arange(n), "sample_id": [f"s{i}" for i in range(n)],
        "question_kind": [("general", "object", "super")[i % 3] for i in range(n)],
        "prompt_kind": [("visual", "plain")[(i // 3) % 2] for i in range(n)],
        "correct": rng.uniform(size=n) < correct,
    })
    scores = {"weight": rng.uniform(0, 1, (n, layers, heads)).astype(np.float32), "concentration": conc,
              "region_hits": hits}
    return Results(table, scores, {"model_name": model, "dataset": "shapes"})


def ranked(res: Results, **kwargs) -> tuple[np.ndarray, str]:
    """``(scores, note)`` of :meth:`Results.ranking`."""
    ranking = res.ranking(**kwargs)
    return ranking.scores, ranking.note


def test_visual_head_scores_use_correct_samples_and_fall_back():
    res = fake_results(correct=1.0)
    scores, note = ranked(res, min_correct=4)
    assert scores.shape == (6, 4) and np.unravel_index(np.nanargmax(scores), scores.shape) == (1, 2)
    assert "12 correct" in note
    res.table["correct"] = False
    res.table.loc[0, "correct"] = True
    scores_all, note = ranked(res, min_correct=4)
    assert "all 12 boxed" in note and "only 1 correct" in note
    np.testing.assert_allclose(scores_all, res.per_head("region_hits"))
    res.scores["region_hits"][:] = np.nan
    with pytest.raises(ValueError, match="no sample has a box"):
        res.ranking()


def test_k_grid_absolute_for_real_models_fractions_for_toys():
    assert ablation.k_grid(1024) == [0, 10, 20, 30, 50, 100]
    assert ablation.k_grid(48) == [0, 2, 5, 10, 14]
    assert ablation.k_grid(16, fractions=(0, 0.5, 2.0)) == [0, 8, 16]
    with pytest.raises(ValueError):
        ablation.k_grid(0)


def test_random_same_stage_matches_stage_counts_avoids_reference_and_is_seeded():
    layers, heads = 6, 4  # stages: layers 0-1, 2-3, 4-5
    ref = [(0, 0), (0, 1), (1, 3), (4, 2)]
    picked = ablation.random_same_stage(ref, layers, heads, seed=3)
    assert metrics.stage_distribution(picked, layers, normalize=False) == \
        metrics.stage_distribution(ref, layers, normalize=False)
    assert not set(picked) & set(ref) and len(set(picked)) == len(picked)
    assert picked == ablation.random_same_stage(ref, layers, heads, seed=3)
    draws = {tuple(ablation.random_same_stage(ref, layers, heads, seed=s)) for s in range(10)}
    assert len(draws) > 1
    # a stage with too few other heads: all of them, then the reference's own
    full = metrics.stage_heads(layers, heads, "early")[:7]
    picked = ablation.random_same_stage(full, layers, heads, seed=0)
    assert len(picked) == 7 and set(metrics.stage_heads(layers, heads, "early")) - set(full) <= set(picked)


def test_head_sets_top_random_and_stage():
    scores = np.arange(24, dtype=float).reshape(6, 4)  # best heads are in the last layers
    scores[0, 0] = 100.0
    scores[5, 3] = np.nan
    sets = ablation.head_sets(scores, 3, ("top", "random", "early", "late"), seed=0)
    assert sets["top"] == [(0, 0), (5, 1), (5, 2)]
    assert metrics.stage_distribution(sets["random"], 6, normalize=False) == {"early": 1, "middle": 0, "late": 2}
    assert sets["early"] == [(0, 0), (1, 2), (1, 3)]
    assert sets["late"] == [(5, 0), (5, 1), (5, 2)]  # NaN head ranks last within its stage
    assert ablation.head_sets(scores, 20, ("late",))["late"] == metrics.stage_heads(6, 4, "late")
    assert ablation.head_sets(scores, 0) == {"top": [], "random": [], "random_layer": [], "late": []}
    rnd = ablation.head_sets(scores, 3, ("late",), stage_order="random")["late"]
    assert len(rnd) == 3 and all(lyr >= 4 for lyr, _ in rnd)
    with pytest.raises(ValueError, match="unknown condition"):
        ablation.head_sets(scores, 1, ("bottom",))


def test_tables_and_figures_from_per_sample_rows(tmp_path):
    rows = []
    for model in ("a", "b"):
        for cond, acc in (("top", [1, 0.5, 0.0]), ("random", [1, 1.0, 0.75]), ("late", [1, 1.0, 1.0])):
            for k, a in zip((0, 2, 4), acc, strict=True):
                for i in range(4):
                    rows.append({"model": model, "condition": cond, "k": k, "n_masked": k, "early": 0,
                                 "middle": 0, "late": k, "sample_id": f"s{i}",
                                 "question_kind": ("general", "object")[i % 2], "prompt_kind": "visual",
                                 "correct": i < a * 4})
    per_sample = pd.DataFrame(rows)
    curve = ablation.curve_table(per_sample)
    assert len(curve) == 18
    top = curve[(curve.model == "a") & (curve.condition == "top")]
    assert top["accuracy"].tolist() == [1.0, 0.5, 0.0] and top["samples"].tolist() == [4, 4, 4]
    stage = ablation.stage_table(per_sample)
    assert stage.loc[("b", "late"), 4] == 1.0 and stage.loc[("a", "random"), 4] == 0.75
    kinds = ablation.kind_table(per_sample, 2)
    assert kinds.loc[("a", "general"), ("unmasked", "visual")] == 1.0
    assert kinds.loc[("a", "general"), ("top k=2", "visual")] == 0.5  # samples 0, 1 of 0..3 stay correct
    assert ablation.kind_table(per_sample, 4).loc[("a", "object"), ("top k=4", "visual")] == 0.0
    assert ablation.kind_table(per_sample, 4, "late").loc[("b", "object"), ("late k=4", "visual")] == 1.0
    with pytest.raises(ValueError, match="available k"):
        ablation.kind_table(per_sample, 3)
    per_sample.loc[(per_sample.model == "b") & (per_sample.k == 4), "k"] = 5  # model b's largest k differs
    largest = ablation.kind_table(per_sample, "max")
    assert largest.loc[("a", "object"), ("top k=max", "visual")] == 0.0
    assert largest.loc[("b", "object"), ("top k=max", "visual")] == 0.0 and len(largest) == 4
    fig = plots.masking_curves(curve, chance=0.25, title="test")
    assert all(p.stat().st_size > 0 for p in plots.save_figure(fig, "curves", tmp_path))


def test_stage_distribution_and_concentration_accuracy(tmp_path):
    res = fake_results(n=24)
    scores, _ = ranked(res, min_correct=1)
    table = ablation.stage_distribution_table({"m": scores}, 1)
    assert table.set_index("stage").loc["early", "top"] == 1.0  # the planted head (1, 2) is early
    assert table["all"].sum() == pytest.approx(1.0) and set(table["k"]) == {1}
    assert ablation.stage_distribution_table({"m": scores}, 0.25)["k"].iloc[0] == 6
    # accuracy rises with the planted head's concentration
    res.scores["concentration"][:, 1, 2] = np.linspace(0, 1, 24)
    res.table["correct"] = np.arange(24) >= 12
    binned, grouped = ablation.concentration_accuracy(res, [(1, 2)], bins=4)
    assert binned["accuracy"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert binned["concentration"].is_monotonic_increasing and binned["samples"].sum() == 24
    assert len(grouped) == 6 and set(grouped.columns) >= {"question_kind", "prompt_kind", "accuracy"}
    fig = plots.stage_distribution(table)
    fig2 = plots.concentration_accuracy(binned, grouped)
    for f, name in ((fig, "stages"), (fig2, "conc")):
        assert all(p.stat().st_size > 0 for p in plots.save_figure(f, name, tmp_path))
    with pytest.raises(ValueError):
        ablation.concentration_accuracy(res, [])
    ranking = fake_results(n=24, seed=5)  # Figure 8: heads chosen on other (ranking) samples, measured on ``res``
    ranking.table["sample_id"] = [f"r{i}" for i in range(24)]
    with pytest.warns(UserWarning, match="could not be checked"):  # fake tables carry no record / image ids
        both, groups = ablation.concentration_tables(
            {"m": Ranking(ranking, scores, ""), "n": Ranking(ranking, scores, "")}, {"m": res, "n": res}, k=1)
    pd.testing.assert_frame_equal(both.iloc[:4].reset_index(drop=True), binned)
    assert len(both) == 8 and len(groups) == 12
    assert metrics.head_count(48, 0.1) == 5 and metrics.head_count(48, 100) == 48 and metrics.head_count(4, 0.01) == 1
    with pytest.raises(ValueError):
        metrics.head_count(48, 0)


def test_accuracy_table():
    a, b = fake_results(model="a"), fake_results(model="b", seed=1)
    b.settings["dataset"] = "pope"
    table = ablation.accuracy_table([a, b])
    assert table.loc["a", ("accuracy", "shapes")] == pytest.approx(a.accuracy)
    assert np.isnan(table.loc["a", ("accuracy", "pope")]) and table.loc["b", ("samples", "pope")] == 12


@pytest.fixture(scope="module")
def tiny():
    return offline.build("llava-v1.5-7b", tiny=True, layers=3)


def test_masking_curve_on_a_tiny_model(tiny):
    """About 10 s: a 3-layer tiny random LLaVA (576 image tokens), 2 samples, 6 generate calls."""
    model, processor = tiny
    samples = [s for s in data.load_shapes(limit=1) if s.question_kind == "general"]
    scores = np.zeros((3, 4))
    scores[0, 1], scores[2, 3] = 2.0, 1.0
    per_sample = ablation.masking_curve(model, processor, samples, scores, ks=[0, 2], seed=0, batch_size=2,
                                        max_new_tokens=2)
    assert len(per_sample) == 2 * (4 + 4)  # top, random (same stage), random_layer, late at k = 0 and 2
    top = per_sample[(per_sample.condition == "top") & (per_sample.k == 2)]
    assert top["heads"].iloc[0] == "0.1 2.3" and top["n_masked"].iloc[0] == 2
    assert top[["early", "late"]].iloc[0].tolist() == [1, 1]
    late = per_sample[(per_sample.condition == "late") & (per_sample.k == 2)]
    late_heads = late["heads"].iloc[0].split()  # the late stage's best, then one of the tied (seeded random tie-break)
    assert "2.3" in late_heads and len(late_heads) == 2 and all(h.startswith("2.") for h in late_heads)
    assert set(late["late"]) == {2}
    base = per_sample[per_sample.k == 0]
    assert base.groupby("condition")["prediction"].apply(tuple).nunique() == 1  # k = 0 shared
    # several random draws: distinct same-stage sets, averaged by curve_table
    draws = ablation.masking_curve(model, processor, samples, scores, ks=[2], conditions=("top", "random"), seed=0,
                                   batch_size=2, max_new_tokens=2, random_draws=3)
    rand = draws[draws.condition == "random"]
    assert sorted(rand["draw"].unique()) == [0, 1, 2] and rand["heads"].nunique() > 1
    assert set(rand["early"]) == {1} and set(rand["late"]) == {1}  # same stages as the top heads
    row = ablation.curve_table(draws).set_index("condition").loc["random"]
    assert row["draws"] == 3 and row["samples"] == len(samples) and row["accuracy"] == rand["correct"].mean()
    with pytest.raises(ValueError, match="random_draws"):
        ablation.masking_curve(model, processor, samples, scores, ks=[2], random_draws=0)
    # masking every head of every layer changes what the random model says
    everything = [(lyr, h) for lyr in range(3) for h in range(4)]
    unmasked = extract.answers(model, processor, samples, heads=[], max_new_tokens=3)
    masked = extract.answers(model, processor, samples, heads=everything, mode="zero", max_new_tokens=3)
    assert unmasked["sample_id"].tolist() == masked["sample_id"].tolist()
    assert unmasked["prediction"].tolist() != masked["prediction"].tolist()
    for table in (unmasked, masked):  # the answer form, recomputed from each prediction
        forms = [data.answer_form(s, p) for s, p in zip(samples, table["prediction"], strict=True)]
        assert table["read"].tolist() == [f["read"] for f in forms]
        assert table["first_word_correct"].tolist() == [f["first_word_correct"] for f in forms]
        assert not (table["correct"] & ~table["read"]).any()  # a correct answer is always read


def test_run_models_ranks_then_masks_held_out_samples(tiny, monkeypatch):
    """About 8 s: head_results on 2 samples, then masking at k = 0 and 1 (fractions of 12 heads)."""
    monkeypatch.setattr(ablation, "iter_models", lambda names, device=None: iter([tiny] * len(names)))
    rank = selection.samples("shapes/general/visual", 2)
    held_out = selection.samples("shapes/general/visual", 1, offset=2)
    per_sample, rankings, evaluated = ablation.run_models([None], rank, eval_samples=held_out, fractions=(0, 0.1),
                                                          conditions=("top",), batch_size=2, max_new_tokens=2,
                                                          min_correct=1)
    ((name, ranking),) = rankings.items()
    assert evaluated[name].table["sample_id"].tolist() == [s.id for s in held_out]  # Figure 8's samples
    res, scores, note = ranking.results, ranking.scores, ranking.note
    assert len(res) == 2 and scores.shape == (3, 4) and "detection score" in note
    assert per_sample["k"].tolist() == [0, 1] and set(per_sample["sample_id"]) == {held_out[0].id}
    assert per_sample["total_heads"].iloc[0] == 12 and per_sample["model"].iloc[0] == name
    assert per_sample["heads"].iloc[1] == "{}.{}".format(*ablation.head_sets(scores, 1, ("top",))["top"][0])
    # saved results of the same model replace the ranking run
    res.scores["region_hits"][:] = 0.0
    res.scores["region_hits"][:, 2, 3] = 1.0
    _, again, _ = ablation.run_models([None], [], eval_samples=held_out, fractions=(0, 0.1), conditions=("top",),
                                      saved=[res], batch_size=2, max_new_tokens=2, min_correct=1)
    assert again[name].results is res and np.unravel_index(np.argmax(again[name].scores), (3, 4)) == (2, 3)


def test_save_and_load_round_trip(tmp_path):
    res = fake_results(model="toy-z")
    scores, note = ranked(res, min_correct=1)
    per_sample = pd.DataFrame({"model": ["toy-z"] * 2, "condition": ["top", "top"], "k": [0, 2],
                               "correct": [True, False]})
    ablation.save(per_sample, {"toy-z": Ranking(res, scores, note)}, tmp_path / "out")
    with pytest.warns(UserWarning, match="no held-out results"):
        back, rankings, held_out = ablation.load(tmp_path / "out", min_correct=1)
    assert held_out == {}
    pd.testing.assert_frame_equal(back, per_sample)
    (name, ranking), = rankings.items()
    scores2, note2 = ranking.scores, ranking.note
    assert name == "toy-z" and note2 == note
    np.testing.assert_allclose(scores2, scores)
    with pytest.raises(FileNotFoundError, match="ablation.save"):
        ablation.load(tmp_path)


def test_random_same_layer_matches_layers_and_avoids_the_reference():
    ref = [(0, 1), (0, 2), (3, 0)]
    drawn = ablation.random_same_layer(ref, n_heads=4, seed=3)
    assert sorted(lyr for lyr, _ in drawn) == [0, 0, 3]
    assert not set(drawn) & set(ref)
    assert ablation.random_same_layer(ref, n_heads=4, seed=3) == drawn
    full = [(1, h) for h in range(3)]  # a layer with fewer other heads than asked: all of them, then own heads
    crowded = ablation.random_same_layer(full, n_heads=4, seed=0)
    assert (1, 3) in crowded and len(set(crowded)) == 3 and {lyr for lyr, _ in crowded} == {1}
    sets = ablation.head_sets(np.arange(24, dtype=float).reshape(6, 4), 3, ("top", "random_layer"), seed=1)
    assert sorted(lyr for lyr, _ in sets["random_layer"]) == sorted(lyr for lyr, _ in sets["top"])


def test_ranking_orders_tied_detection_scores_by_region_weight():
    """Heads whose detection scores tie (e.g. at zero in a model that barely looks at the image) are ordered by
    their attention mass on the box; distinct detection scores keep their order; then=None leaves the ties."""
    res = fake_results(n=8, layers=4, heads=3, correct=1.0)
    res.scores["region_hits"][:] = 0.0
    res.scores["region_hits"][:, 0, 0] = 0.5  # the one head with a detection score
    res.scores["region_weight"] = np.full((8, 4, 3), 0.01, np.float32)
    res.scores["region_weight"][:, 2, 1] = 0.2  # a tied head that looks at the box more
    res.scores["region_weight"][:, 0, 0] = 0.0
    ranking = res.ranking(min_correct=1)
    order = np.argsort(-ranking.scores.ravel(), kind="stable")
    assert tuple(np.unravel_index(order[0], (4, 3))) == (0, 0) and tuple(np.unravel_index(order[1], (4, 3))) == (2, 1)
    assert "ties (11 heads) ordered by region_weight" in ranking.note
    plain = res.ranking(min_correct=1, then=None)
    assert np.count_nonzero(plain.scores == 0) == 11 and "ordered by" not in plain.note
