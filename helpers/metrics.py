"""Per-head scores from attention rows: weight, concentration, region, detection, stages, agreement.

Input everywhere: ``rows``, float ``[batch, layers, heads, keys]``, each row one query's attention
probabilities over the keys (``helpers.capture.attention(...).rows``), and a key index saying
which keys count: a boolean mask ``[batch, keys]`` or ``[keys]``, an integer tensor of positions
``[n]`` (same for every sample) or a list of per-sample integer tensors (as returned by
``helpers.layout.image_token_positions``; counts may differ, as with LLaVA-NeXT).

Definitions (docs/DESIGN.md; ``a`` one row, ``V`` the image tokens, ``R`` the region tokens):

- attention weight ``W = sum_{j in V} a_j`` (:func:`attention_weight`), in [0, 1];
- concentration ``C = 1 - H(p) / log|V|`` with ``p = a_V / W`` (:func:`concentration`): 1 when
  all image attention is on one patch, 0 when it is uniform over the image. ``W = 0``: ``p`` is
  undefined, ``C`` is ``if_no_weight`` (default NaN; the aggregates skip NaN). ``|V| = 1``: ``C = 1``
  (all image attention is trivially on one patch). ``|V| = 0``: NaN.
- effective number of attended image tokens ``exp(H(p))`` (:func:`effective_tokens`), which unlike ``C``
  does not depend on ``|V|``; per-head means of ``C`` and ``exp H`` weight each sample by ``W``
  (:func:`weighted_mean`, ``Results.per_head``);
- sinks: the share on the first token (:func:`first_key_share`) and the image weight relative to
  uniform attention ``W / (|V|/K)`` (:func:`weight_vs_uniform`); ``exclude`` leaves named sink positions
  (:func:`sink_positions`) out of ``W``;
- region weight ``W_R = sum_{j in R} a_j`` and region share ``W_R / W`` (:func:`region_weight`,
  :func:`region_share`);
- detection score (:func:`detection_hits`, :func:`detection_score`): per sample and head, the share
  of the head's top-k keys that lie in ``R``, averaged over the correctly answered samples; ``k``
  scales with the number of image tokens; ``top1=True`` is the retrieval-head variant (is the
  single most attended key in ``R``).
- rankings (:func:`top_heads`): ties broken by a seeded random permutation; :func:`ranking_ties` counts them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Index = torch.Tensor | Sequence[torch.Tensor]
Map = torch.Tensor | np.ndarray  # a [layers, heads] score map: NumPy (as Results.per_head gives) or torch


def as_map(scores: Map | Sequence) -> torch.Tensor:
    """A score map (or profile) as a tensor: NumPy arrays and nested lists are wrapped, tensors pass through."""
    return scores if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores))


# ---------------------------------------------------------------------------------------------
# Key index


def key_mask(index: Index, batch: int, keys: int, device: torch.device | None = None, *,
             name: str = "index") -> torch.Tensor:
    """Boolean ``[batch, keys]`` from any accepted key index (see the module docstring).

    A boolean mask shorter than ``keys`` (built from the prompt's ``input_ids`` while the rows of
    ``capture.attention(rows="answer")`` also hold the generated token) is padded with False on the
    right: keys after the prompt are generated tokens, never image tokens. Integer positions must be
    distinct per sample. Raises ``ValueError`` when the index does not fit ``batch`` x ``keys`` or is a
    0/1 mask in an integer tensor, ``TypeError`` for a float or uint8 tensor (pass ``.bool()`` for a mask,
    ``.long()`` for positions); ``name`` (the argument, e.g. ``"image"``) is named in the message.
    """
    if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
        mask = index if index.dim() == 2 else index[None].expand(batch, -1)
        if mask.dim() == 2 and mask.shape[-1] < keys:
            mask = torch.nn.functional.pad(mask, (0, keys - mask.shape[-1]), value=False)
        if mask.shape != (batch, keys):
            raise ValueError(f"boolean key index {name!r} of shape {tuple(index.shape)} does not fit rows with batch "
                             f"{batch} and {keys} keys; pass [batch, keys] or [keys]")
        return mask.to(device) if device is not None else mask
    if isinstance(index, torch.Tensor):
        _check_index_dtype(index, name)
        index = [index] * batch if index.dim() == 1 else list(index)
    if len(index) != batch:
        raise ValueError(f"key index {name!r} has {len(index)} samples, rows have {batch}")
    mask = torch.zeros(batch, keys, dtype=torch.bool, device=device)
    for i, pos in enumerate(index):
        if isinstance(pos, torch.Tensor):
            _check_index_dtype(pos, f"{name}[{i}]")
        pos = torch.as_tensor(pos)
        if pos.dtype == torch.bool:  # a per-sample mask, shorter than keys allowed (padded with False)
            if pos.dim() != 1 or pos.numel() > keys:
                raise ValueError(f"key index {name!r}, sample {i}: mask of shape {tuple(pos.shape)} does not fit "
                                 f"{keys} keys")
            mask[i, :pos.numel()] = pos.to(mask.device)
            continue
        if pos.is_floating_point():
            raise TypeError(f"key index {name!r}, sample {i}: positions are {pos.dtype}; pass integer positions "
                            "(.long()) or a boolean mask (.bool())")
        pos = pos.long().flatten()
        if pos.numel() and (pos.min() < -keys or pos.max() >= keys):
            raise ValueError(f"key index {name!r}, sample {i}: key positions out of range for {keys} keys")
        _check_distinct(pos, f"{name!r}, sample {i}")
        mask[i, pos.to(mask.device)] = True
    return mask


def _check_index_dtype(index: torch.Tensor, name: str) -> None:
    """Refuse index tensors that are neither boolean masks nor integer positions (float, uint8, complex)."""
    if index.dtype == torch.bool:
        return
    if index.dtype == torch.uint8 or index.is_floating_point() or index.is_complex():
        raise TypeError(f"key index {name!r} is a {index.dtype} tensor: index tensors must be boolean masks or "
                        f"integer positions. For a 0/1 mask pass {name}.bool(); for key positions pass {name}.long()")


def _check_distinct(pos: torch.Tensor, what: str) -> None:
    """Integer positions ``[n]`` must be distinct; repeated 0s and 1s are a 0/1 mask given as integers."""
    if pos.numel() < 2:
        return
    values = torch.unique(pos)
    if values.numel() == pos.numel():
        return
    if bool(((values == 0) | (values == 1)).all()):
        raise ValueError(f"key index {what} holds only 0s and 1s with repeats: a 0/1 mask in an integer tensor would "
                         "be read as key positions {0, 1}. Pass .bool() for a mask")
    raise ValueError(f"key index {what} repeats positions; integer positions must be distinct")


ROW_TOLERANCE = 1e-3


def check_rows(rows: torch.Tensor, name: str = "rows") -> torch.Tensor:
    """``rows`` ``[batch, layers, heads, keys]`` as float32/64, after checking they are attention probabilities.

    Every value finite and ``>= 0``, every row summing to at most ``1 + tol`` (``tol`` =
    :data:`ROW_TOLERANCE` relative, more for 16-bit input): rows over a subset of keys are fine,
    pre-softmax scores are not. Three reductions, cheap next to the model. Raises ``ValueError``
    (``TypeError`` for a non-float tensor) naming ``name``.
    """
    if not isinstance(rows, torch.Tensor) or not rows.is_floating_point():
        raise TypeError(f"{name} must be a float tensor of attention probabilities, got "
                        f"{getattr(rows, 'dtype', type(rows).__name__)}")
    if rows.dim() != 4:
        raise ValueError(f"{name} must be [batch, layers, heads, keys], got shape {tuple(rows.shape)}")
    tol = max(ROW_TOLERANCE, 8 * torch.finfo(rows.dtype).eps)
    rows = rows.float() if rows.dtype in (torch.float16, torch.bfloat16) else rows
    if rows.numel() == 0:
        return rows
    if not bool(torch.isfinite(rows).all()):
        where = _first((~torch.isfinite(rows)).flatten(0, 2).any(-1), rows.shape)
        raise ValueError(f"{name} hold NaN or inf (first at {where}): attention probabilities are finite. Check the "
                         "model's numerics (helpers.models.check_finite) or the code that built the rows")
    low = float(rows.amin())
    if low < 0:
        raise ValueError(f"{name} hold negative values (min {low:.4g}): they must be attention probabilities "
                         "(softmax outputs, >= 0), not pre-softmax scores or logits")
    sums = rows.sum(-1)
    high = float(sums.amax())
    if high > 1 + tol:
        where = _first((sums > 1 + tol).flatten(), rows.shape)
        raise ValueError(f"{name} sum to {high:.4g} over the keys (at {where}); attention probabilities sum to at "
                         f"most 1 (tolerance {tol:.0e}). Pass softmax outputs, not scores or unnormalised weights")
    return rows


def _first(bad: torch.Tensor, shape: torch.Size) -> str:
    """``"sample b, layer l, head h"`` of the first True in ``bad`` (flattened ``[batch, layers, heads]``)."""
    i = int(torch.nonzero(bad)[0, 0])
    layers, heads = shape[1], shape[2]
    return f"sample {i // (layers * heads)}, layer {i // heads % layers}, head {i % heads}"


def _rows_mask(rows: torch.Tensor, index: Index, name: str = "index") -> tuple[torch.Tensor, torch.Tensor]:
    rows = check_rows(rows)
    mask = key_mask(index, rows.shape[0], rows.shape[-1], rows.device, name=name)
    return rows, mask[:, None, None, :]


# ---------------------------------------------------------------------------------------------
# Weight and concentration


def attention_weight(rows: torch.Tensor, index: Index, exclude: Index | None = None) -> torch.Tensor:
    """``W = sum_{j in index} a_j``: ``[batch, layers, heads]`` from ``rows [batch, layers, heads, keys]``.

    ``exclude``: key positions left out of the sum (named attention sinks, e.g. image tokens that absorb
    attention whatever the content, found with :func:`sink_positions`); default None: none.
    """
    rows, m = _rows_mask(rows, index)
    if exclude is not None:
        m = m & ~key_mask(exclude, rows.shape[0], rows.shape[-1], rows.device, name="exclude")[:, None, None, :]
    return (rows * m).sum(-1)


def _weight(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``attention_weight`` on checked rows and a ``[batch, 1, 1, keys]`` mask."""
    return (rows * mask).sum(-1)


