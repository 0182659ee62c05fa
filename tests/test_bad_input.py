"""Nothing silent (issue 14): bad input and misuse raise a named error that says what to do, never a wrong result.

Each test feeds one kind of bad input and asserts the error type and that the message names the argument,
row or file. The sweep cases run the real command in a subprocess on a tiny offline model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import metrics

ROOT = Path(__file__).resolve().parents[1]


# ============================================================================================ metrics
def _rows_and_image() -> tuple[torch.Tensor, torch.Tensor]:
    """One row over 10 keys, 0.8 of it on the image keys 3..7."""
    rows = torch.full((1, 1, 1, 10), 0.04)
    rows[..., 3:8] = 0.16
    image = torch.zeros(10, dtype=torch.bool)
    image[3:8] = True
    return rows, image


def test_bool_mask_and_positions_agree():
    """The valid forms still give the right weight (the reference for the refusals below)."""
    rows, image = _rows_and_image()
    assert metrics.attention_weight(rows, image).item() == pytest.approx(0.8)
    assert metrics.attention_weight(rows, torch.arange(3, 8)).item() == pytest.approx(0.8)
    assert metrics.attention_weight(rows, [torch.arange(3, 8)]).item() == pytest.approx(0.8)


@pytest.mark.parametrize("convert", [torch.Tensor.long, torch.Tensor.int], ids=["long", "int"])
def test_integer_01_mask_is_refused(convert):
    rows, image = _rows_and_image()
    with pytest.raises(ValueError, match=r"'index'.*0s and 1s.*\.bool\(\)"):
        metrics.attention_weight(rows, convert(image))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8])
def test_float_or_uint8_mask_is_refused(dtype):
    rows, image = _rows_and_image()
    with pytest.raises(TypeError, match=r"'image'.*image\.bool\(\)"):
        metrics.detection_hits(rows, image.to(dtype), image, k=1)


def test_integer_01_mask_per_sample_is_refused():
    rows, image = _rows_and_image()
    with pytest.raises(ValueError, match=r"'region', sample 0.*\.bool\(\)"):
        metrics.region_weight(rows, image[None].long())


def test_repeated_positions_are_refused():
    rows, _ = _rows_and_image()
    with pytest.raises(ValueError, match="'index'.*repeats positions"):
        metrics.attention_weight(rows, torch.tensor([3, 3, 4]))


def test_nan_rows_are_refused():
    rows, image = _rows_and_image()
    with pytest.raises(ValueError, match="rows hold NaN.*sample 0, layer 0, head 0"):
        metrics.detection_hits(torch.full_like(rows, float("nan")), image, image, k=2)


def test_one_nan_key_is_refused():
    rows, image = _rows_and_image()
    rows[..., 5] = float("nan")
    with pytest.raises(ValueError, match="rows hold NaN"):
        metrics.detection_hits(rows, image, image, k=1)


def test_pre_softmax_scores_are_refused():
    scores = torch.randn(1, 2, 3, 10, generator=torch.Generator().manual_seed(1)) * 4
    with pytest.raises(ValueError, match="rows hold negative values.*pre-softmax"):
        metrics.attention_weight(scores, torch.arange(3, 8))


def test_rows_summing_above_one_are_refused():
    rows = torch.full((2, 1, 2, 10), 0.1)
    rows[1, 0, 1] = 0.3
    with pytest.raises(ValueError, match=r"rows sum to 3 .*sample 1, layer 0, head 1"):
        metrics.concentration(rows, torch.arange(3, 8))


def test_rows_within_tolerance_pass():
    """fp16 rounding: rows summing to slightly above 1 are accepted (callers pass such rows)."""
    rows = torch.softmax(torch.randn(2, 3, 4, 600, generator=torch.Generator().manual_seed(0)), -1)
    half = (rows * 1.0005).half()
    assert float(half.float().sum(-1).max()) > 1
    w = metrics.attention_weight(half, torch.arange(10, 300))
    assert torch.allclose(w, metrics.attention_weight(rows, torch.arange(10, 300)), atol=2e-3)


def test_integer_rows_are_refused():
    with pytest.raises(TypeError, match="rows must be a float tensor"):
        metrics.attention_weight(torch.ones(1, 1, 1, 4, dtype=torch.long), torch.tensor([0]))


def test_integer_k_larger_than_the_keys_is_refused():
    rows, image = _rows_and_image()
    with pytest.raises(ValueError, match="k=50 top keys.*only 10 keys"):
        metrics.detection_hits(rows, image, image, k=50)


@pytest.mark.parametrize("k", [0.0, 1.5, -3, True, "half"])
def test_bad_k_is_refused(k):
    rows, image = _rows_and_image()
    with pytest.raises(ValueError, match="k "):
        metrics.detection_hits(rows, image, image, k=k)


def test_top_heads_refuses_negative_counts():
    with pytest.raises(ValueError, match="top_heads: k must be a count >= 0, got -1"):
        metrics.top_heads(torch.rand(3, 4), -1)


def test_top_heads_refuses_fractional_counts():
    with pytest.raises(TypeError, match="top_heads: k must be an integer"):
        metrics.top_heads(torch.rand(3, 4), 2.5)


def test_nan_never_ranks_first():
    scores = torch.tensor([[float("nan"), -float("inf")], [float("nan"), -float("inf")]])
    assert metrics.top_heads(scores, 4) == [(0, 1), (1, 1), (0, 0), (1, 0)]
    assert metrics.top_heads(scores, np.int64(1)) == [(0, 1)]
