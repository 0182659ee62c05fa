"""Agreement judged against sampling noise (helpers.agreement.map_agreement and the tables of notebooks 05-07)
and the verdicts helpers.findings draws from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import agreement, findings
from helpers.results import Results


def values(base: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    return base[None] + np.random.default_rng(seed).normal(0, noise, (n, *base.shape))


def results(base: np.ndarray, *, n: int = 24, noise: float = 0.3, seed: int = 0, model: str = "m",
            dataset: str = "d", kinds: tuple[str, str] = ("visual", "plain"), other: np.ndarray | None = None
            ) -> Results:
    """``n`` samples, alternating prompt kinds; with ``other``, the second kind's samples come from that map."""
    w = values(base, n, noise, seed)
    if other is not None:
        w[1::2] = values(other, n, noise, seed + 7)[1::2]
    table = pd.DataFrame({"index": np.arange(n), "sample_id": [f"s{i}" for i in range(n)],
                          "prompt_kind": (list(kinds) * n)[:n], "question_kind": "general", "correct": [True] * n})
    w = w.astype(np.float32)
    return Results(table, {"weight": w, "region_hits": w.copy()}, {"model_name": model, "dataset": dataset})


def test_reliability_falls_with_noise_and_needs_samples():
    base = np.random.default_rng(1).uniform(size=(8, 5))
    clean = agreement.reliability(values(base, 20, 0.05, 0))
    noisy = agreement.reliability(values(base, 20, 3.0, 0))
    assert clean > 0.95 > noisy
    assert np.isnan(agreement.reliability(values(base, 3, 0.1, 0)))
    prof = agreement.reliability(values(base, 20, 0.05, 0), "depth profile")
    assert prof > 0.9
    with pytest.raises(ValueError, match="basis"):
        agreement.reliability(values(base, 20, 0.05, 0), "layers")


def test_map_agreement_reaches_the_ceiling_only_for_one_true_map():
    rng = np.random.default_rng(2)
    base, other = rng.uniform(size=(8, 5)), rng.uniform(size=(8, 5))
    same = agreement.map_agreement(values(base, 30, 0.5, 0), values(base, 30, 0.5, 1), n_boot=100)
    diff = agreement.map_agreement(values(base, 30, 0.5, 0), values(other, 30, 0.5, 1), n_boot=100)
    assert same["ratio high"] >= findings.SAME_PATTERN and same["ratio low"] <= same["ratio"] <= same["ratio high"]
    assert findings.same_pattern(same["ratio low"], same["ratio high"]) is not False
    assert findings.same_pattern(diff["ratio low"], diff["ratio high"]) is False
    deep = values(rng.uniform(size=(12, 3)), 30, 0.5, 2)
    ids = list(range(30))
    prof = agreement.map_agreement(values(base, 30, 0.5, 0), deep, "depth profile", units_a=ids, units_b=ids, n_boot=20)
    assert np.isfinite(prof["r"]) and prof["samples b"] == 30
    with pytest.raises(ValueError, match="one unit label per sample"):
        agreement.map_agreement(values(base, 30, 0.5, 0), values(base, 20, 0.5, 0), units_a=ids, units_b=ids)


def test_paired_sets_are_not_credited_for_their_shared_images():
    """Two conditions that share each record's image noise but have different true maps: the full-sample r is
    high (shared noise), the cross-half ratio is not fooled."""
    rng = np.random.default_rng(6)
    base, other = rng.uniform(size=(8, 5)), rng.uniform(size=(8, 5))
    shared = rng.normal(0, 3.0, (40, 8, 5))  # one image effect per record, seen by both conditions
    a = base[None] + shared + rng.normal(0, 0.1, (40, 8, 5))
    b = other[None] + shared + rng.normal(0, 0.1, (40, 8, 5))
    ids = [f"rec{i}" for i in range(40)]
    out = agreement.map_agreement(a, b, units_a=ids, units_b=ids, n_boot=50)
    assert out["r"] > out["ceiling"] * 0.9  # the naive comparison looks like agreement
    assert findings.same_pattern(out["ratio low"], out["ratio high"]) is False


def test_same_pattern_rule():
    assert findings.same_pattern(0.85, 1.1) is True
    assert findings.same_pattern(0.2, 0.7) is False
    assert findings.same_pattern(0.5, 0.9) is None
    assert findings.same_pattern(float("nan"), 1.0) is None


def test_condition_findings_turn_on_what_the_box_changes():
    rng = np.random.default_rng(3)
    base, other = rng.uniform(size=(8, 5)), rng.uniform(size=(8, 5))
    unchanged = agreement.condition_agreement(results(base, n=40, noise=0.2), [("visual", "plain")], ["weight"],
                                              n_boot=50)
    changed = agreement.condition_agreement(results(base, n=40, noise=0.2, other=other), [("visual", "plain")],
                                            ["weight"], n_boot=50)
    assert list(unchanged["pair"]) == ["visual vs plain"] and unchanged["ratio"].iloc[0] > changed["ratio"].iloc[0]
    (same,) = findings.condition_findings(unchanged)
    (diff,) = findings.condition_findings(changed)
    assert same.agrees is True and diff.agrees is False and "noise ceiling" in diff.measured
    named = findings.condition_findings(changed.assign(pair="object vs general"))
    assert named[0].agrees is True  # a changed pattern is what "naming activates extra heads" needs


