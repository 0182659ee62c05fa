"""Where the image is in the token sequence, and which image tokens show a box.

Two questions, answered from the processor's real settings rather than from a fixed 24x24 grid:

1. **Image tokens**: the positions where ``input_ids == config.image_token_id`` after the
   processor expanded the ``<image>`` placeholder (:func:`image_token_mask`,
   :func:`image_token_positions`). Left padding only shifts them; the masks are per sample.
2. **Region tokens**: the image tokens whose patch covers a box given in original-image pixels
   (:func:`region_token_mask`, :func:`region_mask`).

Geometry (:func:`image_geometry`) follows what the image processor and the model do:

- ``fixed`` layout, CLIP style (``CLIPImageProcessor``; ``LlavaImageProcessor`` with
  ``do_pad=False``): resize so the shortest edge is ``size["shortest_edge"]`` (or to
  ``size["height"] x size["width"]``), centre crop to ``crop_size``, cut into ``patch_size``
  patches, row-major. This is what ``helpers.offline.build_processor`` uses for llava / vipllava
  and what the llava-hf checkpoints ship. A wide image loses its left and right edges.
- ``fixed`` layout, pad to square (``LlavaImageProcessor`` with ``do_pad=True``, the original
  LLaVA-1.5 preprocessing): pad the short side symmetrically to a square (extra pixel on the
  right / bottom), then resize and crop as above. Patches over the padding cover no image pixel.
- ``anyres`` (``LlavaNextImageProcessor``): a base view (the whole image squashed to
  ``size`` x ``size``, then the resize / crop of each view), followed by the high-resolution
  grid: the image is resized into the best-fitting ``image_grid_pinpoints`` resolution keeping
  its aspect ratio, centred on that canvas with padding, cut into ``crop_size`` tiles; the model
  (``LlavaNextModel.pack_image_features``) joins the tiles' patch grids into one grid, removes
  the rows (or columns) that are padding (``unpad_image``), and appends an ``image_newline``
  token after every row. Token order: base view row-major, then the grid row by row, each row
  followed by its newline token.

Every image token gets a *footprint*: the rectangle ``(x1, y1, x2, y2)`` of original-image
pixel coordinates that its patch's pixels come from (continuous coordinates: pixel ``i`` spans
``[i, i+1)``; resizes map pixel areas linearly, as torchvision's ``resize`` does). Newline and
CLS tokens have no footprint (NaN).

**Rule "a patch covers the box"**: the patch's footprint and the box overlap in an area larger
than zero (``min_overlap=0``, the default). Touching edges do not count. The box is given as
``(x1, y1, x2, y2)`` in the same continuous coordinates, so the integer box ``(10, 10, 20, 20)``
is pixels 10..19 in each direction. Patches over padding never cover a box; a box in the part
of a wide image that the centre crop removes covers no base-view patch (a warning says so).

Interpolation makes the *influence* of a pixel reach a little further than its footprint
(bicubic with antialiasing: 2 output pixels on each side). So a pixel change inside the box can
change a patch next to the region; tests/test_layout.py checks that the patches that change are
the region tokens plus at most those within that reach (the documented superset at borders).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

Box = Sequence[float]


# ---------------------------------------------------------------------------------------------
# Image tokens


def image_token_id(model_or_config: Any) -> int:
    """``config.image_token_id`` of a model or config (older configs: ``image_token_index``)."""
    config = getattr(model_or_config, "config", model_or_config)
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise ValueError("the config has no image_token_id / image_token_index: is this a LLaVA-family model?")


def image_token_mask(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
    """Boolean ``[batch, seq]`` (or ``[seq]``): True where ``input_ids == token_id``."""
    return input_ids == token_id


def image_token_positions(input_ids: torch.Tensor, token_id: int) -> list[torch.Tensor]:
    """Per sample, the sorted sequence positions of the image tokens (``LongTensor [n_i]``).

    ``input_ids`` is ``[batch, seq]`` (left padding allowed) or ``[seq]`` (one sample).
    """
    ids = input_ids if input_ids.dim() == 2 else input_ids[None]
    return [torch.nonzero(row == token_id).flatten() for row in ids]


# ---------------------------------------------------------------------------------------------
# Geometry of one image


@dataclass(frozen=True)
class ImageGeometry:
    """Where each image token of one image comes from.

    ``footprints``: float ``[n_tokens, 4]``, ``(x1, y1, x2, y2)`` in original-image pixels, NaN for
    tokens without pixels (newline, CLS). ``view``: long ``[n_tokens]``, 0 for the base (or only)
    view, 1 for LLaVA-NeXT's high-resolution grid, -1 for newline / CLS tokens. ``row``, ``col``:
    the token's patch position within its view's grid (after unpadding), -1 where none.
    ``image_size``: ``(height, width)`` of the original image. ``layout``: ``"crop"``, ``"pad"``
    or ``"anyres"``.
    """

    image_size: tuple[int, int]
    layout: str
    footprints: torch.Tensor
    view: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor

    @property
    def n_tokens(self) -> int:
        """Number of image tokens this image expands to."""
        return int(self.footprints.shape[0])


@dataclass(frozen=True)
class _Axis:
    """``view = scale * original + shift`` along one axis."""

    scale: float
    shift: float

    def then(self, scale: float, shift: float) -> _Axis:
        return _Axis(self.scale * scale, self.shift * scale + shift)

    def to_original(self, v: torch.Tensor) -> torch.Tensor:
        return (v - self.shift) / self.scale


def _size_dict(size: Any) -> dict[str, int]:
    if size is None:
        return {}
    if isinstance(size, dict):
        return {k: v for k, v in size.items() if v is not None}
    return {k: getattr(size, k) for k in ("shortest_edge", "longest_edge", "height", "width")
            if getattr(size, k, None) is not None}


def _resized(h: int, w: int, size: Any) -> tuple[int, int]:
    """Output ``(height, width)`` of the image processor's ``resize`` for an ``h x w`` input."""
    from transformers.image_transforms import get_resize_output_image_size
    from transformers.image_utils import ChannelDimension

    s = _size_dict(size)
    if "shortest_edge" in s and "longest_edge" not in s:
        return tuple(get_resize_output_image_size(torch.empty(1).expand(1, h, w), size=s["shortest_edge"],
                                                  default_to_square=False, input_data_format=ChannelDimension.FIRST))
    if "height" in s and "width" in s:
        return s["height"], s["width"]
    raise NotImplementedError(f"image processor size {s} is not supported by helpers.layout (shortest_edge or "
                              "height/width are)")


