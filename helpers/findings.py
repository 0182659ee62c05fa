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

from .extract import EagerCheck
from .metrics import wilson_interval
from .results import Results

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
# Notebook 02 (extraction) and 09 (explorer): rules fixed before any organism's results were looked at

SINK_SHARE = 0.2  # a layer "has a sink" in the median when the first token gets at least this share on average


def _across(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    if not values:
        return "no task set"
    return (fmt.format(values[0]) if len(values) == 1 else
            f"{fmt.format(sum(values) / len(values))} [{fmt.format(min(values))}, {fmt.format(max(values))}] "
            f"(mean [min, max] over {len(values)} task sets)")


def _all_or_none(flags: Sequence[bool]) -> bool | None:
    return True if all(flags) else False if not any(flags) else None


def capture_findings(check: EagerCheck, sinks: Mapping[str, pd.DataFrame]) -> list[Finding]:
    """Notebook 02: is the capture the attention, and where does the attention go (per task set ``sinks``:
    :meth:`helpers.results.Results.sink_table`)?

    Rules (fixed in advance):

    1. Capture equals eager attention: agrees when every compared element of :func:`helpers.extract.eager_check`
       is within its tolerance; undecided when no sample could be compared.
    2. Attention sink on the first token ([ours]: pretrained LMs, and the LLaVA models built on them, put a
       large share on the first token): per task set the median over layers of the mean first-token share;
       agrees when it is at least :data:`SINK_SHARE` on every task set, disagrees when below on every one,
       else undecided.
    3. Past the first layers the image gets less attention than uniform ([ours] reported for LLaVA-1.5 by
       FastV, Chen et al. 2024: image tokens receive little attention after the shallow layers): per task set
       the median over the second half of the layers of the mean ``W / (|V|/K)``; agrees when below one on
       every task set, disagrees when at or above one on every one, else undecided.
    """
    rows = [Finding("Captured rows equal eager attention's output_attentions",
                    "[code] attention probabilities after softmax, eager attention",
                    f"max abs diff {check.max_abs_diff:.1e} (tolerance {check.atol:g} + {check.rtol:g}|p|, "
                    f"{check.dtype}) over {check.rows} rows of {check.samples} samples",
                    check.agrees if check.samples else None)]
    medians = [float(t["first_token"].median()) for t in sinks.values()]
    rows.append(Finding("The first token is an attention sink in most layers",
                        "[ours] pretrained LMs (and LLaVA on them) put a large share on the first token",
                        f"median over layers of the first-token share {_across(medians)}",
                        _all_or_none([m >= SINK_SHARE for m in medians]) if medians else None))
    late = [float(t["weight_vs_uniform"].iloc[len(t) // 2:].median()) for t in sinks.values()]
    rows.append(Finding("Past the first layers the image gets less attention than uniform attention would give it",
                        "[ours] LLaVA-1.5: image tokens get little attention after the shallow layers (FastV)",
                        f"median over the second half of the layers of W / (|V|/K) {_across(late)}",
                        _all_or_none([v < 1 for v in late]) if late else None))
    return rows


def top_heads_in_box(res: Results, heads: Sequence[tuple[int, int]]) -> np.ndarray:
    """Per sample of ``res`` with a box (bool ``[samples with a box]``): whether the mean over ``heads`` of the
    share of image attention inside the box (score ``region_share``) exceeds the box's share of the image
    tokens (``n_region_tokens / n_image_tokens``: what uniform attention over the image would give)."""
    layers, cols = zip(*heads, strict=True) if heads else ((), ())
    picked = res.scores["region_share"][:, list(layers), list(cols)]  # [samples, heads]
    counted = np.isfinite(picked).sum(1)
    share = np.where(counted > 0, np.nansum(picked, axis=1) / np.maximum(counted, 1), np.nan)
    uniform = res.table["n_region_tokens"].to_numpy(float) / res.table["n_image_tokens"].to_numpy(float)
    box = np.isfinite(share) & (res.table["n_region_tokens"].to_numpy() > 0)
    return share[box] > uniform[box]


def masking_findings(unmasked: Sequence[bool], top: Sequence[bool], random: Sequence[bool], *, k: int,
                     top_region: Sequence[bool]) -> list[Finding]:
    """Notebook 09: the explorer's scripted masking and where its top heads look.

    ``unmasked`` / ``top`` / ``random``: per sample, answered correctly without masking, with the ``k`` top heads
    of the score map masked, with ``k`` random heads masked. ``top_region``: per sample with a box, whether the
    top heads look at the box more than uniform attention would (:func:`top_heads_in_box`).

    Rules (fixed in advance):

    1. Masking the top heads hurts more than masking random heads ([ours] reconstruction of Figures 6-8):
       agrees when the 95% Wilson interval of the top-masked accuracy lies entirely below the random-masked
       one, disagrees when it lies entirely above, else undecided.
    2. The top heads look at the box ([paper] a distinct class of heads attends to visual content): agrees
       when the 95% Wilson interval of the share of samples in ``top_region`` lies above one half
       (:func:`above`), disagrees when at or below it, else undecided.
    """
    def acc(flags: Sequence[bool]) -> tuple[int, int]:
        return int(sum(bool(f) for f in flags)), len(flags)

    (ct, nt), (cr, nr), (cu, nu) = acc(top), acc(random), acc(unmasked)
    top_hi, rand_lo = wilson_interval(ct, nt)[1], wilson_interval(cr, nr)[0]
    top_lo, rand_hi = wilson_interval(ct, nt)[0], wilson_interval(cr, nr)[1]
    verdict = True if top_hi < rand_lo else False if top_lo > rand_hi else None
    inside, n_box = acc(top_region)
    return [
        Finding(f"Masking the top {k} heads hurts accuracy more than masking {k} random heads",
                "[ours] reconstruction of Figures 6-8 (masking curves)",
                f"accuracy unmasked {rate(cu, nu)}, top masked {rate(ct, nt)}, random masked {rate(cr, nr)}",
                verdict if nt and nr else None),
        Finding(f"The top {k} heads put more of their image attention in the box than uniform attention",
                "[paper] a distinct class of attention heads attends to visual content",
                f"share of samples {rate(inside, n_box)}", above(inside, n_box, 0.5) if n_box else None),
    ]
