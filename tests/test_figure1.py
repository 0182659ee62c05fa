"""Figure 1's analysis (notebook 03) and notebook 01's accuracy: results.summary, agreement.score_correlation,
ablation.sample_score / split_accuracy, metrics.difference_interval, the findings built from them, and
runs.extractions with a model already loaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import ablation, agreement, cache, findings, metrics, results, runs, selection
from helpers.results import Results


def fake(n: int = 40, layers: int = 4, heads: int = 3, seed: int = 0, *, couple: float = 1.0,
         accuracy_follows: str | None = None, dataset: str = "d") -> Results:
    """Results whose detection score rises with a head's weight (``couple`` > 0) or falls (< 0); with
    ``accuracy_follows``, a sample is correct when that per-sample score is above its median."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.05, 0.9, (layers, heads))
    w = np.clip(base[None] + rng.normal(0, 0.02, (n, layers, heads)), 0.01, 1).astype(np.float32)
    c = np.clip(0.2 + 0.5 * base[None] + rng.normal(0, 0.02, (n, layers, heads)), 0, 1).astype(np.float32)
    hits = np.clip(0.5 + couple * (base[None] - 0.5) + rng.normal(0, 0.02, w.shape), 0, 1).astype(np.float32)
    scores = {"weight": w, "concentration": c, "region_hits": hits,
              "first_key_share": np.full_like(w, 0.3), "weight_vs_uniform": w / 0.5,
              "effective_tokens": (64 * (1 - c)).astype(np.float32)}
    table = pd.DataFrame({"index": np.arange(n), "sample_id": [f"s{i}" for i in range(n)],
                          "correct": rng.uniform(size=n) < 0.5, "n_image_tokens": 64})
    res = Results(table, scores, {"model_name": "m", "dataset": dataset})
    if accuracy_follows:
        value = ablation.sample_score(res, accuracy_follows)
        res.table["correct"] = value > np.median(value)
    return res


def test_difference_interval_matches_newcombe_and_handles_empty():
    diff, low, high = metrics.difference_interval(56, 70, 48, 80)  # Newcombe (1998), example: 0.8 - 0.6
    assert diff == pytest.approx(0.2) and low == pytest.approx(0.0524, abs=2e-3) and high == pytest.approx(0.3339, abs=2e-3)
    assert all(np.isnan(v) for v in metrics.difference_interval(1, 0, 1, 2))
    d, lo, hi = metrics.difference_interval(5, 10, 5, 10)
    assert d == 0 and lo < 0 < hi


def test_summary_reports_accuracy_interval_and_head_means():
    res = fake()
    res.table["correct"] = [True] * 10 + [False] * 30
    row = results.summary([res]).iloc[0]
    assert row["accuracy"] == 0.25 and (row["acc_low"], row["acc_high"]) == metrics.wilson_interval(10, 40)
    assert row["image_tokens"] == 64 and row["first_key_share"] == pytest.approx(0.3)
    assert row["concentration"] == pytest.approx(np.nanmean(res.per_head("concentration")))
    assert row["spearman_wc"] > 0.9  # concentration rises with weight across heads in fake()
    del res.scores["effective_tokens"]
    assert np.isnan(results.summary([res]).iloc[0]["effective_tokens"])


def test_score_correlation_sign_and_interval():
    up = agreement.score_correlation(fake(couple=1.0), "region_hits", "weight", n_boot=50)
    down = agreement.score_correlation(fake(couple=-1.0), "region_hits", "weight", n_boot=50)
    assert up["low"] > 0.5 and up["heads"] == 12 and up["samples"] == 40
    assert down["high"] < -0.5 and down["low"] <= down["rho"] <= down["high"]
    with pytest.raises(KeyError, match="nope"):
        agreement.score_correlation(fake(), "region_hits", "nope")
    grouped = fake()
    grouped.table["sample_id"] = [f"r{i // 6}:general:visual" for i in range(40)]  # records resampled whole
    assert agreement.score_correlation(grouped, "region_hits", "weight", n_boot=10, min_records=5)["records"] == 7
    few = agreement.score_correlation(grouped, "region_hits", "weight", n_boot=10)  # 7 records < min_records
    undecided = findings.head_relation("m", "d", few, few)
    assert np.isnan(few["low"]) and undecided.agrees is None and "(no interval)" in undecided.measured


def test_sample_score_is_weighted_for_concentration():
    res = fake(n=1, layers=1, heads=2)
    res.scores["weight"][:] = np.array([[[0.9, 0.1]]])
    res.scores["concentration"][:] = np.array([[[1.0, 0.0]]])
    assert ablation.sample_score(res, "concentration")[0] == pytest.approx(0.9)
    assert ablation.sample_score(res, "weight")[0] == pytest.approx(0.5)