def _crop(h: int, w: int, crop: Any) -> tuple[float, float, int, int]:
    """Shift ``(dy, dx)`` that ``center_crop`` applies, and the output ``(height, width)``.

    Offsets as in the torchvision backend (``int((size - crop) / 2)``; the PIL backend's
    ``(size - crop) // 2`` is the same). Only when the crop is larger than the resized image (not
    the case for any LLaVA processor) do the backends differ by a pixel in the padding they add.
    """
    c = _size_dict(crop)
    ch, cw = c["height"], c["width"]
    dy = (ch - h) // 2 if ch > h else 0  # centre_crop pads a too-small image first
    dx = (cw - w) // 2 if cw > w else 0
    h, w = max(h, ch), max(w, cw)
    return dy - int((h - ch) / 2.0), dx - int((w - cw) / 2.0), ch, cw


def _view_axes(h: int, w: int, ip: Any, first: tuple[_Axis, _Axis] | None = None) -> tuple[_Axis, _Axis, int, int]:
    """Resize (``do_resize``) then centre crop (``do_center_crop``) of an ``h x w`` image."""
    ay, ax = first or (_Axis(1.0, 0.0), _Axis(1.0, 0.0))
    if getattr(ip, "do_resize", True):
        nh, nw = _resized(h, w, ip.size)
        ay, ax = ay.then(nh / h, 0.0), ax.then(nw / w, 0.0)
        h, w = nh, nw
    if getattr(ip, "do_center_crop", False):
        dy, dx, h, w = _crop(h, w, ip.crop_size)
        ay, ax = ay.then(1.0, dy), ax.then(1.0, dx)
    return ay, ax, h, w