MIN_WEIGHT = 0.0
"""Default ``min_weight`` of :func:`concentration` / :func:`effective_tokens`: only ``W = 0`` gives ``if_no_weight``.

Per-sample values stay defined for every ``W > 0``; samples with almost no image attention are kept out of
the *per-head means* instead, by weighting each sample by ``W`` (:func:`weighted_mean`, used by
``helpers.results.Results.per_head`` for :data:`WEIGHTED_SCORES`). Pass ``min_weight`` (e.g. 0.01) to
also drop them per sample.
"""

WEIGHTED_SCORES = ("concentration", "effective_tokens")
"""Scores defined on the attention *renormalised* over the image: their per-head mean weights each sample by
its image weight ``W`` (a sample with ``W = 0.001`` says almost nothing about where the head looks)."""


def _image_entropy(rows: torch.Tensor, index: Index, exclude: Index | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype]:
    """``(H(p), W, |V|, dtype)``: float64 ``[batch, layers, heads]`` each, ``V = index`` minus ``exclude``, and the
    checked rows' dtype."""
    rows, m = _rows_mask(rows, index)
    if exclude is not None:
        m = m & ~key_mask(exclude, rows.shape[0], rows.shape[-1], rows.device, name="exclude")[:, None, None, :]
    a = (rows.double() * m).clamp(min=0)
    w = a.sum(-1)
    p = a / w[..., None].clamp(min=torch.finfo(torch.float64).tiny)
    h = -(p * torch.log(p.clamp(min=torch.finfo(torch.float64).tiny))).sum(-1)
    n = m.sum(-1).double().expand_as(h)
    return h, w, n, rows.dtype


