"""Deterministic synthetic PointQA-style scenes: coloured shapes, one exemplary object in a box.

A :class:`Scene` is a white image with shapes placed on a ``grid x grid`` layout of cells (one
shape per cell, drawn inset with a random margin). One shape is the *exemplary object*
(``Scene.target``); its box is the question's box. The task is LookTwice-style counting: every
question asks how many objects *like the exemplary one* (same kind and colour) the whole image
holds, and the three question kinds differ only in how they name it:

- ``general``: "How many of these are there?" (only the box says which object is meant);
- ``object``: "How many blue circles are there?" (the name says it; the box is redundant);
- ``super``: "How many of these round shapes are there?" (the super-category narrows it down,
  the box still decides the colour and, for angular shapes, the kind).

Design choices (parameters of :func:`make_scene`): counts of the target type are uniform in
``1..max_count`` (chance = ``1/max_count`` for a model that ignores the image); every scene has
distractor groups that share the target's colour or its kind, so that both attributes must be
read. Colours avoid red, the colour of the drawn box. Default: 112x112 pixels on an 8x8 grid, so that
each shape and its drawn box lie inside one 14-pixel patch of a 112-pixel vision tower (the toy
models, ``helpers.toy``); any size whose cells hold a patch-aligned grid keeps that property after
resizing (e.g. 336 px, grid 8: 42-pixel cells, 3x3 patches of a 336-pixel CLIP).

Box convention: ``(x1, y1, x2, y2)`` in pixels with ``x2``/``y2`` exclusive, as PointQA's
``bboxes`` (pixel corners). The visual prompt draws a red rectangle just outside the box with the
paper's line width ``max(1, int(3 * max(W, H) / 336))``; the plain prompt draws nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle")
COLOURS = {"blue": (30, 80, 230), "green": (20, 160, 40), "yellow": (235, 190, 0)}
SUPER = {"circle": "round", "square": "angular", "triangle": "angular"}
BACKGROUND = (255, 255, 255)
BOX_COLOUR = (255, 0, 0)
QUESTION_KINDS = ("general", "object", "super")


@dataclass(frozen=True)
class Shape:
    """One object: ``kind`` in :data:`KINDS`, ``colour`` in :data:`COLOURS`, pixel ``box``."""

    kind: str
    colour: str
    box: tuple[int, int, int, int]

    @property
    def type(self) -> tuple[str, str]:
        """``(kind, colour)``: what makes two objects 'the same' for counting."""
        return self.kind, self.colour


@dataclass(frozen=True)
class Scene:
    """An image description: ``size = (W, H)``, the shapes, and the index of the exemplary object."""

    size: tuple[int, int]
    shapes: list[Shape] = field(default_factory=list)
    target: int = 0

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The question's box: the exemplary object's box."""
        return self.shapes[self.target].box

    @property
    def group_sizes(self) -> dict[tuple[str, str], int]:
        """``{(kind, colour): how many shapes of that type}`` for every type in the scene."""
        return dict(Counter(s.type for s in self.shapes))

    @property
    def count(self) -> int:
        """How many shapes have the exemplary object's kind and colour (the answer)."""
        return self.group_sizes[self.shapes[self.target].type]


def paper_line_width(size: tuple[int, int]) -> int:
    """The paper's box line width for an image of ``size = (W, H)``: ``max(1, int(3*max(W,H)/336))``."""
    return max(1, int(3 * max(size) / 336))


