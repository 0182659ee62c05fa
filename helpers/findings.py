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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .extract import EagerCheck
from .metrics import difference_interval, wilson_interval
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


def stage_findings(stages: pd.DataFrame) -> list[Finding]:
    """Notebook 08, Figure 7: do the top visual heads sit in the early and middle stages?

    ``stages``: :func:`helpers.ablation.stage_distribution_table` (per model and stage: ``top`` share of its
    top-k heads, ``all`` share of all heads, ``k``). Rule (fixed in advance): per model, the number of top heads
    in the early and middle stages against a binomial draw at their share of all heads; agrees when the 95%
    Wilson interval of the early+middle share lies above that share, disagrees when it lies at or below it,
    else undecided.
    """
    rows = []
    for model, part in stages.groupby("model", sort=False):
        k = int(part["k"].iloc[0])
        lead = part[part.stage.isin(["early", "middle"])]
        inside, expected = int(round(float(lead["top"].sum()) * k)), float(lead["all"].sum())
        rows.append(Finding(f"{model}: the top visual heads sit in the early and middle stages",
                            "[paper] visual heads sit in early and middle layers",
                            f"early+middle share of the top {k} heads {rate(inside, k)} against {expected:.3f} "
                            "for heads placed at random", above(inside, k, expected)))
    return rows


def masking_curve_findings(per_sample: pd.DataFrame, model: str, *, k: int) -> list[Finding]:
    """Notebook 08, Figure 6: does masking the top ``k`` visual heads hurt more than each random control?

    ``per_sample``: :func:`helpers.ablation.run_models` rows (``model``, ``condition``, ``k``, ``draw``,
    ``correct``). Rule (fixed in advance): per control (``random``: same stages, ``random_layer``: same layers),
    the accuracy with the top ``k`` heads masked against the control's accuracy pooled over its draws; agrees
    when the Newcombe 95% interval of (control - top) lies above zero, disagrees when it lies below zero, else
    undecided. Pooling draws counts each sample once per draw, so the interval is somewhat too narrow when
    draws repeat heads. ``measured`` also gives the first-word accuracy of both (when the rows carry
    ``first_word_correct``), which does not enter the verdict: a top set whose accuracy falls while its first
    word stays right broke the answer format, not the choice.
    """
    rows = per_sample[(per_sample.model == model) & (per_sample.k == k)]
    top = rows[rows.condition == "top"]["correct"].astype(bool)
    out = []
    for control, label in (("random", "random heads of the same stages"),
                           ("random_layer", "random heads of the same layers")):
        ctrl = rows[rows.condition == control]["correct"].astype(bool)
        if not len(top) or not len(ctrl):
            continue
        diff, low, high = difference_interval(int(ctrl.sum()), len(ctrl), int(top.sum()), len(top))
        verdict = True if low > 0 else False if high < 0 else None
        measured = (f"top masked {rate(int(top.sum()), len(top))}, control {rate(int(ctrl.sum()), len(ctrl))}; "
                    f"control - top {_interval(diff, low, high)}")
        if "first_word_correct" in rows:
            first = {c: rows[rows.condition == c]["first_word_correct"].astype(bool) for c in ("top", control)}
            measured += (f"; first word right: top {rate(int(first['top'].sum()), len(first['top']))}, "
                         f"control {rate(int(first[control].sum()), len(first[control]))}")
        out.append(Finding(f"{model}: masking its top {k} visual heads hurts more than {k} {label}",
                           "[ours] reconstruction of Figures 6-8 (masking curves)", measured, verdict))
    return out


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


def interval_width(n: int, accuracy: float = 0.5) -> str:
    """What ``n`` samples can tell: ``"n=96: a 95% Wilson interval spans +-0.098 around 0.50"`` (half its width)."""
    low, high = wilson_interval(round(accuracy * n), n)
    return f"n={n}: a 95% Wilson interval spans +-{(high - low) / 2:.3f} around an accuracy of {accuracy:.2f}"