def concentration(rows: torch.Tensor, index: Index, if_no_weight: float = float("nan"),
                  min_weight: float = MIN_WEIGHT, exclude: Index | None = None) -> torch.Tensor:
    """``C = 1 - H(p) / log|V|``, ``p`` the attention renormalised over ``V = index``: ``[batch, layers, heads]``.

    ``H`` is the Shannon entropy (``0 log 0 = 0``); the ratio does not depend on the log base.
    ``if_no_weight`` (default NaN) is returned where ``W <= min_weight`` (default :data:`MIN_WEIGHT` = 0:
    only an exact zero), since ``p`` is then undefined. Where ``|V| = 1`` the result is 1; where ``|V| = 0``, NaN.
    ``exclude``: key positions left out of ``V`` (e.g. LLaVA-NeXT's newline tokens,
    ``helpers.layout.image_subset_mask``). Computed in float64, clamped to [0, 1] against rounding.

    ``C`` depends on ``|V|``: a head spread evenly over 10 patches scores ``1 - log 10 / log 576 = 0.64``
    with 576 image tokens and 0.70 with 2,340. Compare models with different token counts by
    :func:`effective_tokens` (``exp H``, here 10 for both). Average ``C`` over samples weighted by ``W``
    (:func:`weighted_mean`).
    """
    h, w, n, dtype = _image_entropy(rows, index, exclude)
    c = torch.where(n > 1, 1 - h / torch.log(n.clamp(min=2)), torch.ones_like(h)).clamp(0, 1)
    c = torch.where(w <= min_weight, torch.full_like(c, if_no_weight), c)
    c = torch.where(n == 0, torch.full_like(c, float("nan")), c)
    return c.to(dtype)


