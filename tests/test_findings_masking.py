"""Verdict rules of notebook 08's findings (helpers.findings.stage_findings, masking_curve_findings)."""

from __future__ import annotations

import pandas as pd

from helpers import ablation, findings


def _stages(top_early_middle: float, k: int) -> pd.DataFrame:
    rest = 1 - top_early_middle
    return pd.DataFrame([{"model": "m", "stage": s, "top": t, "all": 1 / 3, "k": k}
                         for s, t in (("early", top_early_middle / 2), ("middle", top_early_middle / 2), ("late", rest))])


def test_stage_findings_follow_the_binomial_rule():
    assert findings.stage_findings(_stages(1.0, 40))[0].agrees is True  # 40 of 40 early/middle, expected 2/3
    assert findings.stage_findings(_stages(0.25, 40))[0].agrees is False  # 10 of 40
    assert findings.stage_findings(_stages(0.75, 8))[0].agrees is None  # 6 of 8: interval includes 2/3


def _per_sample(top: int, control: int, n: int = 60, k: int = 4) -> pd.DataFrame:
    rows = [{"model": "m", "condition": "top", "k": k, "draw": 0, "correct": i < top} for i in range(n)]
    for cond in ("random", "random_layer"):
        rows += [{"model": "m", "condition": cond, "k": k, "draw": 0, "correct": i < control} for i in range(n)]
    return pd.DataFrame(rows)


def test_masking_curve_findings_compare_top_with_each_control():
    hurt = findings.masking_curve_findings(_per_sample(top=20, control=50), "m", k=4)
    assert [f.agrees for f in hurt] == [True, True] and "same stages" in hurt[0].claim and "same layers" in hurt[1].claim
    helps = findings.masking_curve_findings(_per_sample(top=50, control=20), "m", k=4)
    assert [f.agrees for f in helps] == [False, False]
    assert [f.agrees for f in findings.masking_curve_findings(_per_sample(top=40, control=42), "m", k=4)] == [None, None]
    assert findings.masking_curve_findings(_per_sample(top=40, control=42), "m", k=8) == []  # no rows at that k


def test_a_run_on_answer_is_told_from_a_wrong_choice():
    """Top heads whose masking breaks the answer format: accuracy falls, the first word stays right. The verdict
    rule counts accuracy alone (fixed in advance); ``measured`` and ``ablation.form_table`` show the first word."""
    rows = _per_sample(top=5, control=50)
    rows["read"] = rows["correct"] | (rows.condition != "top")
    rows["first_word_correct"] = rows.index % 60 < 50  # every condition: the first word right 50 times of 60
    for column in ("n_masked", "early", "middle", "late"):
        rows[column] = 4 if column == "n_masked" else 0
    rows["sample_id"] = [f"s{i % 60}" for i in range(len(rows))]
    found = findings.masking_curve_findings(rows, "m", k=4)
    assert found[0].agrees is True and "first word right: top 0.833 [0.720, 0.907] (n=60)" in found[0].measured
    assert "first word" not in findings.masking_curve_findings(_per_sample(top=5, control=50), "m", k=4)[0].measured
    form = ablation.form_table(rows)
    assert form.loc[("m", "top", "accuracy"), 4] == 5 / 60 and form.loc[("m", "top", "read"), 4] == 5 / 60
    assert form.loc[("m", "top", "first_word"), 4] == form.loc[("m", "random", "first_word"), 4] == 50 / 60
    assert ablation.form_table(rows.drop(columns=["read", "first_word_correct"])).empty


def test_masking_task_rule_picks_the_largest_margin_above_chance():
    card = {"scenes-count": {"accuracy": 0.3, "ci95": [0.24, 0.37], "chance": 1 / 6},
            "scenes-pope": {"accuracy": 0.77, "ci95": [0.71, 0.82], "chance": 0.5},
            "scenes-choice": {"accuracy": 0.23, "ci95": [0.18, 0.29], "chance": 0.25}}
    assert ablation.masking_task("m", card).task == "scenes-pope"  # margin 0.21 beats 0.07
    at_chance = {t: {**v, "ci95": [v["chance"] - 0.05, v["chance"] + 0.05]} for t, v in card.items()}
    choice = ablation.masking_task("m", at_chance)
    assert choice.task is None and "not masked" in choice.reason
    assert ablation.masking_task("m", None, fallback="scenes-pope").task == "scenes-pope"
    assert "+-0.098" in findings.interval_width(96)
