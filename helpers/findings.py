"""What a notebook's outputs show, next to what the paper reports: rendered from the analysis tables.

    rows = [findings.Finding("Visual heads sit in early and middle layers", paper="[paper] early and middle layers",
                             measured="median top-head depth 0.41 [0.33, 0.52] of the LM", agrees=True)]
    findings.show(rows)            # prints the table every "What the organisms show" section points to

Notebook prose types no number (:func:`helpers.notebooks.typed_numbers`); the numbers of a finding are
formatted here from the tables that :mod:`helpers.agreement`, :mod:`helpers.ablation` and
:class:`helpers.results.Results` compute, and ``agrees`` is decided by a rule fixed in the function that
builds the finding (its docstring states it), never by hand. ``agrees=None`` means the comparison cannot
be decided at this sample size (the interval includes both answers) or the paper states nothing to compare.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .metrics import wilson_interval

VERDICTS = {True: "agrees", False: "disagrees", None: "undecided"}


@dataclass(frozen=True)
class Finding:
    """One claim: what the paper reports (with its provenance tag), what this run measured, and the verdict."""

    claim: str
    paper: str
    measured: str
    agrees: bool | None


def table(rows: Sequence[Finding]) -> pd.DataFrame:
    """The findings as a table: ``claim``, ``paper``, ``measured``, ``verdict``."""
    return pd.DataFrame([{"claim": f.claim, "paper": f.paper, "measured": f.measured,
                          "verdict": VERDICTS[f.agrees]} for f in rows],
                        columns=["claim", "paper", "measured", "verdict"])


def show(rows: Sequence[Finding]) -> pd.DataFrame:
    """Print every finding as one line (``verdict: claim — measured (paper: ...)``) and return :func:`table`."""
    for f in rows:
        print(f"{VERDICTS[f.agrees]}: {f.claim} - measured {f.measured} (paper: {f.paper})")
    return table(rows)


def rate(correct: int, n: int) -> str:
    """``"0.770 [0.707, 0.823] (n=200)"``: a share with its 95% Wilson interval."""
    low, high = wilson_interval(correct, n)
    return f"{correct / n:.3f} [{low:.3f}, {high:.3f}] (n={n})" if n else "no samples"


def above(correct: int, n: int, chance: float) -> bool | None:
    """True when the 95% Wilson interval of ``correct / n`` lies above ``chance``, False when it lies at or below
    it entirely, None when it includes ``chance``."""
    low, high = wilson_interval(correct, n)
    return True if low > chance else False if high <= chance else None


# ---------------------------------------------------------------------------------------------
# Verdicts on agreement tables (helpers.agreement.map_agreement fields), notebooks 05-07

SAME_PATTERN = 0.8  # ratio at or above this: the two maps show the same pattern up to sampling noise


def same_pattern(ratio_low: float, ratio_high: float, margin: float = SAME_PATTERN) -> bool | None:
    """Are two maps the same pattern up to sampling noise? Decided on the interval of the disattenuated agreement
    ``ratio`` (:func:`helpers.agreement.map_agreement`; printed as ``r/noise``): True when its low end is at or above ``margin`` (the correlation is
    at least ``margin`` of what two noisy measurements of one true map reach), False when its high end is below
    ``margin``, None otherwise or when the interval is not finite (no ceiling: a map with no reliability)."""
    if not (ratio_low == ratio_low and ratio_high == ratio_high) or abs(ratio_low) == float("inf"):
        return None
    return True if ratio_low >= margin else False if ratio_high < margin else None


def _ratio(row: object) -> str:
    get = row.__getitem__
    return (f"r={get('r'):.2f} (noise ceiling {get('ceiling'):.2f}); r/noise {get('ratio'):.2f} "
            f"[{get('ratio low'):.2f}, {get('ratio high'):.2f}]")


def condition_findings(table: pd.DataFrame, margin: float = SAME_PATTERN) -> list[Finding]:
    """Figure 3's two claims [paper] from :func:`helpers.agreement.condition_agreement` rows, per model and score.

    Rules, fixed before any result was seen (:func:`same_pattern` with ``margin``):
    - "the drawn box does not change the head pattern": the ``visual vs plain`` row. Agrees when the maps are the
      same pattern (True), disagrees when they differ (False), undecided otherwise.
    - "naming the object activates extra heads": the ``object vs general`` row. Agrees when the maps differ
      (``same_pattern`` False), disagrees when they are the same pattern, undecided otherwise. A different
      pattern is necessary for extra heads, not sufficient: the difference maps show where it lies.
    """
    claims = {"visual vs plain": ("drawn box leaves the head pattern unchanged",
                                  "[paper] the drawn box does not change the head pattern", False),
              "object vs general": ("naming the object changes the head pattern",
                                    "[paper] naming the object activates extra heads", True)}
    out = []
    for _, row in table.iterrows():
        if row["pair"] not in claims:
            continue
        claim, paper, flip = claims[row["pair"]]
        same = same_pattern(row["ratio low"], row["ratio high"], margin)
        agrees = None if same is None else (not same if flip else same)
        out.append(Finding(f"{row['model']} ({row['score']}): {claim}", paper,
                           f"{row['pair']}: {_ratio(row)}", agrees))
    return out


def family_findings(table: pd.DataFrame, margin: float = SAME_PATTERN) -> list[Finding]:
    """Figure 4's claim [paper] from :func:`helpers.agreement.family_agreement` rows.

    Rules, fixed before any result was seen (:func:`same_pattern` with ``margin``):
    - each within-family pair on the head basis: "correlate strongly" agrees when the maps are the same pattern up to
      noise, disagrees when they differ;
    - each across-family pair (depth-profile basis): "differ" agrees when the profiles differ, disagrees when they
      are the same pattern;
    - within vs across on one statistic (depth profile; the head basis has no across-family value, and a head-map r
      and a profile r are not the same statistic): agrees when every within-family pair's ``ratio low`` lies above
      every across-family pair's ``ratio high``, disagrees when some within-family ``ratio high`` lies below some
      across-family ``ratio low``, undecided otherwise.
    Undecided whenever the needed intervals are not finite.
    """
    out = []
    for _, row in table.iterrows():
        same = same_pattern(row["ratio low"], row["ratio high"], margin)
        pair = f"{row['a']} vs {row['b']} ({row['basis']}, {row['score']})"
        if row["same family"] and row["basis"] == "heads":
            out.append(Finding(f"same family correlates strongly: {pair}", "[paper] same family correlate strongly",
                               _ratio(row), same))
        elif not row["same family"]:
            out.append(Finding(f"across families differ: {pair}", "[paper] across families they differ", _ratio(row),
                               None if same is None else not same))
    prof = table[table["basis"] == "depth profile"]
    within, across = prof[prof["same family"]], prof[~prof["same family"]]
    if len(within) and len(across):
        w_low, w_high = within["ratio low"].min(), within["ratio high"].min()
        a_low, a_high = across["ratio low"].max(), across["ratio high"].max()
        finite = np.isfinite([w_low, w_high, a_low, a_high]).all()
        agrees = None if not finite else True if w_low > a_high else False if w_high < a_low else None
        out.append(Finding("within-family depth profiles agree more than across-family ones",
                           "[paper] same family correlate strongly; across families they differ",
                           f"depth profile r/noise within {within['ratio'].min():.2f} to "
                           f"{within['ratio'].max():.2f}, across {across['ratio'].min():.2f} to "
                           f"{across['ratio'].max():.2f}", agrees))
    return out


def task_set_findings(pair_rows: pd.DataFrame, levels: pd.DataFrame, margin: float = SAME_PATTERN) -> list[Finding]:
    """Figure 5's claims from :func:`helpers.agreement.task_set_agreement` tables, one pair of rows per model.

    Rules, fixed before any result was seen:
    - pattern, the [paper] claim "per model, the attention distribution is consistent across datasets": agrees
      when every pair of task sets is the same pattern (:func:`same_pattern` True), disagrees when some pair differs
      (False), undecided otherwise;
    - level, the Figure 5 caption "attention weights are inconsistent across datasets": the mean weight per task
      set with its 95% interval; "inconsistent" (agrees) when some two task sets' intervals do not overlap,
      disagrees when every two overlap, undecided when no two are apart and some interval is missing (too few
      records). (Overlap is a conservative test; it is the rule we fixed.)
    """
    out = []
    for model, rows in pair_rows.groupby("model", sort=False):
        verdicts = [same_pattern(lo, hi, margin) for lo, hi in zip(rows["ratio low"], rows["ratio high"], strict=True)]
        agrees = False if False in verdicts else True if verdicts and all(v is True for v in verdicts) else None
        measured = "; ".join(f"{a} vs {b}: r/noise {r:.2f} [{lo:.2f}, {hi:.2f}]" for a, b, r, lo, hi in
                             zip(rows["a"], rows["b"], rows["ratio"], rows["ratio low"], rows["ratio high"],
                                 strict=True))
        out.append(Finding(f"{model}: head pattern consistent across task sets",
                           "[paper] per model, the attention distribution is consistent across datasets", measured,
                           agrees))
        lv = levels[levels["model"] == model]
        apart = any(x["high"] < y["low"] or y["high"] < x["low"] for (_, x), (_, y) in
                    itertools.combinations(lv.iterrows(), 2))
        missing = not np.isfinite(lv[["low", "high"]].to_numpy(dtype=float)).all()
        level = True if apart else None if missing or len(lv) < 2 else False
        out.append(Finding(f"{model}: mean image weight differs across task sets",
                           "Figure 5 caption: attention weights are inconsistent across datasets",
                           "; ".join(f"{d} {m:.3f} [{lo:.3f}, {hi:.3f}]" for d, m, lo, hi in
                                     zip(lv["dataset"], lv["mean"], lv["low"], lv["high"], strict=True)),
                           level))
    return out
