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

from collections.abc import Sequence
from dataclasses import dataclass

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
