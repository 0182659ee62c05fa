"""Head metrics: property tests (hypothesis) and small worked examples with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import metrics

FAST = settings(max_examples=40, deadline=None)


@st.composite
def attention(draw, max_keys: int = 24):
    """Rows ``[batch, layers, heads, keys]`` of softmax probabilities and an image mask ``[batch, keys]``."""
    b, layers, heads = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    keys = draw(st.integers(2, max_keys))
    seed = draw(st.integers(0, 2**31 - 1))
    temp = draw(st.sampled_from([0.1, 1.0, 5.0]))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, layers, heads, keys, generator=g, dtype=torch.float64) * temp
    sparsity = draw(st.sampled_from([0.0, 0.5, 0.9]))
    if sparsity:  # sparse rows: exact zeros (ties), as after a causal or padding mask
        drop = torch.rand(logits.shape, generator=g) < sparsity
        drop[..., -1] = False
        logits = logits.masked_fill(drop, -math.inf)
    rows = torch.softmax(logits, -1)
    image = torch.rand(b, keys, generator=g) < 0.6
    image[:, 0] = True  # at least one image token
    return rows, image, g


@FAST
@given(attention())
def test_weight_and_concentration_lie_in_unit_interval(data):
    rows, image, _ = data
    w = metrics.attention_weight(rows, image)
    c = metrics.concentration(rows, image)
    assert w.shape == c.shape == rows.shape[:3]
    assert ((w >= 0) & (w <= 1 + 1e-12)).all()
    assert torch.equal(c.isnan(), w == 0)  # W = 0: concentration undefined (NaN by default)
    assert ((c[w > 0] >= 0) & (c[w > 0] <= 1)).all()


@FAST
@given(attention())
def test_concentration_is_one_for_one_hot_and_zero_for_uniform(data):
    rows, image, g = data
    b, layers, heads, keys = rows.shape
    # one-hot inside V, any amount of attention elsewhere (scaled so that rows stay probabilities)
    first = image.float().argmax(-1)
    one_hot = 0.7 * rows * ~image[:, None, None, :]
    one_hot[torch.arange(b), :, :, first] += 0.3
    assert torch.allclose(metrics.concentration(one_hot, image), torch.ones(b, layers, heads, dtype=rows.dtype))
    # uniform inside V (|V| > 1), arbitrary elsewhere
    image[:, 1] = True
    uniform = torch.where(image[:, None, None, :], torch.full_like(rows, 0.01), 0.5 * rows)
    c = metrics.concentration(uniform, image)
    assert torch.allclose(c, torch.zeros_like(c), atol=1e-9)


@FAST
@given(attention())
def test_scores_unchanged_when_image_tokens_are_permuted(data):
    rows, image, g = data
    permuted = rows.clone()
    for i in range(rows.shape[0]):
        pos = torch.nonzero(image[i]).flatten()
        permuted[i, ..., pos] = rows[i, ..., pos[torch.randperm(len(pos), generator=g)]]
    for fn in (metrics.concentration, metrics.attention_weight):
        assert torch.allclose(fn(rows, image), fn(permuted, image), atol=1e-12, equal_nan=True)


@FAST
@given(attention(), st.integers(1, 7), st.sampled_from([0.2, 1, "region"]), st.booleans(),
       st.sampled_from(["all", "image"]))
def test_scores_unchanged_by_left_padding(data, pad, k, top1, among):
    rows, image, g = data
    region = image & (torch.rand(image.shape, generator=g) < 0.5)
    # left padding: `pad` keys in front that the query cannot see (probability exactly 0)
    padded = torch.cat([torch.zeros(*rows.shape[:3], pad, dtype=rows.dtype), rows], -1)
    shift = torch.zeros(image.shape[0], pad, dtype=torch.bool)
    image_p, region_p = torch.cat([shift, image], -1), torch.cat([shift, region], -1)
    # the same, given as per-sample integer positions
    image_pos = [torch.nonzero(m).flatten() for m in image_p]
    for fn in (metrics.attention_weight, metrics.concentration, metrics.region_weight):
        assert torch.allclose(fn(rows, image), fn(padded, image_p), equal_nan=True)
        assert torch.allclose(fn(rows, image), fn(padded, image_pos), equal_nan=True)
    assert torch.allclose(metrics.region_share(rows, region, image), metrics.region_share(padded, region_p, image_p),
                          equal_nan=True)
    hits = metrics.detection_hits(rows, image, region, k=k, top1=top1, among=among)
    assert torch.equal(hits, metrics.detection_hits(padded, image_p, region_p, k=k, top1=top1, among=among))
    assert ((hits >= 0) & (hits <= 1)).all()


def test_left_padding_does_not_win_ties_among_zero_keys():
    """k larger than the number of attended keys: padding keys (exact zeros) must not displace real keys."""
    rows = torch.tensor([[[[0.0, 0.0, 0.0, 1.0]]]])
    image = torch.tensor([[False, True, True, True]])
    region = torch.tensor([[False, False, True, False]])
    pad = torch.zeros(1, 2, dtype=torch.bool)
    padded = torch.cat([torch.zeros(1, 1, 1, 2), rows], -1)
    hits = metrics.detection_hits(rows, image, region, k=2)
    assert hits.item() == 0.5
    assert torch.equal(hits, metrics.detection_hits(padded, torch.cat([pad, image], -1), torch.cat([pad, region], -1),
                                                    k=2))


def test_edge_cases_of_concentration():
    rows = torch.tensor([[[[0.5, 0.5, 0.0]]]])
    assert metrics.concentration(rows, torch.tensor([False, False, True])).isnan().all()  # W = 0
    assert metrics.concentration(rows, torch.tensor([False, False, True]), if_no_weight=0.0).item() == 0.0
    assert metrics.concentration(rows, torch.tensor([True, False, False])).item() == 1.0  # |V| = 1
    assert metrics.concentration(rows, torch.tensor([2])).isnan().all()  # integer index, W = 0
    # two of four image tokens equally: H = log 2, C = 1 - log2/log4 = 0.5
    rows = torch.tensor([[[[0.25, 0.25, 0.0, 0.0, 0.5]]]])
    assert metrics.concentration(rows, torch.tensor([0, 1, 2, 3])).item() == pytest.approx(0.5)
    assert metrics.attention_weight(rows, torch.tensor([0, 1, 2, 3])).item() == pytest.approx(0.5)
    # a prompt-length mask on rows that also hold the generated token: padded with False on the right
    assert metrics.attention_weight(rows, torch.tensor([True, True, False, False])).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="does not fit"):
        metrics.attention_weight(rows, torch.ones(1, 7, dtype=torch.bool))


def test_detection_on_a_worked_example():
    # keys: 0 text, 1..8 image, region = {3, 4}; 1 sample, 1 layer, 2 heads
    image = torch.zeros(1, 9, dtype=torch.bool)
    image[0, 1:] = True
    region = torch.zeros_like(image)
    region[0, 3:5] = True
    rows = torch.tensor([[[[0.5, 0.05, 0.05, 0.2, 0.1, 0.05, 0.05, 0.0, 0.0],     # sink first, then region
                           [0.0, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1, 0.0, 0.0]]]])   # image but not region
    assert metrics.detection_hits(rows, image, region, top1=True)[0, 0].tolist() == [0.0, 0.0]
    assert metrics.detection_hits(rows, image, region, top1=True, among="image")[0, 0].tolist() == [1.0, 0.0]
    assert metrics.detection_hits(rows, image, region, k="region")[0, 0].tolist() == [0.5, 0.0]
    assert metrics.detection_hits(rows, image, region, k=0.25, among="image")[0, 0].tolist() == [1.0, 0.0]
    share = metrics.region_share(rows, region, image)[0, 0]
    assert share.tolist() == pytest.approx([0.3 / 0.5, 0.2 / 1.0])
    # only correctly answered samples count
    two = torch.cat([rows, rows.flip(2)])
    score = metrics.detection_score(two, image.expand(2, -1), region.expand(2, -1), torch.tensor([False, True]),
                                    k="region")
    assert score[0].tolist() == [0.0, 0.5]
    with pytest.raises(ValueError, match="no sample selected"):
        metrics.detection_score(two, image.expand(2, -1), region.expand(2, -1), torch.tensor([False, False]))


def test_aggregate_mean_and_spread():
    v = torch.tensor([[1.0, float("nan")], [2.0, 4.0], [4.0, 6.0], [5.0, 8.0]])
    s = metrics.aggregate(v, kind="std")
    assert s.mean.tolist() == pytest.approx([3.0, 6.0])
    assert s.spread.tolist() == pytest.approx([np.std([1, 2, 4, 5], ddof=1), 2.0])
    assert s.n.tolist() == [4, 3]
    sem = metrics.aggregate(v, kind="sem")
    assert sem.spread[1].item() == pytest.approx(2.0 / math.sqrt(3))
    ci = metrics.aggregate(v, kind="ci", n_boot=500)
    assert (ci.low <= ci.mean).all() and (ci.mean <= ci.high).all() and (ci.high - ci.low > 0).all()
    masked = metrics.aggregate(v, mask=torch.tensor([True, True, False, False]), kind="std")
    assert masked.mean.tolist() == pytest.approx([1.5, 4.0]) and masked.spread[1].isnan()


def test_ranking_and_stages():
    scores = torch.zeros(32, 4)
    scores[3, 1], scores[12, 0], scores[25, 2], scores[0, 0] = 0.9, 0.8, 0.7, float("nan")
    assert metrics.top_heads(scores, 3) == [(3, 1), (12, 0), (25, 2)]
    assert metrics.top_heads(scores, 128)[-1] == (0, 0)  # NaN last
    assert [metrics.stage_of(x, 32) for x in (9, 10, 19, 20)] == ["early", "middle", "middle", "late"]
    assert [metrics.stage_of(x, 40) for x in (12, 13, 26, 27)] == ["early", "middle", "middle", "late"]
    dist = metrics.stage_distribution(metrics.top_heads(scores, 3), 32)
    assert dist == pytest.approx({"early": 1 / 3, "middle": 1 / 3, "late": 1 / 3})


def test_agreement():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(8, 4, generator=g)
    assert metrics.pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert metrics.spearman(a, a**3) == pytest.approx(1.0)  # monotone, not linear
    assert metrics.pearson(a, a**3) < 0.999
    assert metrics.spearman(a, -a) == pytest.approx(-1.0)
    ties = torch.tensor([1.0, 1.0, 2.0, 3.0])
    assert metrics._ranks(ties).tolist() == [0.5, 0.5, 2.0, 3.0]
    b = a.clone()
    top = metrics.top_heads(a, 4)
    b[top[0]] = -1.0  # the best head of a drops out of b's top 4 and another comes in
    assert metrics.topk_jaccard(a, b, 4) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="normalised depth"):
        metrics.pearson(a, torch.rand(10, 4))
    # the same depth profile sampled at 32 and 40 layers agrees on normalised depth
    f = lambda n: torch.exp(-3 * (torch.arange(n) + 0.5) / n)[:, None].expand(n, 8)  # noqa: E731
    assert metrics.profile_correlation(f(32), f(40)) > 0.999
    assert metrics.profile_correlation(f(32), f(40).flip(0)) < 0