def make_scene(rng: np.random.Generator, size: tuple[int, int] = (112, 112), grid: int = 8, max_count: int = 4,
               distractor_groups: tuple[int, int] = (2, 3), max_distractor_count: int = 3,
               min_fill: float = 0.7, total: int | None = 8, group_counts: tuple[int, ...] | None = None) -> Scene:
    """Draw a random scene (all randomness from ``rng``; same generator state, same scene).

    Args:
        rng: ``numpy.random.default_rng(seed)``.
        size: image ``(W, H)`` in pixels; each must be at least ``12 * grid``.
        grid: cells per side; at most one shape per cell.
        max_count: the target type appears ``1..max_count`` times (uniform).
        distractor_groups: inclusive range of how many other types appear. The first shares the
            target's colour, the second its kind; further groups are any other type.
        max_distractor_count: each distractor type appears ``1..max_distractor_count`` times
            (only when ``total`` is ``None``).
        total: number of shapes in every scene (default 8); the distractor groups share the
            ``total - count`` remaining places (each at least one). A fixed total makes "how many
            of these" a fixed fraction of the objects, which a tiny model learns to read by
            attention quickly; ``None`` draws each distractor group's size independently.
        min_fill: smallest shape side as a fraction of the cell side (largest is the cell minus
            a margin that leaves room for the drawn box).
        group_counts: a *balanced* scene: exactly these group sizes, one type each (e.g.
            ``(1, 2, 3, 4)``: 10 shapes of four types), and the exemplary object's group drawn
            uniformly among them. Every scene then has the same group sizes, so they say nothing
            about the answer (with the defaults they predict ~0.6 of the answers). Other
            whole-image cues remain: the exemplar's type always has a colour and a kind partner,
            which often singles it out (``helpers.toy.statistics_baseline``). Overrides
            ``max_count``, ``distractor_groups`` and ``total``; distractor types are chosen as
            above (the target's colour, its kind, then any), sizes shuffled among them.
    """
    W, H = size
    if min(W, H) < 12 * grid:
        raise ValueError(f"size {size} too small for a {grid}x{grid} grid: need at least {12 * grid} px a side")
    kind, colour = KINDS[rng.integers(len(KINDS))], list(COLOURS)[rng.integers(len(COLOURS))]
    others = [(k, c) for k in KINDS for c in COLOURS if (k, c) != (kind, colour)]
    if group_counts is not None:
        if not 1 <= len(group_counts) <= len(others) + 1 or min(group_counts) < 1 or sum(group_counts) > grid * grid:
            raise ValueError(f"group_counts={group_counts}: need 1..{len(others) + 1} positive sizes that fit "
                             f"on a {grid}x{grid} grid")
        pick = int(rng.integers(len(group_counts)))
        target_count = int(group_counts[pick])
        rest_sizes = [int(group_counts[i]) for i in rng.permutation(len(group_counts)) if i != pick]
        n_groups = len(rest_sizes)
    else:
        target_count = int(rng.integers(1, max_count + 1))
        n_groups = int(rng.integers(distractor_groups[0], distractor_groups[1] + 1))
    same_colour = [t for t in others if t[1] == colour]
    same_kind = [t for t in others if t[0] == kind]
    types: list[tuple[str, str]] = []
    for pool in (same_colour, same_kind) + (others,) * max(0, n_groups - 2):
        pool = [t for t in pool if t not in types]
        if len(types) < n_groups and pool:
            types.append(pool[rng.integers(len(pool))])
    if group_counts is not None:
        counts = [target_count] + rest_sizes
    elif total is None:
        counts = [target_count] + [int(rng.integers(1, max_distractor_count + 1)) for _ in types]
    else:
        rest = total - target_count
        if rest < len(types) or total > grid * grid:
            raise ValueError(f"total={total} cannot hold {target_count} targets and {len(types)} distractor groups "
                             f"on a {grid}x{grid} grid: raise total or lower max_count / distractor_groups")
        extra = np.bincount(rng.integers(len(types), size=rest - len(types)), minlength=len(types))
        counts = [target_count] + [1 + int(e) for e in extra]
    cells_free = grid * grid
    while sum(counts) > cells_free:  # only with a small grid: shrink the largest distractor group
        i = 1 + int(np.argmax(counts[1:]))
        counts[i] -= 1
    kinds_colours = [(kind, colour)] * counts[0] + [t for t, n in zip(types, counts[1:], strict=True) for _ in range(n)]
    cells = rng.permutation(grid * grid)[: len(kinds_colours)]
    cw, ch = W // grid, H // grid
    margin = paper_line_width(size) + 1
    shapes = []
    for (k, c), cell in zip(kinds_colours, cells, strict=True):
        cx, cy = int(cell % grid) * cw, int(cell // grid) * ch
        side_max = min(cw, ch) - 2 * margin
        side = int(rng.integers(max(4, int(min_fill * min(cw, ch))), side_max + 1))
        x1 = cx + int(rng.integers(margin, cw - margin - side + 1))
        y1 = cy + int(rng.integers(margin, ch - margin - side + 1))
        shapes.append(Shape(k, c, (x1, y1, x1 + side, y1 + side)))
    # the first target_count shapes have the target type; pick one of them as the exemplar
    target = int(rng.integers(target_count))
    return Scene(size=(W, H), shapes=shapes, target=target)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape) -> None:
    x1, y1, x2, y2 = shape.box
    fill = COLOURS[shape.colour]
    if shape.kind == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif shape.kind == "square":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif shape.kind == "triangle":
        draw.polygon([((x1 + x2 - 1) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill)
    else:
        raise ValueError(f"unknown shape kind {shape.kind!r}; known: {KINDS}")


def render(scene: Scene, draw_box: bool, line_width: int | None = None) -> Image.Image:
    """The scene as an RGB image of ``scene.size``.

    ``draw_box=True`` is the visual prompt: a red rectangle of ``line_width`` pixels (default the
    paper's :func:`paper_line_width`) drawn just outside the exemplary object's box.
    ``draw_box=False`` is the plain prompt: nothing but the shapes.
    """
    img = Image.new("RGB", scene.size, BACKGROUND)
    draw = ImageDraw.Draw(img)
    for shape in scene.shapes:
        _draw_shape(draw, shape)
    if draw_box:
        lw = paper_line_width(scene.size) if line_width is None else int(line_width)
        if lw < 1:
            raise ValueError(f"line_width must be at least 1, got {line_width}")
        x1, y1, x2, y2 = scene.box
        W, H = scene.size
        draw.rectangle([max(0, x1 - lw), max(0, y1 - lw), min(W - 1, x2 - 1 + lw), min(H - 1, y2 - 1 + lw)],
                       outline=BOX_COLOUR, width=lw)
    return img


def questions(scene: Scene) -> dict[str, tuple[str, str]]:
    """``{"general" | "object" | "super": (question, answer)}``; the answer is the count as a string.

    All three ask for the same count (objects of the exemplary object's kind and colour), as in
    LookTwice-QA, where the three kinds differ only in how the object is named.
    """
    t = scene.shapes[scene.target]
    answer = str(scene.count)
    return {
        "general": ("How many of these are there?", answer),
        "object": (f"How many {t.colour} {t.kind}s are there?", answer),
        "super": (f"How many of these {SUPER[t.kind]} shapes are there?", answer),
    }


def words() -> list[str]:
    """Every word the questions can use (for a word-level tokenizer)."""
    ws = "how many of these are there ? shapes".split() + list(COLOURS) + [k + "s" for k in KINDS]
    return ws + sorted(set(SUPER.values())) + [str(i) for i in range(0, 17)]
