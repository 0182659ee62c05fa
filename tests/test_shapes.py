"""The synthetic PointQA-style scene generator: deterministic, boxes inside, answers match the scene."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import shapes


def test_same_seed_same_scene_and_pixels():
    a = shapes.make_scene(np.random.default_rng(7))
    b = shapes.make_scene(np.random.default_rng(7))
    c = shapes.make_scene(np.random.default_rng(8))
    assert a == b and a != c
    assert np.array_equal(np.asarray(shapes.render(a, True)), np.asarray(shapes.render(b, True)))


@pytest.mark.parametrize("size", [(112, 112), (336, 336), (200, 150)])
def test_boxes_inside_image_and_disjoint(size):
    rng = np.random.default_rng(0)
    for _ in range(50):
        scene = shapes.make_scene(rng, size=size)
        W, H = scene.size
        for s in scene.shapes:
            x1, y1, x2, y2 = s.box
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
        boxes = [s.box for s in scene.shapes]
        for i, p in enumerate(boxes):
            for q in boxes[i + 1:]:
                assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1], "shapes overlap"


def test_answers_count_the_exemplary_type_and_questions_name_it():
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(200):
        scene = shapes.make_scene(rng)
        t = scene.shapes[scene.target]
        qs = shapes.questions(scene)
        n = sum(s.kind == t.kind and s.colour == t.colour for s in scene.shapes)
        assert {a for _, a in qs.values()} == {str(n)}
        assert 1 <= n <= 4
        assert f"{t.colour} {t.kind}s" in qs["object"][0]
        assert shapes.SUPER[t.kind] in qs["super"][0]
        assert t.colour not in qs["general"][0]
        # distractors share the target's colour or kind, so both must be read
        others = [s for s in scene.shapes if s.type != t.type]
        assert any(s.colour == t.colour for s in others) and any(s.kind == t.kind for s in others)
        seen.add(n)
    assert seen == {1, 2, 3, 4}


def test_visual_prompt_draws_red_box_with_paper_width_plain_draws_nothing():
    scene = shapes.make_scene(np.random.default_rng(2), size=(336, 336))
    plain = np.asarray(shapes.render(scene, False)).astype(int)
    visual = np.asarray(shapes.render(scene, True)).astype(int)
    assert shapes.paper_line_width(scene.size) == 3
    x1, y1, x2, y2 = scene.box
    changed = np.argwhere((plain != visual).any(-1))
    assert len(changed) > 0
    assert changed[:, 1].min() == x1 - 3 and changed[:, 1].max() == x2 + 2
    assert changed[:, 0].min() == y1 - 3 and changed[:, 0].max() == y2 + 2
    assert (visual[changed[:, 0], changed[:, 1]] == shapes.BOX_COLOUR).all()
    assert not (plain == shapes.BOX_COLOUR).all(-1).any(), "plain image must contain no red"


def test_fixed_total_and_independent_sizes():
    rng = np.random.default_rng(3)
    assert {len(shapes.make_scene(rng).shapes) for _ in range(50)} == {8}
    sizes = {len(shapes.make_scene(rng, total=None).shapes) for _ in range(50)}
    assert len(sizes) > 2
    with pytest.raises(ValueError, match="total=3"):
        shapes.make_scene(np.random.default_rng(0), total=3, max_count=4, distractor_groups=(3, 3))


def test_too_small_image_is_refused():
    with pytest.raises(ValueError, match="too small"):
        shapes.make_scene(np.random.default_rng(0), size=(30, 30))


def test_balanced_scenes_have_the_same_group_sizes_and_a_uniform_answer():
    rng = np.random.default_rng(3)
    answers = []
    for _ in range(400):
        scene = shapes.make_scene(rng, group_counts=(1, 2, 3, 4))
        sizes = scene.group_sizes
        assert sorted(sizes.values()) == [1, 2, 3, 4] and sum(sizes.values()) == len(scene.shapes)
        answers.append(scene.count)
    counts = np.bincount(answers, minlength=5)
    assert counts[0] == 0 and counts[1:].min() > 70, counts  # ~100 each of 1..4
    with pytest.raises(ValueError, match="group_counts"):
        shapes.make_scene(np.random.default_rng(0), group_counts=(40, 40))

