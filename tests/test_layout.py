"""Token layout: image-token positions, and region tokens checked against the vision pipeline itself.

The ground-truth test changes pixels only inside a box, runs processor + ``model.model.get_image_features``
of a tiny random model, and compares the set of image features that changed with the region tokens that
:mod:`helpers.layout` reports.

To make "which features change" a property of the patch geometry alone, the vision tower must not mix
patches: CLIP's self-attention would spread a change in one patch to every feature. The test therefore
sets every vision layer's attention ``out_proj`` weight and bias to zero, so each layer's attention adds
nothing and each output feature depends only on its own patch (patch embedding, position embedding,
layer norms and MLPs are all per token). Everything else (processor, resize / crop / pad / anyres tiling,
projector, LLaVA-NeXT packing with unpadding and newline tokens) is the real code path.

Expected result: ``region <= changed <= region(interpolation reach)``: every reported region token
changes, and the tokens that change beyond the region are only border patches within the bicubic
kernel's reach of the box (2 resized pixels, converted to original pixels per token), the documented
superset at patch borders. (A patch overlapping the box by a sliver much thinner than one resized pixel
could in principle stay unchanged after the resize rounds to uint8; the boxes here are not slivers.)
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import layout, offline
from helpers.models import REGISTRY

SHAPES = {"square": (336, 336), "wide": (240, 520), "tall": (500, 260),  # (height, width)
          "odd-wide": (191, 607), "small-tall": (150, 97)}  # extra cases, one architecture each
# boxes as fractions of (width, height), inside the part of each shape that the centre crop keeps;
# several boxes with edges at different offsets from the patch borders make a shift of a few pixels show
BOXES = [(0.30, 0.35, 0.52, 0.61), (0.41, 0.66, 0.47, 0.72), (0.58, 0.28, 0.66, 0.37), (0.553, 0.452, 0.591, 0.503)]


def _pad_processor(name: str = "llava-v1.5-7b"):
    """``name``'s processor as :func:`helpers.models.load` configures it by default: LLaVA-1.5 and ViP-LLaVA pad
    to a square with the mean colour (the original code's preprocessing), via ``LlavaImageProcessor(do_pad=True)``."""
    from helpers.models import configure_processor

    processor = configure_processor(offline.build_processor(name), REGISTRY[name])
    assert processor.image_processor.do_pad, f"{name}: the registry default should pad to a square"
    return processor


_MODELS: dict[str, object] = {}


def _local_model(name: str):
    """Tiny random model of ``name``'s architecture with the vision attention outputs zeroed (module docstring).

    The vision path depends on the architecture only (the nine names share three), so one model per
    architecture is built and reused; the processor is always ``name``'s own.
    """
    arch = REGISTRY[name].architecture
    if arch not in _MODELS:
        model, _ = offline.build(name, tiny=True)
        with torch.no_grad():
            for layer in model.model.vision_tower.encoder.layers:
                layer.self_attn.out_proj.weight.zero_()
                layer.self_attn.out_proj.bias.zero_()
        _MODELS[arch] = model
    return _MODELS[arch], offline.build_processor(name)


def _changed(model, processor, h: int, w: int, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """Boolean ``[n_image_tokens]``: the image features that change when the pixels in ``boxes`` are inverted."""
    rng = np.random.default_rng(h * 1000 + w)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    edited = pixels.copy()
    for x1, y1, x2, y2 in boxes:
        edited[y1:y2, x1:x2] = 255 - edited[y1:y2, x1:x2]
    inputs = processor.image_processor(images=[Image.fromarray(pixels), Image.fromarray(edited)], return_tensors="pt")
    kw = {"image_sizes": inputs["image_sizes"]} if "image_sizes" in inputs else {}
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=inputs["pixel_values"], **kw).pooler_output
    a, b = (f.reshape(-1, f.shape[-1]) for f in feats)  # per image, in the order they fill the image tokens
    return (a - b).abs().amax(-1) > 1e-5 * a.abs().amax()


def _grow(fp: torch.Tensor, patch: int, k: float) -> torch.Tensor:
    """Footprints grown (k > 0) or shrunk (k < 0) by k resized pixels, in original pixels per axis."""
    px = ((fp[:, 2] - fp[:, 0]) / patch).clamp(min=1.0)  # original pixels per resized pixel (>= 1: upscaling)
    py = ((fp[:, 3] - fp[:, 1]) / patch).clamp(min=1.0)
    return fp + k * torch.stack([-px, -py, px, py], -1)


MAIN = ("square", "wide", "tall")
CASES = ([(name, shape) for name in REGISTRY for shape in MAIN] + [("pad-to-square", s) for s in MAIN]
         + [(name, extra) for name in ("llava-v1.5-7b", "llava-v1.6-mistral-7b", "pad-to-square")
            for extra in ("odd-wide", "small-tall")]
         + [("pad:vip-llava-7b", s) for s in ("wide", "tall")])


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_region_tokens_are_the_features_that_change(name, shape):
    h, w = SHAPES[shape]
    if name == "pad-to-square":
        model, _ = _local_model("llava-v1.5-7b")
        processor = _pad_processor()
    elif name.startswith("pad:"):
        model, _ = _local_model(name[4:])
        processor = _pad_processor(name[4:])
    else:
        model, processor = _local_model(name)
    inputs = processor(images=Image.new("RGB", (w, h)), text="<image> what", return_tensors="pt")
    geo = layout.image_geometry(processor, (h, w))
    assert geo.n_tokens == int((inputs["input_ids"] == processor.image_token_id).sum())
    boxes = [(int(fx1 * w), int(fy1 * h), int(fx2 * w), int(fy2 * h)) for fx1, fy1, fx2, fy2 in BOXES]
    changed = _changed(model, processor, h, w, boxes)
    assert changed.shape[0] == geo.n_tokens
    region = layout.region_token_mask(processor, (h, w), boxes, sample_id=name, geometry=geo)
    outer = torch.zeros_like(region)
    for box in boxes:
        outer |= layout.overlap(_grow(geo.footprints, 14, 2.0), box) > 0
    assert region.any() and changed.any()
    assert not (changed & ~outer).any(), f"{name} {shape}: features changed outside the region + reach"
    assert not (region & ~changed).any(), f"{name} {shape}: region tokens that did not change"
    # the superset at borders is small: changed tokens outside the region are only border patches
    assert int((changed & ~region).sum()) <= int((outer & ~region).sum())
    if geo.layout == "anyres":
        assert (geo.view[region] >= 0).all() and region[geo.view == 1].any() and region[geo.view == 0].any()
    print(f"{name} {shape}: region {int(region.sum())}, changed {int(changed.sum())}, "
          f"changed-not-region {int((changed & ~region).sum())}, region-not-changed {int((region & ~changed).sum())}")


def test_wide_image_crop_drops_the_edges_and_pad_keeps_them():
    crop, pad = offline.build_processor("llava-v1.5-7b"), _pad_processor()
    h, w = 200, 600
    with pytest.warns(UserWarning, match="no image token covers"):
        assert not layout.region_token_mask(crop, (h, w), (5, 50, 60, 120), sample_id="s1").any()
    region = layout.region_token_mask(pad, (h, w), (5, 50, 60, 120), sample_id="s1")
    rows = layout.image_geometry(pad, (h, w)).row[region]
    # 200 of 600 px high, centred in a square: rows 8..15 of 24 show the image
    assert region.any() and rows.min() >= 8 and rows.max() <= 15


@pytest.mark.parametrize("name", ["llava-v1.5-7b", "vip-llava-7b"])
def test_edge_boxes_of_a_4_3_image_survive_the_default_padding(name):
    """Boxes at the left and right edges of a 4:3 image: the checkpoint's centre crop cuts them away; the
    registry default (pad to square) keeps them, and the region tokens are the vision features that change."""
    h, w = 240, 320
    boxes = [(3, 60, 30, 140), (290, 100, 318, 200)]
    crop = offline.build_processor(name)
    with pytest.warns(UserWarning, match="no image token covers"):
        assert not layout.region_token_mask(crop, (h, w), boxes[:1], sample_id="edge").any()
    model, _ = _local_model(name)
    pad = _pad_processor(name)
    geo = layout.image_geometry(pad, (h, w))
    assert geo.layout == "pad"
    region = layout.region_token_mask(pad, (h, w), boxes, sample_id="edge", geometry=geo)
    changed = _changed(model, pad, h, w, boxes)
    outer = torch.zeros_like(region)
    for box in boxes:
        outer |= layout.overlap(_grow(geo.footprints, 14, 2.0), box) > 0
    assert region.any() and not (region & ~changed).any() and not (changed & ~outer).any()
    cols = geo.col[region]
    assert cols.min() == 0 and cols.max() == 23  # both edges of the image reach the square's edges
    # the padding (rows above and below the 240 px of image in the 320 px square) shows no pixel
    top = (geo.row >= 0) & (geo.row < 3)  # 40 of 320 px above the image -> 42 of 336 px: three patch rows
    assert top.sum() == 72 and (geo.footprints[top, 3] <= 1e-6).all()


def test_box_outside_the_image():
    proc = offline.build_processor("llava-v1.5-7b")
    with pytest.warns(UserWarning, match="sample 'q7'.*clipped"):
        clipped = layout.region_token_mask(proc, (336, 336), (300, 300, 400, 400), sample_id="q7")
    assert torch.equal(clipped, layout.region_token_mask(proc, (336, 336), (300, 300, 336, 336)))
    with pytest.raises(ValueError, match="sample 'q8'.*wholly outside"):
        layout.region_token_mask(proc, (336, 336), (340, 10, 400, 50), sample_id="q8")
    with pytest.raises(ValueError, match="sample 'q9'.*empty"):
        layout.region_token_mask(proc, (336, 336), (40, 10, 20, 50), sample_id="q9")


def test_positions_with_left_padding_and_variable_anyres_counts():
    proc = offline.build_processor("llava-v1.6-vicuna-7b")
    sizes = [(240, 520), (500, 260)]
    images = [Image.new("RGB", (w, h)) for h, w in sizes]
    texts = ["<image> what", "USER: <image> how many circles are there ? ASSISTANT:"]
    inputs = proc(images=images, text=texts, return_tensors="pt", padding=True)
    ids = inputs["input_ids"]
    tid = proc.image_token_id
    positions = layout.image_token_positions(ids, tid)
    counts = [layout.image_geometry(proc, s).n_tokens for s in sizes]
    assert [len(p) for p in positions] == counts and counts[0] != counts[1]
    mask = layout.image_token_mask(ids, tid)
    assert mask.sum(-1).tolist() == counts
    assert (inputs["attention_mask"][0, : ids.shape[1] - int(inputs["attention_mask"][0].sum())] == 0).all()
    boxes = [(100, 50, 200, 150), [(10, 10, 40, 40), (200, 400, 250, 480)]]
    region = layout.region_mask(ids, tid, proc, sizes, boxes, sample_ids=["a", "b"])
    assert (region <= mask).all()
    for i in range(2):
        per_image = layout.region_token_mask(proc, sizes[i], boxes[i])
        assert torch.equal(region[i, positions[i]], per_image)
        geo = layout.image_geometry(proc, sizes[i])
        base = layout.region_token_mask(proc, sizes[i], boxes[i], views=(0,))
        grid = layout.region_token_mask(proc, sizes[i], boxes[i], views=(1,))
        assert torch.equal(base | grid, per_image) and not (base & grid).any()
        assert (geo.view[base] == 0).all() and (geo.view[grid] == 1).all()
    with pytest.raises(ValueError, match="sample 'b'"):
        layout.region_mask(ids, tid, proc, [sizes[0], sizes[0]], boxes, sample_ids=["a", "b"])


def test_toy_sized_processor_geometry_is_read_from_its_settings():
    """A 112-px processor (patch 14 -> 8x8 grid): counts and footprints follow its settings."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    tok = offline.build_tokenizer()
    ip = CLIPImageProcessor(size={"shortest_edge": 112}, crop_size={"height": 112, "width": 112})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, image_token="<image>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = proc(images=Image.new("RGB", (224, 112)), text="<image> what", return_tensors="pt")["input_ids"]
    geo = layout.image_geometry(proc, (112, 224))
    assert geo.n_tokens == int((ids == proc.image_token_id).sum()) == 64
    # 224 wide -> resized 224x112, crop keeps x in [56, 168): the first patch spans original x 56..70
    assert torch.allclose(geo.footprints[0], torch.tensor([56.0, 0.0, 70.0, 14.0], dtype=geo.footprints.dtype))
