"""Scenes v2: deterministic, non-overlapping, patch-sized objects; labels, captions and box match pixels."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest

from helpers import data, scenes


def _scenes(n: int, seed: int = 0, **kwargs) -> list[scenes.Scene]:
    return [scenes.make_scene(np.random.default_rng([seed, i]), **kwargs) for i in range(n)]


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_same_seed_same_scene_and_png_bytes():
    a, b = (scenes.make_scene(np.random.default_rng(7)) for _ in range(2))
    c = scenes.make_scene(np.random.default_rng(8))
    assert a == b and a != c
    assert _png(scenes.render(a)) == _png(scenes.render(b))
    assert _png(scenes.render(a, box=True)) == _png(scenes.render(b, box=True))
    assert scenes.caption(a, np.random.default_rng(1)) == scenes.caption(b, np.random.default_rng(1))


def test_counts_cover_one_to_six_about_uniformly():
    counts = Counter(s.count for s in _scenes(600))
    assert sorted(counts) == [1, 2, 3, 4, 5, 6]
    assert min(counts.values()) > 600 / 6 * 0.7


@pytest.mark.parametrize("size,layout", [((160, 160), "balanced"), ((160, 160), "free"),
                                         ((336, 336), "balanced"), ((200, 160), "free")])
def test_objects_inside_disjoint_with_gap_and_sized(size, layout):
    gap = scenes.paper_line_width(size) + 2
    for scene in _scenes(60, seed=1, size=size, layout=layout):
        W, H = scene.size
        assert scene.size == size and 1 <= len(scene.objects) <= 12
        for o in scene.objects:
            x1, y1, x2, y2 = o.box
            assert 0 < x1 < x2 < W and 0 < y1 < y2 < H
            assert 22 <= x2 - x1 <= 40 and x2 - x1 == y2 - y1
        boxes = [o.box for o in scene.objects]
        for i, p in enumerate(boxes):
            for q in boxes[i + 1:]:
                assert p[2] + gap <= q[0] or q[2] + gap <= p[0] or p[3] + gap <= q[1] or q[3] + gap <= p[1]


def _check_target_first(scene: scenes.Scene) -> None:
    assert all(o.type == scene.target_type for o in scene.objects[:scene.count])
    assert scene.objects[scene.target].type == scene.target_type and scene.target < scene.count
    assert scene.count == sum(o.type == scene.target_type for o in scene.objects)
    assert sum(scene.group_sizes.values()) == len(scene.objects)


def test_balanced_layout_is_a_rectangle_with_set_sizes():
    largest = 0
    for scene in _scenes(200, seed=2):
        _check_target_first(scene)
        kind, colour = scene.target_type
        sizes = scene.group_sizes
        assert len(sizes) == 4 and len(scene.objects) == 12
        kinds, colours = {k for k, _ in sizes}, {c for _, c in sizes}
        assert kind in kinds and colour in colours and set(sizes) == {(k, c) for k in kinds for c in colours}
        expected = (1, 2, 4, 5) if scene.count in (4, 5) else (1, 2, 3, 6)
        assert tuple(sorted(sizes.values())) == expected
        largest += scene.count == max(sizes.values())
    assert 0.2 < largest / 200 < 0.45  # the largest group is the target's in 1/3 of scenes


def test_free_layout_shares_colour_and_kind_and_follows_the_prior():
    presence = Counter()
    for scene in _scenes(400, seed=3, layout="free", prior=scenes.TYPE_PRIOR):
        _check_target_first(scene)
        kind, colour = scene.target_type
        assert any(o.colour == colour and o.kind != kind for o in scene.objects)
        assert any(o.kind == kind and o.colour != colour for o in scene.objects)
        assert len(scene.objects) <= 12
        presence.update(scene.group_sizes)
    rates = [presence[t] for t in scenes.POPULARITY]
    assert np.mean(rates[:5]) > 2 * np.mean(rates[-5:])
    assert np.corrcoef(np.argsort(np.argsort(rates)), -np.arange(20))[0, 1] > 0.8


def test_bad_parameters_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="layout"):
        scenes.make_scene(rng, layout="grid")
    with pytest.raises(ValueError, match="size_sets"):
        scenes.make_scene(rng, max_count=7)
    with pytest.raises(ValueError, match="fit"):
        scenes.make_scene(rng, size=(40, 40))


@pytest.mark.parametrize("layout", ["balanced", "free"])
def test_objects_cover_several_patches(layout):
    covered = [n for scene in _scenes(100, seed=3, layout=layout) for n in scenes.patches_covered(scene)]
    assert np.mean(np.array(covered) >= 2) >= 0.8


def test_patch_labels_agree_with_rendered_pixels():
    colour_ids = {i + 1: rgb for i, rgb in enumerate(scenes.COLOURS.values())}
    for scene in _scenes(20, seed=4):
        colours, kinds = scenes.patch_labels(scene)
        assert colours.shape == kinds.shape == (8, 8) and colours.dtype == kinds.dtype == np.int64
        assert np.array_equal(colours == 0, kinds == 0)
        pixels = np.asarray(scenes.render(scene))
        for r in range(8):
            for c in range(8):
                patch = pixels[20 * r:20 * r + 20, 20 * c:20 * c + 20].reshape(-1, 3)
                coloured = int((patch != 255).any(axis=1).sum())
                if colours[r, c] == 0:
                    assert coloured < 0.1 * 400 * len(scene.objects)  # at most small slivers of objects
                else:
                    n = int((patch == colour_ids[int(colours[r, c])]).all(axis=1).sum())
                    assert n >= 40, (r, c, n)
        object_pixels = (pixels != 255).any(axis=2)
        assert np.array_equal(object_pixels, scenes.object_map(scene) > 0)
        kinds_seen = {scenes.KINDS.index(o.kind) + 1 for o in scene.objects}
        assert set(np.unique(kinds)) - {0} <= kinds_seen


def test_patch_label_threshold_on_a_known_square():
    scene = scenes.Scene((160, 160), (scenes.Shape("square", "blue", (30, 30, 65, 65)),), 0)
    colours, kinds = scenes.patch_labels(scene)
    # pixels 30..64 fall in patches 1 (10 px), 2 (20 px) and 3 (5 px): patch (3, 3) holds 25 of 400 < 10%
    assert colours[1, 1] == 1 and kinds[2, 2] == 2 and colours[1, 3] == 1 and kinds[3, 2] == 2
    assert colours[3, 3] == 0 and colours[0, 0] == 0 and int((colours > 0).sum()) == 8
    assert scenes.patches_covered(scene) == [8]


def test_box_equals_data_draw_boxes():
    for size in [(160, 160), (336, 336)]:
        for scene in _scenes(10, seed=5, size=size):
            drawn = scenes.render(scene, box=True)
            expected = data.draw_boxes(scenes.render(scene), [scene.box])
            assert np.array_equal(np.asarray(drawn), np.asarray(expected))
            assert not np.array_equal(np.asarray(drawn), np.asarray(scenes.render(scene)))


def test_position_words():
    size = (160, 160)
    assert scenes.position((0, 0, 20, 20), size) == "top left"
    assert scenes.position((70, 0, 90, 20), size) == "top"
    assert scenes.position((140, 70, 160, 90), size) == "right"
    assert scenes.position((70, 70, 90, 90), size) == "centre"
    assert scenes.position((0, 140, 20, 160), size) == "bottom left"
    assert scenes.position((140, 140, 160, 160), size) == "bottom right"
    assert set(scenes.POSITIONS) == set(scenes.PREPOSITIONS)


def test_caption_names_objects_without_counts():
    rng = np.random.default_rng(0)
    for scene in _scenes(50, seed=6):
        text = scenes.caption(scene, rng)
        assert text[0].isupper() and text.endswith(".")
        named = [p for p in text[:-1].replace(" and ", ", ").split(", ")]
        assert len(named) == min(4, len(scene.objects))
        phrases = {scenes.describe(o, scene.size) for o in scene.objects}
        assert all(p[0].lower() + p[1:] in phrases for p in named)
        assert not any(ch.isdigit() for ch in text)
        assert not any(w in text.split() for w in ("two", "three", "four", "five", "six", "many"))
    one = scenes.Scene((160, 160), (scenes.Shape("circle", "blue", (5, 5, 30, 30)),), 0)
    assert scenes.caption(one, rng) == "A blue circle at the top left."


def test_dict_round_trip_and_group_sizes():
    scene = _scenes(1, seed=7)[0]
    assert scenes.Scene.from_dict(scene.to_dict()) == scene
    sizes = scenes.group_sizes_json(scene)
    assert sum(sizes.values()) == len(scene.objects)
    assert sizes[scenes.group_key(*scene.target_type)] == scene.count


def test_constants():
    assert len(scenes.COLOURS) == 5 and "red" not in scenes.COLOURS
    assert set(scenes.SUPER) == set(scenes.KINDS) and scenes.SUPER["circle"] == "round"
    assert len(scenes.POPULARITY) == len(scenes.TYPES) == 20 and set(scenes.POPULARITY) == set(scenes.TYPES)
    assert len(set(scenes.COLOURS.values())) == 5
