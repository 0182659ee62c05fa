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

from collections.abc import Mapping, Sequence
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


def _interval(value: float, low: float, high: float) -> str:
    """``"+0.123 [+0.050, +0.200]"``, or ``"+0.123 (no interval)"`` when the interval is NaN."""
    if np.isnan(low) or np.isnan(high):
        return f"{value:+.3f} (no interval)"
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def _sign(low: float, high: float, expect: int) -> bool | None:
    """True when the interval ``[low, high]`` lies wholly on the ``expect`` side of 0 (+1: above, -1: below),
    False when it lies wholly on the other side, None when it includes 0 (or is NaN)."""
    if low * expect > 0 and high * expect > 0:
        return True
    if low * expect < 0 and high * expect < 0:
        return False
    return None


def above_chance(label: str, correct: int, n: int, chance: float, *, paper: str) -> Finding:
    """"``label`` answers above chance". Verdict (:func:`above`): agrees when the 95% Wilson interval of the
    accuracy lies above ``chance``, disagrees when it lies at or below it, undecided when it includes it."""
    return Finding(f"{label} answers above chance ({chance:.3f})", paper, rate(correct, n),
                   above(correct, n, chance))


def head_relation(model: str, dataset: str, with_weight: dict, with_concentration: dict) -> Finding:
    """Visual heads are the heads with high image weight and high concentration (Figure 1).

    ``with_weight``, ``with_concentration``: :func:`helpers.agreement.score_correlation` of the detection
    score (``region_hits``) with the weight and with the concentration, across heads. Verdict, fixed before
    looking: agrees when both 95% intervals lie above 0; disagrees when either lies below 0; else undecided
    (including when an interval is NaN: too few records to resample).
    """
    w, c = with_weight, with_concentration
    verdicts = [_sign(w["low"], w["high"], +1), _sign(c["low"], c["high"], +1)]
    agrees = False if False in verdicts else True if all(verdicts) else None
    measured = (f"{model} on {dataset}: Spearman over {w['heads']} heads of detection with W "
                f"{_interval(w['rho'], w['low'], w['high'])}, with C {_interval(c['rho'], c['low'], c['high'])} "
                f"(n={w['samples']}, {w.get('records', w['samples'])} records"
                f"{'; too few records for an interval' if np.isnan(w['low']) else ''})")
    return Finding("heads that find the box are the heads with high weight and high concentration",
                   "[paper] Head behaviour correlates with the total attention weight on visual tokens and with how "
                   "concentrated that attention is", measured, agrees)


def split_relation(model: str, split: dict, *, claim: str, paper: str, expect: int, score: str) -> Finding:
    """An accuracy claim about a per-sample score (:func:`helpers.ablation.split_accuracy`: samples above vs at
    or below the median of ``score``, pooled over data sets). ``expect``: +1 when the paper says the samples
    with the higher score are answered better, -1 when worse. Verdict, fixed before looking: agrees when the
    95% interval of the accuracy difference (above minus below) lies wholly on the ``expect`` side of 0,
    disagrees when it lies wholly on the other side, undecided when it includes 0."""
    s = split
    measured = (f"{model}: accuracy above minus below the median {score} "
                f"{_interval(s['diff'], s['diff_low'], s['diff_high'])} "
                f"({s['high_correct']}/{s['high_n']} vs {s['low_correct']}/{s['low_n']})")
    return Finding(claim, paper, measured, _sign(s["diff_low"], s["diff_high"], expect))


def balanced(label: str, counts: Mapping[str, int], chance: float, *, paper: str) -> Finding:
    """"``label``'s answers are balanced": the most frequent answer's share of ``counts`` (answer -> samples)
    with its 95% Wilson interval. Verdict, fixed before looking: agrees when the interval includes ``chance``
    (the share every answer has in a balanced set) or lies below it, disagrees when it lies above it, so that
    always giving that answer beats guessing."""
    top, k = max(counts.items(), key=lambda item: item[1])
    n = sum(counts.values())
    return Finding(f"{label}: no answer is favoured (guessing gives {chance:.3f})", paper,
                   f"most frequent answer {top!r}: {rate(k, n)}", above(k, n, chance) is not True)


def box_needed(label: str, correct: int, n: int, *, paper: str) -> Finding:
    """"On ``label`` a reader of the whole image who cannot find the box answers fewer than half right" (so a
    model far above that reads the box): ``correct`` of ``n`` right with the best whole-image guess. Verdict,
    fixed before looking: agrees when the 95% Wilson interval lies at or below 0.5, disagrees when it lies above it,
    undecided when it includes it."""
    verdict = above(correct, n, 0.5)
    return Finding(f"{label}: the box is needed (whole-image guess < 0.5)", paper,
                   f"largest-group guess {rate(correct, n)}", None if verdict is None else not verdict)