def test_split_accuracy_pools_per_dataset_medians_and_findings_follow():
    good = [fake(seed=s, accuracy_follows="concentration", dataset=f"d{s}") for s in range(2)]
    split = ablation.split_accuracy(good, "concentration")
    assert split["high_n"] + split["low_n"] == 80 and split["high_correct"] == split["high_n"]
    assert split["low_correct"] == 0 and split["diff_low"] > 0.5
    assert findings.split_relation("m", split, claim="c", paper="[paper] p", expect=+1, score="C").agrees is True
    assert findings.split_relation("m", split, claim="c", paper="[paper] p", expect=-1, score="C").agrees is False
    noise = ablation.split_accuracy([fake(n=8, seed=3)], "concentration")
    assert findings.split_relation("m", noise, claim="c", paper="p", expect=+1, score="C").agrees is None


def test_head_relation_and_above_chance_verdicts():
    res = fake(couple=1.0)
    w = agreement.score_correlation(res, "region_hits", "weight", n_boot=30)
    c = agreement.score_correlation(res, "region_hits", "concentration", n_boot=30)
    assert findings.head_relation("m", "d", w, c).agrees is True
    flipped = {**c, "rho": -0.8, "low": -0.9, "high": -0.7}
    assert findings.head_relation("m", "d", w, flipped).agrees is False
    assert findings.head_relation("m", "d", w, {**c, "low": -0.1}).agrees is None
    assert findings.above_chance("x", 90, 100, 0.5, paper="p").agrees is True
    assert findings.above_chance("x", 10, 100, 0.5, paper="p").agrees is False
    assert findings.above_chance("x", 3, 6, 0.5, paper="p").agrees is None


def test_extractions_use_a_loaded_model_instead_of_loading(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    toy = selection.toy_models()[0]
    loaded = selection.load_default(toy)

    def no_loading(*args, **kwargs):
        raise AssertionError("loaded again although a loaded model was given")

    monkeypatch.setattr(runs, "iter_models", no_loading)
    first = runs.extractions(toy, ["shapes"], n_samples=4, batch_size=4, loaded=loaded)[0]
    again = runs.extractions(toy, ["shapes"], n_samples=4, batch_size=4)[0]  # read back under the model's key
    assert len(first) == 4 and np.array_equal(first.scores["weight"], again.scores["weight"])


def test_largest_group_guess_and_data_findings():
    from helpers import data, tasks

    counts = [s for s in data.load_scenes_count(limit=60, question_kinds=["general"], prompt_kinds=["visual"])]
    guesses = [tasks.largest_group_guess(s) == s.answer for s in counts]
    assert 0 < sum(guesses) < len(guesses)  # the balanced layout: the largest group is the target only sometimes
    sample = counts[0]
    sample.meta["group_sizes"] = {"blue circle": 2, "green square": 6, "cyan diamond": 1}
    assert tasks.largest_group_guess(sample) == "6"
    with pytest.raises(KeyError, match="group_sizes"):
        tasks.largest_group_guess(data.Sample("x", None, "q", "1", "p", "b", "count"))
    assert findings.box_needed("c", 10, 100, paper="[ours] p").agrees is True
    assert findings.box_needed("c", 90, 100, paper="[ours] p").agrees is False
    assert findings.balanced("c", {"yes": 50, "no": 50}, 0.5, paper="p").agrees is True
    assert findings.balanced("c", {"yes": 95, "no": 5}, 0.5, paper="p").agrees is False


def test_sample_examples_draws_one_column_per_sample():
    import matplotlib

    from helpers import data, plots

    matplotlib.use("Agg")
    pope = data.load_scenes_pope(limit=1)[0]
    choice = data.load_scenes_choice(limit=1)[0]
    fig = plots.sample_examples([pope, choice], title="t")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(fig.axes) == 4 and any("A. " in t for t in texts) and any(f"gold: {pope.answer}" in t for t in texts)
    with pytest.raises(ValueError):
        plots.sample_examples([])


def test_task_set_summary_counts_records_once():
    from helpers import data, tasks

    count = data.load_scenes_count(limit=4)
    pope = data.load_scenes_pope(category=None, limit=6)
    table = tasks.summary({"scenes-count": count, "scenes-pope": pope}).set_index("task_set")
    assert table.loc["scenes-count", "samples"] == 24 and table.loc["scenes-count", "records"] == 4
    assert sum(table.loc["scenes-count", "answers"].values()) == 4
    assert table.loc["scenes-count", "kinds"]["general/visual"] == 4
    assert table.loc["scenes-pope", "chance"] == 0.5 and sum(table.loc["scenes-pope", "answers"].values()) == 6