def _grid(ay: _Axis, ax: _Axis, rows: int, cols: int, patch: int) -> torch.Tensor:
    """Footprints ``[rows * cols, 4]`` (row-major) of a patch grid of a view mapped by ``ay, ax``."""
    r = torch.arange(rows, dtype=torch.float64)
    c = torch.arange(cols, dtype=torch.float64)
    y1, y2 = ay.to_original(r * patch), ay.to_original((r + 1) * patch)
    x1, x2 = ax.to_original(c * patch), ax.to_original((c + 1) * patch)
    return torch.stack([x1[None].expand(rows, cols), y1[:, None].expand(rows, cols),
                        x2[None].expand(rows, cols), y2[:, None].expand(rows, cols)], -1).reshape(-1, 4)


def _rc(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.arange(rows).repeat_interleave(cols), torch.arange(cols).repeat(rows))


def _patch_size(processor: Any) -> int:
    p = getattr(processor, "patch_size", None)
    if p is None:
        raise ValueError("the processor has no patch_size: set processor.patch_size to the vision tower's patch size")
    return int(p)


def _extra_tokens(processor: Any) -> int:
    """CLS tokens kept per view (``vision_feature_select_strategy == "full"`` keeps them)."""
    if getattr(processor, "vision_feature_select_strategy", "default") == "full":
        return int(getattr(processor, "num_additional_image_tokens", 0) or 0)
    return 0


