"""plots.patch_map / head_attention_on_image: patch values land on their footprints."""

import math

import torch
from PIL import Image

from helpers import plots


def test_patch_map_fills_each_footprint_and_skips_newlines():
    footprints = torch.tensor([[0, 0, 5, 5], [5, 0, 10, 5], [float("nan")] * 4, [0, 5, 10, 10]], dtype=torch.float32)
    out = plots.patch_map(torch.tensor([1.0, 2.0, 9.0, 3.0]), footprints, (10, 12))
    assert out.shape == (10, 12)
    assert (out[:5, :5] == 1).all() and (out[:5, 5:10] == 2).all() and (out[5:, :10] == 3).all()
    assert all(math.isnan(v) for v in out[:, 10:].flatten())  # no patch covers the right edge
    assert 9.0 not in out


def test_head_attention_on_image_draws_one_panel_per_head():
    from helpers.layout import ImageGeometry

    rows = torch.rand(2, 3, 10)
    footprints = torch.tensor([[0, 0, 4, 4], [4, 0, 8, 4], [0, 4, 4, 8], [4, 4, 8, 8]], dtype=torch.float32)
    geometry = ImageGeometry((8, 8), "crop", footprints, torch.zeros(4, dtype=torch.long),
                             torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1]))
    fig = plots.head_attention_on_image(Image.new("RGB", (8, 8)), rows, [(0, 1), (1, 2)], torch.arange(3, 7),
                                        geometry, region=torch.tensor([True, False, False, False]),
                                        boxes=((0, 0, 3, 3),))
    assert len(fig.axes) == 5  # the image, two heads, two colour bars
    titles = "".join(a.get_title() for a in fig.axes)
    assert f"layer 1, head 2\nweight on image {float(rows[1, 2, 3:7].sum()):.2f}" in titles