def test_family_agreement_rows_and_verdicts():
    rng = np.random.default_rng(4)
    base, deep = rng.uniform(size=(8, 5)), rng.uniform(size=(12, 3))
    res = [results(base, seed=0, model="a1"), results(base, seed=1, model="a2"), results(deep, seed=2, model="b1")]
    fams = {"a1": "A", "a2": "A", "b1": "B"}
    table = agreement.family_agreement(res, "weight", families=fams, n_boot=30)
    assert sorted(zip(table["a"], table["b"], table["basis"], strict=True)) == [
        ("a1", "a2", "depth profile"), ("a1", "a2", "heads"), ("a1", "b1", "depth profile"),
        ("a2", "b1", "depth profile")]
    rows = findings.family_findings(table)
    assert [f.claim.split(":")[0] for f in rows] == ["same family correlates strongly", "across families differ",
                                                   "across families differ",
                                                   "within-family depth profiles agree more than across-family ones"]
    assert rows[0].agrees is True


def test_task_set_agreement_levels_and_findings():
    base = np.random.default_rng(5).uniform(size=(8, 5))
    same = [results(base, seed=s, dataset=f"set{s}") for s in range(3)]
    shifted = [results(base + 5 * s, seed=s, dataset=f"set{s}") for s in range(3)]
    pairs, levels = agreement.task_set_agreement({"m": same, "shifted": shifted}, "weight", n_boot=30)
    assert len(pairs) == 6 and list(levels["samples"]) == [24] * 6
    rows = {f.claim: f.agrees for f in findings.task_set_findings(pairs, levels)}
    assert rows["m: head pattern consistent across task sets"] is True
    assert rows["m: mean image weight differs across task sets"] is False
    assert rows["shifted: mean image weight differs across task sets"] is True


def test_agreement_intervals_draws_one_row_per_comparison():
    import matplotlib

    matplotlib.use("Agg")
    from helpers import plots

    table = pd.DataFrame({"a": ["x", "y"], "basis": ["heads", "depth profile"], "r": [0.5, 0.1], "ratio": [0.6, 0.1],
                          "ratio low": [0.3, -0.2], "ratio high": [0.7, 0.4], "ceiling": [0.9, 0.8],
                          "same family": [True, False]})
    fig = plots.agreement_intervals(table, ["a", "basis"], group="same family", margin=0.8, title="t")
    ax = fig.axes[0]
    placed = dict(zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()], strict=True))
    assert placed == {1: "x · heads", 0: "y · depth profile"}  # the first row on top
    with pytest.raises(ValueError, match="no comparisons"):
        plots.agreement_intervals(table.iloc[:0], ["a"])


def test_head_basis_r_is_metrics_pearson():
    from helpers import metrics

    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    a[0, 0] = np.nan
    assert agreement._r(a, b, "heads", 20) == pytest.approx(metrics.pearson(a, b))
    deep = rng.normal(size=(9, 3))
    assert agreement._r(a, deep, "depth profile", 20) == pytest.approx(metrics.profile_correlation(a, deep, 20))
    assert np.isnan(agreement._r(np.full((2, 2), np.nan), b[:2, :2], "heads", 20))
    with pytest.raises(ValueError, match="depth profiles"):
        agreement._r(a, b[:3], "heads", 20)


def test_too_few_units_give_no_interval():
    base = np.random.default_rng(8).uniform(size=(8, 5))
    ids = ["r0"] * 6 + ["r1"] * 6  # two records: each half holds one
    out = agreement.map_agreement(values(base, 12, 0.3, 0), values(base, 12, 0.3, 1), units_a=ids, units_b=ids,
                                  n_boot=20)
    assert np.isfinite(out["ratio"]) and np.isnan(out["ratio low"]) and np.isnan(out["ratio high"])
    assert findings.same_pattern(out["ratio low"], out["ratio high"]) is None


def test_units_of_disjoint_sets_are_halved_on_their_own():
    """Sets with units of their own (two task sets) are not paired: each is halved by its own records."""
    base = np.random.default_rng(9).uniform(size=(8, 5))
    ua = [f"a{i // 6}" for i in range(24)]
    ub = [f"b{i}" for i in range(24)]
    out = agreement.map_agreement(values(base, 24, 0.3, 0), values(base, 24, 0.3, 1), units_a=ua, units_b=ub,
                                  n_boot=20)
    assert np.isfinite(out["ratio low"]) and out["ratio"] > 0.8
    few = agreement.map_agreement(values(base, 12, 0.3, 0), values(base, 24, 0.3, 1), units_a=ua[:12], units_b=ub,
                                  n_boot=20)
    assert np.isnan(few["ratio low"])  # two records on one side: no interval


def test_level_needs_enough_records():
    base = np.random.default_rng(10).uniform(size=(8, 5))
    two_records = [results(base, n=12, seed=s, dataset=f"set{s}") for s in range(2)]
    for r in two_records:
        r.table["sample_id"] = [f"rec{i // 6}:general:visual" for i in range(12)]
    pairs, levels = agreement.task_set_agreement({"m": two_records}, "weight", n_boot=10)
    assert levels[["low", "high"]].isna().all().all()
    rows = {f.claim: f.agrees for f in findings.task_set_findings(pairs, levels)}
    assert rows["m: mean image weight differs across task sets"] is None
    assert rows["m: head pattern consistent across task sets"] is None