def _fixed_geometry(processor: Any, h: int, w: int) -> ImageGeometry:
    ip = processor.image_processor
    patch = _patch_size(processor)
    pad = bool(getattr(ip, "do_pad", False))
    ay, ax = _Axis(1.0, 0.0), _Axis(1.0, 0.0)
    hh, ww = h, w
    if pad and h != w:  # LlavaImageProcessor.pad_to_square: (max - side) // 2 before, the rest after
        m = max(h, w)
        ay, ax = ay.then(1.0, (m - h) // 2), ax.then(1.0, (m - w) // 2)
        hh = ww = m
    ay, ax, vh, vw = _view_axes(hh, ww, ip, (ay, ax))
    rows, cols = vh // patch, vw // patch
    fp = _grid(ay, ax, rows, cols, patch)
    r, c = _rc(rows, cols)
    view = torch.zeros(rows * cols, dtype=torch.long)
    extra = _extra_tokens(processor)
    if extra:
        fp = torch.cat([torch.full((extra, 4), float("nan"), dtype=fp.dtype), fp])
        view = torch.cat([torch.full((extra,), -1), view])
        r, c = torch.cat([torch.full((extra,), -1), r]), torch.cat([torch.full((extra,), -1), c])
    return ImageGeometry((h, w), "pad" if pad else "crop", fp, view, r, c)


def _anyres_geometry(processor: Any, h: int, w: int) -> ImageGeometry:
    from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
    from transformers.image_utils import ChannelDimension

    ip = processor.image_processor
    patch = _patch_size(processor)
    if _extra_tokens(processor):
        raise NotImplementedError("LLaVA-NeXT with vision_feature_select_strategy='full' is not supported")
    size = _size_dict(ip.size)
    side = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
    crop = _size_dict(ip.crop_size)
    tile = crop.get("height") or size.get("height") or size["shortest_edge"]

    # base view: squash to `side`, then the per-view resize and crop
    ay, ax, vh, vw = _view_axes(side[0], side[1], ip, (_Axis(side[0] / h, 0.0), _Axis(side[1] / w, 0.0)))
    g_rows, g_cols = vh // patch, vw // patch
    base = _grid(ay, ax, g_rows, g_cols, patch)
    br, bc = _rc(g_rows, g_cols)

    # high-resolution grid: resize into the best pinpoint, centre on the canvas, cut tiles
    pinpoints = [list(p) for p in ip.image_grid_pinpoints]
    bh, bw = select_best_resolution((h, w), pinpoints)
    nh, nw = get_patch_output_size(torch.empty(1).expand(1, h, w), (bh, bw), ChannelDimension.FIRST)
    canvas_y, canvas_x = _Axis(nh / h, (bh - nh) // 2), _Axis(nw / w, (bw - nw) // 2)
    t_rows, t_cols = bh // tile, bw // tile
    ty, tx, th, tw = _view_axes(tile, tile, ip)  # tile pixels -> its view pixels
    per_r, per_c = th // patch, tw // patch
    R, C = t_rows * per_r, t_cols * per_c
    rr = torch.arange(R, dtype=torch.float64)
    cc = torch.arange(C, dtype=torch.float64)

    def to_orig(v: torch.Tensor, per: int, t_axis: _Axis, canvas: _Axis, end: int) -> torch.Tensor:
        tile_idx = torch.div(v, per, rounding_mode="floor")
        local = t_axis.to_original((v - tile_idx * per + end) * patch)  # in tile pixels
        return canvas.to_original(tile_idx * tile + local)

    y1, y2 = to_orig(rr, per_r, ty, canvas_y, 0), to_orig(rr, per_r, ty, canvas_y, 1)
    x1, x2 = to_orig(cc, per_c, tx, canvas_x, 0), to_orig(cc, per_c, tx, canvas_x, 1)

    # unpad_image of modeling_llava_next (same rounding)
    r0, r1, c0, c1 = 0, R, 0, C
    if w / h > C / R:
        new_h = int(round(h * (C / w), 7))
        pad = (R - new_h) // 2
        r0, r1 = pad, R - pad
    else:
        new_w = int(round(w * (R / h), 7))
        pad = (C - new_w) // 2
        c0, c1 = pad, C - pad
    rows, cols = r1 - r0, c1 - c0
    nan = float("nan")
    fp = torch.full((rows, cols + 1, 4), nan, dtype=torch.float64)
    fp[:, :cols, 0] = x1[c0:c1][None]
    fp[:, :cols, 2] = x2[c0:c1][None]
    fp[:, :cols, 1] = y1[r0:r1][:, None]
    fp[:, :cols, 3] = y2[r0:r1][:, None]
    gr = torch.arange(rows)[:, None].expand(rows, cols + 1).clone()
    gc = torch.arange(cols + 1)[None].expand(rows, cols + 1).clone()
    view = torch.ones(rows, cols + 1, dtype=torch.long)
    view[:, cols] = -1
    gr[:, cols] = -1
    gc[:, cols] = -1
    return ImageGeometry((h, w), "anyres", torch.cat([base, fp.reshape(-1, 4)]),
                         torch.cat([torch.zeros(g_rows * g_cols, dtype=torch.long), view.reshape(-1)]),
                         torch.cat([br, gr.reshape(-1)]), torch.cat([bc, gc.reshape(-1)]))


def image_geometry(processor: Any, image_size: Sequence[int]) -> ImageGeometry:
    """Footprint of every image token of one image of ``image_size = (height, width)`` pixels.

    ``processor`` is the model's processor (``LlavaProcessor`` / ``LlavaNextProcessor``, with the
    image processor in ``processor.image_processor`` and the vision patch size in
    ``processor.patch_size``). Its settings (``size``, ``crop_size``, ``do_resize``,
    ``do_center_crop``, ``do_pad``, ``image_grid_pinpoints``) decide the geometry, see the module
    docstring. The number of tokens equals what the processor writes into ``input_ids``.
    """
    h, w = (int(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive (height, width), got {tuple(image_size)}")
    ip = processor.image_processor
    if getattr(ip, "image_grid_pinpoints", None) is not None:
        return _anyres_geometry(processor, h, w)
    return _fixed_geometry(processor, h, w)


# ---------------------------------------------------------------------------------------------
# Boxes and region tokens


def clip_box(box: Box, image_size: Sequence[int], sample_id: Any = None) -> tuple[float, float, float, float]:
    """``box = (x1, y1, x2, y2)`` clipped to an image of ``(height, width)``.

    A box partly outside is clipped with a warning; a box wholly outside (or empty, or with
    ``x2 <= x1`` / ``y2 <= y1``) raises ``ValueError`` naming ``sample_id``.
    """
    if len(box) != 4:
        raise ValueError(f"sample {sample_id!r}: a box is (x1, y1, x2, y2) in pixels, got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    h, w = image_size
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"sample {sample_id!r}: box {tuple(box)} is empty; expected x1 < x2 and y1 < y2 in pixels")
    cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
    if not (cx2 > cx1 and cy2 > cy1):
        raise ValueError(f"sample {sample_id!r}: box {tuple(box)} lies wholly outside the {w}x{h} (width x height) "
                         "image; check the box's coordinate order (x1, y1, x2, y2) and that it belongs to this image")
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        warnings.warn(f"sample {sample_id!r}: box {tuple(box)} extends beyond the {w}x{h} image; clipped to "
                      f"{(cx1, cy1, cx2, cy2)}", stacklevel=2)
    return cx1, cy1, cx2, cy2


def overlap(footprints: torch.Tensor, box: Box) -> torch.Tensor:
    """Overlap area ``[n]`` (original pixels^2) of each footprint ``[n, 4]`` with ``box``; 0 for NaN rows."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx = (torch.minimum(footprints[:, 2], torch.tensor(x2, dtype=footprints.dtype))
          - torch.maximum(footprints[:, 0], torch.tensor(x1, dtype=footprints.dtype))).clamp(min=0)
    dy = (torch.minimum(footprints[:, 3], torch.tensor(y2, dtype=footprints.dtype))
          - torch.maximum(footprints[:, 1], torch.tensor(y1, dtype=footprints.dtype))).clamp(min=0)
    return torch.nan_to_num(dx * dy, nan=0.0)


def region_token_mask(processor: Any, image_size: Sequence[int], boxes: Box | Sequence[Box], sample_id: Any = None,
                      min_overlap: float = 0.0, geometry: ImageGeometry | None = None,
                      views: Sequence[int] | None = None) -> torch.Tensor:
    """Boolean ``[n_image_tokens]``: the image tokens of one image whose patch covers any of ``boxes``.

    ``boxes``: one ``(x1, y1, x2, y2)`` box in original-image pixels, or a list of them (PointQA
    has several; the region is their union). A token is in the region when its footprint overlaps
    a (clipped) box by more than ``min_overlap`` square pixels (default 0: any overlap). ``views``
    restricts the region to some views (LLaVA-NeXT: ``(0,)`` the base view only, ``(1,)`` the
    high-resolution grid only; default None: all). Warns if no token covers the box (e.g. the box
    lies in the part the centre crop removes).
    """
    geometry = geometry or image_geometry(processor, image_size)
    box_list = [boxes] if len(boxes) == 4 and not isinstance(boxes[0], (list, tuple, torch.Tensor)) else boxes
    mask = torch.zeros(geometry.n_tokens, dtype=torch.bool)
    for b in box_list:
        mask |= overlap(geometry.footprints, clip_box(b, geometry.image_size, sample_id)) > min_overlap
    if views is not None:
        mask &= torch.isin(geometry.view, torch.as_tensor(list(views), dtype=torch.long))
    if not mask.any():
        warnings.warn(f"sample {sample_id!r}: no image token covers box(es) {box_list} (the processor's crop removed "
                      "that part of the image); its region is empty", stacklevel=2)
    return mask


def region_mask(input_ids: torch.Tensor, token_id: int, processor: Any, image_sizes: Sequence[Sequence[int]],
                boxes: Sequence[Box | Sequence[Box]], sample_ids: Sequence[Any] | None = None,
                min_overlap: float = 0.0, views: Sequence[int] | None = None) -> torch.Tensor:
    """Boolean ``[batch, seq]``: the sequence positions of each sample's region tokens.

    One image per sample: its image tokens (``input_ids == token_id``, in order) are matched to
    :func:`image_geometry` of ``image_sizes[i] = (height, width)``, and those covering
    ``boxes[i]`` are marked. Left padding is fine. Raises ``ValueError`` naming the sample when
    its number of image tokens does not match the processor geometry. ``min_overlap`` and
    ``views``: as in :func:`region_token_mask`.
    """
    ids = input_ids if input_ids.dim() == 2 else input_ids[None]
    sample_ids = list(sample_ids) if sample_ids is not None else list(range(ids.shape[0]))
    out = torch.zeros_like(ids, dtype=torch.bool)
    for i, pos in enumerate(image_token_positions(ids, token_id)):
        geo = image_geometry(processor, image_sizes[i])
        if geo.n_tokens != len(pos):
            raise ValueError(f"sample {sample_ids[i]!r}: input_ids hold {len(pos)} image tokens but an image of "
                             f"{tuple(image_sizes[i])} (height, width) gives {geo.n_tokens} with this processor; pass "
                             "the original image size and the processor that built input_ids (one image per sample)")
        out[i, pos] = region_token_mask(processor, image_sizes[i], boxes[i], sample_ids[i], min_overlap, geo, views)
    return out if input_ids.dim() == 2 else out[0]


IMAGE_SUBSETS = ("all", "no_newline", "base")


def image_subset_mask(input_ids: torch.Tensor, token_id: int, processor: Any, image_sizes: Sequence[Sequence[int]],
                      subset: str = "all") -> torch.Tensor:
    """Boolean ``[batch, seq]``: the image tokens of each sample that ``subset`` keeps.

    ``"all"``: every image token (:func:`image_token_mask`); ``"no_newline"``: without the tokens that show no
    pixels (LLaVA-NeXT's ``image_newline`` tokens, view -1 in :class:`ImageGeometry`); ``"base"``: the base
    view only (LLaVA-NeXT's whole-image 24x24 view; for a fixed layout, all its tokens), so a LLaVA-NeXT model
    is measured over the same 576 tokens as LLaVA-1.5. ``image_sizes[i] = (height, width)``.
    """
    if subset not in IMAGE_SUBSETS:
        raise ValueError(f"image subset must be one of {IMAGE_SUBSETS}, got {subset!r}")
    ids = input_ids if input_ids.dim() == 2 else input_ids[None]
    out = image_token_mask(ids, token_id)
    if subset == "all":
        return out if input_ids.dim() == 2 else out[0]
    for i, pos in enumerate(image_token_positions(ids, token_id)):
        geo = image_geometry(processor, image_sizes[i])
        if geo.n_tokens != len(pos):
            raise ValueError(f"sample {i}: input_ids hold {len(pos)} image tokens but an image of "
                             f"{tuple(image_sizes[i])} (height, width) gives {geo.n_tokens} with this processor")
        keep = geo.view >= 0 if subset == "no_newline" else geo.view == 0
        out[i, pos[~keep]] = False
    return out if input_ids.dim() == 2 else out[0]


def pad_to_square(processor: Any, enabled: bool = True) -> Any:
    """A copy of a fixed-layout LLaVA processor that pads each image to a square before the resize (or stops doing so).

    ``enabled=True``: ``LlavaImageProcessor(do_pad=True)`` with the processor's own size, crop, resample,
    mean and std: the short side is padded symmetrically with the mean colour (``image_mean * 255``), as the
    original LLaVA-1.5 / ViP-LLaVA code does (``expand2square``), so nothing of a 4:3 image is cut away;
    the resize and centre crop then see a square. ``enabled=False``: the same processor without padding (the
    llava-hf checkpoints' centre crop). :func:`image_geometry` reads ``do_pad``, so boxes and region tokens
    follow. The tokenizer is shared with ``processor``. Raises ``ValueError`` for an anyres (LLaVA-NeXT) processor.
    """
    import copy

    from transformers import LlavaImageProcessor

    ip = processor.image_processor
    if getattr(ip, "image_grid_pinpoints", None) is not None:
        raise ValueError("pad_to_square: an anyres (LLaVA-NeXT) processor pads its own way")
    kwargs = {"size": dict(ip.size), "crop_size": dict(ip.crop_size) if getattr(ip, "crop_size", None) else None,
              "do_resize": getattr(ip, "do_resize", True), "do_center_crop": getattr(ip, "do_center_crop", True),
              "image_mean": list(ip.image_mean), "image_std": list(ip.image_std), "do_pad": bool(enabled),
              "do_convert_rgb": getattr(ip, "do_convert_rgb", True)}
    if getattr(ip, "resample", None) is not None:
        kwargs["resample"] = ip.resample
    for name in ("do_rescale", "rescale_factor", "do_normalize"):
        if getattr(ip, name, None) is not None:
            kwargs[name] = getattr(ip, name)
    out = copy.copy(processor)
    out.image_processor = LlavaImageProcessor(**{k: v for k, v in kwargs.items() if v is not None})
    return out