def effective_tokens(rows: torch.Tensor, index: Index, if_no_weight: float = float("nan"),
                     min_weight: float = MIN_WEIGHT, exclude: Index | None = None) -> torch.Tensor:
    """The effective number of attended image tokens ``exp(H(p))``: ``[batch, layers, heads]``.

    ``p`` and ``H`` as in :func:`concentration` (same ``if_no_weight``, ``min_weight``, ``exclude``). 1 when all
    image attention is on one token, ``|V|`` when it is uniform; attention spread evenly over ``m`` tokens
    gives ``m`` whatever ``|V|`` is, so unlike ``C`` it compares models with different token counts.
    """
    h, w, n, dtype = _image_entropy(rows, index, exclude)
    e = torch.exp(h).clamp(min=1)
    e = torch.minimum(e, n.clamp(min=1))
    e = torch.where(w <= min_weight, torch.full_like(e, if_no_weight), e)
    e = torch.where(n == 0, torch.full_like(e, float("nan")), e)
    return e.to(dtype)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_b w_b v_b / sum_b w_b`` over the first (sample) axis, NaN values (and their weights) skipped.

    ``values`` and ``weights`` ``[batch, ...]`` of equal shape, ``weights >= 0`` (e.g. the image weight ``W`` for
    :func:`concentration`). NaN where no sample with positive weight has a value.
    """
    if values.shape != weights.shape:
        raise ValueError(f"values {tuple(values.shape)} and weights {tuple(weights.shape)} must have the same shape")
    v, w = values.double(), weights.double()
    if bool((w < 0).any()):
        raise ValueError("weights must be >= 0")
    ok = ~(torch.isnan(v) | torch.isnan(w))
    w = torch.where(ok, w, 0.0)
    total = w.sum(0)
    mean = torch.where(ok, v, 0.0).mul(w).sum(0) / total.clamp(min=torch.finfo(torch.float64).tiny)
    return torch.where(total > 0, mean, torch.full_like(mean, float("nan"))).to(values.dtype)


def region_weight(rows: torch.Tensor, region: Index) -> torch.Tensor:
    """``W_R = sum_{j in R} a_j``: ``[batch, layers, heads]`` (the attention weight of the region tokens)."""
    rows, m = _rows_mask(rows, region, "region")
    return _weight(rows, m)


def region_share(rows: torch.Tensor, region: Index, image: Index, if_no_weight: float = float("nan")) -> torch.Tensor:
    """``W_R / W``: the part of a head's image attention that falls on the region, ``[batch, layers, heads]``.

    ``if_no_weight`` (default NaN) where ``W = 0``.
    """
    rows, img = _rows_mask(rows, image, "image")
    w = _weight(rows, img)
    wr = _weight(rows, key_mask(region, rows.shape[0], rows.shape[-1], rows.device, name="region")[:, None, None])
    return torch.where(w > 0, wr / w.clamp(min=torch.finfo(w.dtype).tiny), torch.full_like(w, if_no_weight))


# ---------------------------------------------------------------------------------------------
# Detection score


def topk_size(n_image: torch.Tensor, n_region: torch.Tensor, k: float | int | str) -> torch.Tensor:
    """Per sample ``k``: ``float`` in (0, 1] = that fraction of the image tokens (rounded, at least 1),
    ``int`` = that many keys, ``"region"`` = ``|R|`` (R-precision). ``[batch]`` long."""
    if k == "region":
        return n_region.clamp(min=1).long()
    if isinstance(k, float):
        if not 0 < k <= 1:
            raise ValueError(f"k as a fraction of the image tokens must lie in (0, 1], got {k}")
        return (n_image.double() * k).round().clamp(min=1).long()
    if isinstance(k, int) and not isinstance(k, bool) and k >= 1:
        return torch.full_like(n_image, k).long()
    raise ValueError(f"k must be a fraction in (0, 1], a positive int or 'region', got {k!r}")


def detection_hits(rows: torch.Tensor, image: Index, region: Index, k: float | int | str = 0.05,
                   top1: bool = False, among: Literal["all", "image"] = "all") -> torch.Tensor:
    """Per sample and head, the share of the head's top-k keys that lie in the region: ``[batch, layers, heads]``.

    ``k`` (default 0.05: 5 % of the sample's image tokens, 29 of LLaVA-1.5's 576) is read by
    :func:`topk_size`. ``top1=True``: the retrieval-head variant, 1 if the most attended key is a
    region token, else 0 (same as ``k=1``). ``among="all"`` (default) ranks every key, so a head
    whose strongest keys are text tokens (e.g. the first token, an attention sink) scores low;
    ``among="image"`` ranks only the image tokens. Ties among equal weights go to the later key.
    An integer ``k`` larger than the number of keys raises ``ValueError``.
    """
    rows, img = _rows_mask(rows, image, "image")
    reg = key_mask(region, rows.shape[0], rows.shape[-1], rows.device, name="region")[:, None, None, :]
    reg = reg & img
    n_img, n_reg = img.sum(-1)[:, 0, 0], reg.sum(-1)[:, 0, 0]
    if not top1 and isinstance(k, int) and not isinstance(k, bool) and k > rows.shape[-1]:
        raise ValueError(f"k={k} top keys asked for, but the rows have only {rows.shape[-1]} keys; pass a smaller "
                         "count or a fraction of the image tokens (e.g. k=0.05)")
    ks = torch.ones_like(n_img) if top1 else topk_size(n_img, n_reg, k)
    if among == "image":
        ks = torch.minimum(ks, n_img.clamp(min=1))
        scored = torch.where(img, rows, torch.full_like(rows, -1.0))
    elif among == "all":
        scored = rows
    else:
        raise ValueError(f"among must be 'all' or 'image', got {among!r}")
    kmax = min(int(ks.max()), rows.shape[-1])
    keys = rows.shape[-1]
    # stable descending sort of the key-reversed rows: ties go to the later key, so keys that no
    # query can see (left padding, exact zeros) are taken last and padding never changes the result
    order = torch.sort(scored.flip(-1), dim=-1, descending=True, stable=True).indices[..., :kmax]
    top = keys - 1 - order  # [b, l, h, kmax]
    in_region = torch.gather(reg.expand_as(rows), -1, top).float()
    take = torch.arange(top.shape[-1], device=rows.device)[None, :] < ks[:, None]  # [b, kmax]
    hits = (in_region * take[:, None, None, :]).sum(-1) / ks[:, None, None].to(in_region.dtype)
    return torch.where((n_img > 0)[:, None, None], hits, torch.full_like(hits, float("nan")))


def detection_score(rows: torch.Tensor, image: Index, region: Index, correct: torch.Tensor | None = None,
                    k: float | int | str = 0.05, top1: bool = False,
                    among: Literal["all", "image"] = "all") -> torch.Tensor:
    """Mean of :func:`detection_hits` over the correctly answered samples: ``[layers, heads]``.

    ``correct``: boolean ``[batch]`` (None = all samples). Raises ``ValueError`` if no sample is
    correct (then there is nothing to score; use more samples or ``correct=None``).
    """
    hits = detection_hits(rows, image, region, k=k, top1=top1, among=among)
    return aggregate(hits, mask=correct).mean


# ---------------------------------------------------------------------------------------------
# Aggregation over samples


@dataclass(frozen=True)
class Summary:
    """Mean and spread over samples, each ``[...]`` (the per-sample shape). ``n``: samples used per entry.

    ``spread`` holds the standard error (``kind="sem"``) or standard deviation (``"std"``);
    ``low``/``high`` the bootstrap percentile interval (``"ci"``) or ``mean -/+ spread`` otherwise.
    """

    mean: torch.Tensor
    spread: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    n: torch.Tensor
    kind: str


def aggregate(values: torch.Tensor, mask: torch.Tensor | None = None, kind: Literal["sem", "std", "ci"] = "sem",
              level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> Summary:
    """Mean over the first (sample) axis of ``values [batch, ...]``, skipping NaN and samples where ``mask`` is False.

    ``kind``: ``"sem"`` (default; standard error of the mean, sample std with ddof 1 / sqrt(n)),
    ``"std"`` (sample standard deviation) or ``"ci"`` (percentile bootstrap interval at ``level``
    with ``n_boot`` resamples of the samples, seeded; ``spread`` is then half its width).
    """
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool, device=values.device)
        if mask.shape != values.shape[:1]:
            raise ValueError(f"mask must be [batch] = {values.shape[0]}, got {tuple(mask.shape)}")
        if not mask.any():
            raise ValueError("no sample selected (e.g. no correctly answered sample): nothing to aggregate")
        values = values[mask]
    v = values.double()
    ok = ~torch.isnan(v)
    n = ok.sum(0)
    total = torch.where(ok, v, 0.0).sum(0)
    mean = total / n.clamp(min=1)
    var = torch.where(ok, (v - mean) ** 2, 0.0).sum(0) / (n - 1).clamp(min=1)
    std = var.sqrt()
    nan = torch.full_like(mean, float("nan"))
    mean = torch.where(n > 0, mean, nan)
    std = torch.where(n > 1, std, nan)
    if kind == "std":
        spread = std
    elif kind == "sem":
        spread = std / n.clamp(min=1).sqrt()
    elif kind == "ci":
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, v.shape[0], (n_boot, v.shape[0]), generator=g)
        bv, bok = torch.where(ok, v, 0.0)[idx], ok[idx].double()
        boot = bv.sum(1) / bok.sum(1)  # NaN where a resample has no valid value
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
        lo, hi = torch.nanquantile(boot, q, dim=0)
        return Summary(mean.to(values.dtype), ((hi - lo) / 2).to(values.dtype), lo.to(values.dtype),
                       hi.to(values.dtype), n, kind)
    else:
        raise ValueError(f"kind must be 'sem', 'std' or 'ci', got {kind!r}")
    return Summary(mean.to(values.dtype), spread.to(values.dtype), (mean - spread).to(values.dtype),
                   (mean + spread).to(values.dtype), n, kind)


# ---------------------------------------------------------------------------------------------
# Ranking and stages


TIE_BREAKS = ("random", "order")


def top_heads(scores: Map, k: int, *, tie_break: Literal["random", "order"] = "random",
              seed: int = 0) -> list[tuple[int, int]]:
    """The ``k`` best ``(layer, head)`` pairs of ``scores [layers, heads]``, best first.

    NaN scores rank last (after ``-inf``). Ties: ``tie_break="random"`` (default) orders equal scores by a
    random permutation of the heads seeded with ``seed`` (same seed, same ranking); ``"order"`` keeps
    (layer, head) order, which lets early layers win every tie. :func:`ranking_ties` says how many heads tie
    at the cut-off. ``k`` is a count ``>= 0`` (more than ``layers * heads`` gives all heads); anything else raises.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        try:
            k = operator.index(k)  # numpy integers
        except TypeError:
            raise TypeError(f"top_heads: k must be an integer count of heads, got {k!r}") from None
    if k < 0:
        raise ValueError(f"top_heads: k must be a count >= 0, got {k}")
    scores = as_map(scores)
    if scores.dim() != 2:
        raise ValueError(f"scores must be [layers, heads], got shape {tuple(scores.shape)}")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"top_heads: tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    flat = scores.detach().cpu().double().flatten()
    if tie_break == "random":
        perm = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(int(seed)))
    else:
        perm = torch.arange(flat.numel())
    shuffled = flat[perm]
    nan = torch.isnan(shuffled)
    order = torch.sort(-torch.nan_to_num(shuffled, nan=-math.inf), stable=True).indices
    order = order[torch.sort(nan[order].to(torch.uint8), stable=True).indices][:k]  # NaN after every number
    heads = scores.shape[1]
    return [(int(i) // heads, int(i) % heads) for i in perm[order]]


def ranking_ties(scores: Map, k: int) -> dict[str, int | float]:
    """How many heads tie with the ``k``-th best score of ``scores [layers, heads]`` (NaN ignored).

    Returns ``{"cutoff": the k-th best score, "tied": heads with exactly that score, "tied_in_top": how many of
    them the top ``k`` holds, "tied_first": heads sharing the best score}``. ``tied > tied_in_top`` means the
    top-``k`` set depends on the tie-break (:func:`top_heads`' ``seed``); report it beside the ranking.
    """
    flat = as_map(scores).detach().cpu().double().flatten()
    flat = flat[~torch.isnan(flat)]
    if k < 1 or flat.numel() == 0:
        return {"cutoff": float("nan"), "tied": 0, "tied_in_top": 0, "tied_first": 0}
    ordered = torch.sort(flat, descending=True).values
    cut = ordered[min(k, flat.numel()) - 1]
    above = int((flat > cut).sum())
    tied = int((flat == cut).sum())
    return {"cutoff": float(cut), "tied": tied, "tied_in_top": min(k, flat.numel()) - above,
            "tied_first": int((flat == ordered[0]).sum())}


def head_count(total_heads: int, k: int | float) -> int:
    """``k`` heads as a count: ``k >= 1`` is a count, ``0 < k < 1`` a fraction of ``total_heads`` (at least 1);
    never more than ``total_heads``. The one reading of "k as a fraction or a count" for head sets."""
    if k <= 0:
        raise ValueError(f"k must be positive (a count, or a fraction of all heads), got {k}")
    return min(total_heads, max(1, round(k * total_heads)) if k < 1 else int(k))


def stage_heads(n_layers: int, n_heads: int, stage: str) -> list[tuple[int, int]]:
    """Every ``(layer, head)`` of ``stage`` (early / middle / late, :func:`stage_of`)."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return [(lyr, h) for lyr in range(n_layers) if stage_of(lyr, n_layers) == stage for h in range(n_heads)]


STAGES = ("early", "middle", "late")


def stage_bounds(n_layers: int) -> tuple[int, int]:
    """First layer of the middle and of the late stage.

    The released code splits 32 layers as 0-9 / 10-19 / 20-31 and 40 layers as 0-12 / 13-26 / 27-39;
    those two are kept exactly. Other depths (toy models) use ``round(L/3)``, ``round(2L/3)``.
    """
    known = {32: (10, 20), 40: (13, 27)}
    if n_layers in known:
        return known[n_layers]
    if n_layers < 3:
        raise ValueError(f"need at least 3 layers to split into stages, got {n_layers}")
    return round(n_layers / 3), round(2 * n_layers / 3)


def stage_of(layer: int, n_layers: int) -> str:
    """``"early"``, ``"middle"`` or ``"late"`` for ``layer`` of ``n_layers`` (:func:`stage_bounds`)."""
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range for {n_layers} layers")
    a, b = stage_bounds(n_layers)
    return STAGES[0] if layer < a else STAGES[1] if layer < b else STAGES[2]


def stage_distribution(heads: Sequence[tuple[int, int]], n_layers: int, normalize: bool = True) -> dict[str, float]:
    """How many of ``heads`` (``(layer, head)`` pairs) lie in each stage; fractions if ``normalize``."""
    counts = {s: 0.0 for s in STAGES}
    for layer, _ in heads:
        counts[stage_of(layer, n_layers)] += 1
    if normalize and heads:
        counts = {s: c / len(heads) for s, c in counts.items()}
    return counts


# ---------------------------------------------------------------------------------------------
# Cross-model agreement


def _pair(a: Map, b: Map) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = as_map(a), as_map(b)
    if a.shape != b.shape:
        raise ValueError(f"score maps differ in shape {tuple(a.shape)} vs {tuple(b.shape)}; for models of different "
                         "depth compare layer_profile(...) on normalised depth (profile_correlation)")
    a, b = a.double().flatten(), b.double().flatten()
    ok = ~(torch.isnan(a) | torch.isnan(b))
    return a[ok], b[ok]


def pearson(a: Map, b: Map) -> float:
    """Pearson correlation of two equal-shape score maps, flattened (NaN pairs dropped)."""
    a, b = _pair(a, b)
    a, b = a - a.mean(), b - b.mean()
    den = (a.norm() * b.norm()).item()
    return float((a @ b).item() / den) if den > 0 else float("nan")


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean rank), 0-based."""
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    mean_rank = start.double() + (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse].to(x.dtype)
    return ranks


def spearman(a: Map, b: Map) -> float:
    """Spearman rank correlation (Pearson of average ranks) of two equal-shape score maps."""
    a, b = _pair(a, b)
    return pearson(_ranks(a), _ranks(b))


def topk_jaccard(a: Map, b: Map, k: int, *, seed: int = 0) -> float:
    """``|A ∩ B| / |A ∪ B|`` of the top-``k`` heads of two equal-shape ``[layers, heads]`` score maps.

    Ties are broken at random with the same ``seed`` for both maps (:func:`top_heads`), so a map compared
    with itself gives 1.
    """
    _pair(a, b)
    sa, sb = set(top_heads(a, k, seed=seed)), set(top_heads(b, k, seed=seed))
    return len(sa & sb) / len(sa | sb) if sa | sb else float("nan")


def layer_profile(scores: Map, reduce: Literal["mean", "max", "sum"] = "mean") -> torch.Tensor:
    """One value per layer from ``scores [layers, heads]`` (NaN-aware ``reduce`` over heads): ``[layers]``."""
    s = as_map(scores).double()
    if reduce == "mean":
        return torch.nanmean(s, dim=1)
    if reduce == "sum":
        return torch.nansum(s, dim=1)
    if reduce == "max":
        return torch.nan_to_num(s, nan=-math.inf).amax(1)
    raise ValueError(f"reduce must be 'mean', 'max' or 'sum', got {reduce!r}")


def depth_profile(scores: Map, points: int = 20,
                  reduce: Literal["mean", "max", "sum"] = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """The layer profile on normalised depth: ``(depth [points], profile [points])``.

    Layer ``l`` of ``L`` sits at depth ``(l + 0.5) / L``; the profile is linearly interpolated at
    ``points`` evenly spaced depths in [0, 1] (held constant beyond the first / last layer), so
    models of different depth (32 vs 40 layers) can be compared point by point.
    """
    prof = layer_profile(scores, reduce)
    n = prof.shape[0]
    depth = torch.linspace(0, 1, points, dtype=torch.float64)
    pos = (depth * n - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    frac = pos - lo
    return depth, prof[lo] * (1 - frac) + prof[hi] * frac


def profile_correlation(a: Map, b: Map, points: int = 20,
                        reduce: Literal["mean", "max", "sum"] = "mean",
                        method: Literal["pearson", "spearman"] = "pearson") -> float:
    """Correlation of two models' depth profiles (:func:`depth_profile`); the maps may differ in shape."""
    _, pa = depth_profile(a, points, reduce)
    _, pb = depth_profile(b, points, reduce)
    return pearson(pa, pb) if method == "pearson" else spearman(pa, pb)


# ---------------------------------------------------------------------------------------------
# Sinks and spread of whole rows


def _visible(visible: torch.Tensor, batch: int, keys: int, device: torch.device) -> torch.Tensor:
    """``visible`` bool ``[batch, keys']`` padded with True to ``keys`` (keys after the prompt are generated
    tokens, which the captured row sees) or cut to ``keys``."""
    visible = torch.as_tensor(visible).bool().to(device)
    if visible.dim() != 2 or visible.shape[0] != batch:
        raise ValueError(f"visible must be bool [batch={batch}, keys], got shape {tuple(visible.shape)}")
    if visible.shape[1] < keys:
        visible = torch.nn.functional.pad(visible, (0, keys - visible.shape[1]), value=True)
    return visible[:, :keys]


def first_key_share(rows: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """``[batch, layers, heads]``: attention on each row's first visible key (the attention-sink token).

    ``visible``: bool ``[batch, keys]`` (e.g. the processor's ``attention_mask``; a mask over the prompt only is
    padded with True for the generated keys), True for keys the row may attend to (left padding is False), so
    the first visible key is the sequence's first real token (``<bos>`` for Gemma, ``<|im_start|>`` for ChatML).
    """
    rows = check_rows(rows)
    visible = _visible(visible, rows.shape[0], rows.shape[-1], rows.device)
    first = visible.float().argmax(1)  # index of the first True per sample
    idx = first[:, None, None, None].expand(*rows.shape[:3], 1)
    return rows.gather(-1, idx)[..., 0]


def uniform_share(index: Index, visible: torch.Tensor, exclude: Index | None = None) -> torch.Tensor:
    """``[batch]``: the attention uniform attention would put on ``index`` keys, ``|V| / K``.

    ``index``: any key index (module docstring); ``visible``: bool ``[batch, keys]``; ``K`` counts the visible
    keys. ``exclude``: keys left out of ``V`` (not of ``K``), as in :func:`attention_weight`.
    """
    visible = torch.as_tensor(visible).bool()
    v = key_mask(index, visible.shape[0], visible.shape[1], visible.device, name="index")
    if exclude is not None:
        v = v & ~key_mask(exclude, visible.shape[0], visible.shape[1], visible.device, name="exclude")
    return (v & visible).sum(1).float() / visible.sum(1).clamp(min=1).float()


def weight_vs_uniform(rows: torch.Tensor, index: Index, visible: torch.Tensor,
                      exclude: Index | None = None) -> torch.Tensor:
    """``[batch, layers, heads]``: image weight relative to uniform attention, ``W / (|V| / K)``.

    1 = the head attends to the image as much as a head spreading evenly over all ``K`` visible keys would;
    above 1 it prefers the image. ``exclude``: sink positions left out of ``W`` and ``|V|``
    (:func:`attention_weight`). NaN where ``V`` is empty.
    """
    rows = check_rows(rows)
    visible = _visible(visible, rows.shape[0], rows.shape[-1], rows.device)
    w = attention_weight(rows, index, exclude)
    u = uniform_share(index, visible, exclude).to(w.dtype)[:, None, None]
    return torch.where(u > 0, w / u.clamp(min=torch.finfo(w.dtype).tiny), torch.full_like(w, float("nan")))


def sink_positions(rows: torch.Tensor, index: Index, factor: float = 20.0, share: float = 0.5) -> list[torch.Tensor]:
    """Per sample, the ``index`` keys that absorb attention whatever the head: ``LongTensor [n_i]`` each.

    A key is a sink when, averaged over all layers and heads, it gets more than ``factor`` times the uniform
    share ``1/|V|`` of the ``index`` attention in at least ``share`` of the heads. Pass the result as
    ``exclude`` to :func:`attention_weight`, :func:`weight_vs_uniform`, :func:`concentration`.
    """
    rows, m = _rows_mask(rows, index)
    a = rows * m
    p = a / a.sum(-1, keepdim=True).clamp(min=torch.finfo(a.dtype).tiny)
    n = m.sum(-1, keepdim=True).clamp(min=1)
    hot = (p * n > factor).float().mean((1, 2)) >= share  # [batch, keys]
    hot &= m[:, 0, 0]
    return [torch.nonzero(h).flatten() for h in hot]


def normalised_entropy(rows: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """``[batch, layers, heads]``: ``H(row) / log K`` over the visible keys (1 = uniform, 0 = one key)."""
    p = rows.clamp(min=0)
    h = -(p * torch.log(p.clamp(min=1e-12))).sum(-1)
    k = visible.sum(1).float().clamp(min=2)
    return h / torch.log(k)[:, None, None].to(h.device)


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval ``(low, high)`` of a proportion ``correct / n`` (NaNs when ``n`` is 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 4), round(centre + half, 4)


def difference_interval(correct_a: int, n_a: int, correct_b: int, n_b: int, z: float = 1.96
                        ) -> tuple[float, float, float]:
    """``(difference, low, high)``: ``correct_a / n_a - correct_b / n_b`` with its 95% Newcombe hybrid score
    interval (built from the two Wilson intervals, :func:`wilson_interval`); NaNs when either ``n`` is 0."""
    if n_a == 0 or n_b == 0:
        return float("nan"), float("nan"), float("nan")
    p_a, p_b = correct_a / n_a, correct_b / n_b
    (low_a, high_a), (low_b, high_b) = wilson_interval(correct_a, n_a, z), wilson_interval(correct_b, n_b, z)
    diff = p_a - p_b
    low = diff - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    high = diff + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return round(diff, 4), round(low, 4), round(high, 4)
