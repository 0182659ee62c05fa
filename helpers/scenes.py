"""Scenes v2: deterministic synthetic images of coloured shapes for the CPU organisms.

A :class:`Scene` is a white image holding non-overlapping coloured shapes at free positions, one of them
the *exemplary object* (``Scene.target``, the object a question's box points at). The organisms' vision
tower sees a 160x160 image in 20-pixel patches (an 8x8 grid of 64 image tokens); objects have sides of
22-40 pixels, so an object and its drawn box cover several patches and the region of a box is a set of
tokens, as in the paper's models.

Vocabulary (module constants): :data:`KINDS` circle, square, triangle, diamond; :data:`SUPER` round
(circle) or angular (the others); :data:`COLOURS` blue, green, yellow, purple, cyan (no red: red is the
drawn box, :data:`BOX_COLOUR`); :data:`POSITIONS` the nine cells of a 3x3 split of the image.

Two layouts (:func:`make_scene`): ``"balanced"`` (default, for counting) puts four groups on a kind x
colour rectangle with fixed size sets, so neither the type structure nor the group sizes single out the
boxed object's group (whole-image routes answer at most 1/3 of the counts; chance 1/6); ``"free"`` (POPE
and multiple choice) draws a variable number of groups, optionally with unequal type frequencies.

What uses it: :func:`render` (the image, optionally with the visual prompt's red box), :func:`caption`
(a description without counts, for projector alignment), :func:`patch_labels` (per-patch colour and kind,
for pretraining the vision tower with an objective that never sees counts, boxes or questions), and the
task sets of :mod:`helpers.tasks`. All randomness comes from a ``numpy.random.Generator``: the same
generator state gives the same scene, caption and pixels.

Box convention: ``(x1, y1, x2, y2)`` in pixels, ``x2``/``y2`` exclusive (PointQA's ``bboxes``). The visual
prompt draws a red rectangle just outside the box with the paper's line width
``max(1, int(3 * max(W, H) / 336))``, pixel-identical to :func:`helpers.data.draw_boxes`.

This module imports no other ``helpers`` module (layer 0). The older toy generator is
:mod:`helpers.shapes` (one shape per 14-pixel cell); it is unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("circle", "square", "triangle", "diamond")
SUPER = {"circle": "round", "square": "angular", "triangle": "angular", "diamond": "angular"}
COLOURS = {"blue": (30, 80, 230), "green": (20, 160, 40), "yellow": (235, 190, 0),
           "purple": (140, 50, 190), "cyan": (0, 200, 215)}
POSITIONS = ("top left", "top", "top right", "left", "centre", "right",
             "bottom left", "bottom", "bottom right")
PREPOSITIONS = {"top left": "at the top left", "top": "at the top", "top right": "at the top right",
                "left": "on the left", "centre": "in the centre", "right": "on the right",
                "bottom left": "at the bottom left", "bottom": "at the bottom",
                "bottom right": "at the bottom right"}
BACKGROUND = (255, 255, 255)
BOX_COLOUR = (255, 0, 0)
SIZE = (160, 160)
PATCH_GRID = 8
# How often distractor types are chosen (see make_scene). The exemplary type is uniform; distractors
# follow these weights, so some types are present in more scenes than others ("popular", for POPE).
KIND_PRIOR = {"circle": 0.4, "square": 0.3, "triangle": 0.2, "diamond": 0.1}
COLOUR_PRIOR = {"blue": 0.35, "green": 0.25, "yellow": 0.2, "purple": 0.12, "cyan": 0.08}
TYPES = tuple((k, c) for k in KINDS for c in COLOURS)
TYPE_PRIOR = {(k, c): KIND_PRIOR[k] * COLOUR_PRIOR[c] for k, c in TYPES}
# Every type, most popular first: by TYPE_PRIOR, ties in TYPES order (a stable sort).
POPULARITY = tuple(sorted(TYPES, key=lambda t: -TYPE_PRIOR[t]))

Type = tuple[str, str]
PixelBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class Shape:
    """One object: ``kind`` in :data:`KINDS`, ``colour`` in :data:`COLOURS`, pixel ``box``."""

    kind: str
    colour: str
    box: PixelBox

    @property
    def type(self) -> Type:
        """``(kind, colour)``: what makes two objects 'the same' for counting."""
        return self.kind, self.colour

    @property
    def name(self) -> str:
        """``"blue circle"``."""
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """An image description: ``size = (W, H)``, the ``objects`` and the index of the exemplary one."""

    size: tuple[int, int]
    objects: tuple[Shape, ...]
    target: int = 0

    @property
    def box(self) -> PixelBox:
        """The exemplary object's box (the question's box)."""
        return self.objects[self.target].box

    @property
    def target_type(self) -> Type:
        """``(kind, colour)`` of the exemplary object."""
        return self.objects[self.target].type

    @property
    def group_sizes(self) -> dict[Type, int]:
        """``{(kind, colour): how many objects of that type}`` for every type present."""
        return dict(Counter(o.type for o in self.objects))

    @property
    def count(self) -> int:
        """How many objects share the exemplary object's kind and colour (the counting answer)."""
        return self.group_sizes[self.target_type]

    def to_dict(self) -> dict:
        """For JSON: ``{"size": [W, H], "target": i, "objects": [{"kind", "colour", "box"}, ...]}``."""
        return {"size": list(self.size), "target": self.target,
                "objects": [{"kind": o.kind, "colour": o.colour, "box": list(o.box)} for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        """The inverse of :meth:`to_dict`."""
        objects = tuple(Shape(o["kind"], o["colour"], tuple(int(v) for v in o["box"])) for o in d["objects"])
        return cls(size=(int(d["size"][0]), int(d["size"][1])), objects=objects, target=int(d["target"]))


def group_key(kind: str, colour: str) -> str:
    """A type as text, ``"blue circle"`` (the JSON key of a group size)."""
    return f"{colour} {kind}"


def group_sizes_json(scene: Scene) -> dict[str, int]:
    """:attr:`Scene.group_sizes` with ``"colour kind"`` string keys, in first-appearance order."""
    return {group_key(k, c): n for (k, c), n in scene.group_sizes.items()}


def paper_line_width(size: tuple[int, int]) -> int:
    """The paper's box line width for an image of ``size = (W, H)``: ``max(1, int(3*max(W,H)/336))``."""
    return max(1, int(3 * max(size) / 336))


# ----------------------------------------------------------------------------------------- generation
# The balanced layout's group sizes: (sizes of the four groups, the target counts that use them). The
# target counts partition 1..6, so a uniform count picks its set; the count is one of four distinct
# sizes, and the group sizes alone name it in 1/3 of the scenes (largest posterior; chance is 1/6).
BALANCED_SIZES = (((1, 2, 3, 6), (1, 2, 3, 6)), ((1, 2, 4, 5), (4, 5)))


def make_scene(rng: np.random.Generator, *, size: tuple[int, int] = SIZE, max_count: int = 6,
               max_objects: int = 12, layout: str = "balanced", prior: dict[Type, float] | None = None,
               size_sets: tuple = BALANCED_SIZES, colour_groups: tuple[int, int] = (1, 2),
               kind_groups: tuple[int, int] = (1, 2), other_groups: tuple[int, int] = (0, 1),
               min_side: int = 22, max_side: int = 40, tries: int = 256) -> Scene:
    """Draw a random scene; all randomness from ``rng`` (same generator state, same scene).

    Choices (each a parameter):

    - The target (exemplary) type is drawn from ``prior`` over the 20 kind x colour types (None:
      uniform), and it appears ``count`` times, uniform in ``1..max_count`` (chance 1/6).
    - ``layout="balanced"`` (default; the counting tasks): four groups on a kind x colour *rectangle*:
      the target ``(k, c)``, a group sharing its colour ``(k', c)``, one sharing its kind ``(k, c')`` and
      one sharing neither ``(k', c')``, with ``k'``, ``c'`` drawn from ``prior`` (given the target).
      Every group shares colour with one group and kind with another, so the type structure does not
      single out the target. Sizes come from ``size_sets`` (:data:`BALANCED_SIZES`): the set whose target
      counts hold ``count``; the other sizes go to the three distractor groups in random order. With the
      default, every scene holds 12 objects in groups of 1, 2, 3, 6 or 1, 2, 4, 5, so a reader of the
      whole image who does not find the box answers at most 1/3 right. Needs ``max_objects`` >= the sets.
    - ``layout="free"`` (POPE and multiple choice): ``colour_groups`` (inclusive range) groups share
      the target's colour, ``kind_groups`` its kind, ``other_groups`` neither; types drawn without
      replacement with weights ``prior``; each size uniform in ``1..max_count``; while the total exceeds
      ``max_objects`` the largest distractor group (first among ties) loses an object, and a group that
      reaches 0 is dropped. Group sizes and type structure say more about the target here.
    - Sides are uniform in ``min_side..max_side`` pixels (square bounding boxes), placed largest first,
      each at the first of ``tries`` random positions that keeps a gap of ``line width + 2`` pixels to
      every placed box and ``line width + 1`` to the border (the drawn box never touches another object
      and stays inside). An object that does not fit tries again at ``min_side``; if it still does not,
      the placement restarts with new sides (at most 20 times, then ``RuntimeError``). Every drawn group
      size is therefore exact.
    - ``Scene.objects`` lists the target type's objects first; ``Scene.target`` is one of them, uniform.
    """
    if not 1 <= max_count <= max_objects:
        raise ValueError(f"need 1 <= max_count <= max_objects, got {max_count}, {max_objects}")
    if not 1 <= min_side <= max_side or max_side + 2 * (paper_line_width(size) + 1) > min(size):
        raise ValueError(f"sides {min_side}..{max_side} do not fit a {size[0]}x{size[1]} image")
    weights = prior or {t: 1.0 for t in TYPES}
    target_type = _weighted(rng, TYPES, weights)
    count = int(rng.integers(1, max_count + 1))
    if layout == "balanced":
        _check_size_sets(size_sets, max_count, max_objects)
        groups = _balanced_groups(rng, target_type, count, weights, size_sets, max_objects)
    elif layout == "free":
        types = _free_types(rng, target_type, weights, colour_groups, kind_groups, other_groups)
        sizes = _trim([int(rng.integers(1, max_count + 1)) for _ in types], max_objects - count)
        groups = [(target_type, count)] + [(t, n) for t, n in zip(types, sizes, strict=True) if n > 0]
    else:
        raise ValueError(f"layout must be 'balanced' or 'free', not {layout!r}")
    objects = _place(rng, groups, size, min_side, max_side, tries)
    return Scene(size=tuple(size), objects=tuple(objects), target=int(rng.integers(count)))


def _weighted(rng: np.random.Generator, pool: Sequence[Type], weights: dict[Type, float]) -> Type:
    """One type of ``pool`` drawn with ``weights``."""
    p = np.array([weights[t] for t in pool], dtype=float)
    return pool[int(rng.choice(len(pool), p=p / p.sum()))]


def _check_size_sets(size_sets: tuple, max_count: int, max_objects: int) -> None:
    """Raise ValueError unless the target counts partition ``1..max_count`` into 4-group sets that fit."""
    targets = sorted(t for _, ts in size_sets for t in ts)
    fits = all(len(s) == 4 and set(ts) <= set(s) and sum(s) <= max_objects for s, ts in size_sets)
    if targets != list(range(1, max_count + 1)) or not fits:
        raise ValueError(f"size_sets {size_sets} must give 4 group sizes (at most {max_objects} objects) for "
                         f"each count 1..{max_count} exactly once; pass size_sets= or layout='free'")


def _balanced_groups(rng: np.random.Generator, target: Type, count: int, weights: dict[Type, float],
                     size_sets: tuple, max_objects: int) -> list[tuple[Type, int]]:
    """The rectangle's four groups, target first (see :func:`make_scene`, ``layout="balanced"``)."""
    kind, colour = target
    sizes = next(list(s) for s, targets in size_sets if count in targets)
    sizes.remove(count)
    other_kind = _weighted(rng, [t for t in TYPES if t[1] == colour and t != target], weights)[0]
    other_colour = _weighted(rng, [t for t in TYPES if t[0] == kind and t != target], weights)[1]
    sizes = [sizes[int(i)] for i in rng.permutation(3)]
    types = [(other_kind, colour), (kind, other_colour), (other_kind, other_colour)]
    return [(target, count)] + list(zip(types, sizes, strict=True))


def _free_types(rng: np.random.Generator, target: Type, weights: dict[Type, float],
                colour_groups: tuple[int, int],
                kind_groups: tuple[int, int], other_groups: tuple[int, int]) -> list[Type]:
    """Distractor types of the free layout: those sharing the target's colour, its kind, then neither."""
    kind, colour = target
    pools = [([t for t in TYPES if t[1] == colour and t != target], colour_groups),
             ([t for t in TYPES if t[0] == kind and t != target], kind_groups),
             ([t for t in TYPES if t[0] != kind and t[1] != colour], other_groups)]
    chosen: list[Type] = []
    for pool, (lo, hi) in pools:
        n = min(int(rng.integers(lo, hi + 1)), len(pool))
        p = np.array([weights[t] for t in pool], dtype=float)
        chosen += [pool[int(i)] for i in rng.choice(len(pool), size=n, replace=False, p=p / p.sum())]
    return chosen


def _trim(sizes: list[int], budget: int) -> list[int]:
    """Shrink the largest size (first among ties) by one until ``sum(sizes) <= budget``."""
    sizes = list(sizes)
    while sum(sizes) > max(0, budget):
        sizes[int(np.argmax(sizes))] -= 1
    return sizes


def _place(rng: np.random.Generator, groups: list[tuple[Type, int]], size: tuple[int, int], min_side: int,
           max_side: int, tries: int, restarts: int = 20) -> list[Shape]:
    """Boxes for every object of ``groups`` in group order (see :func:`make_scene`)."""
    lw = paper_line_width(size)
    types = [t for t, n in groups for _ in range(n)]
    for _ in range(restarts):
        sides = rng.integers(min_side, max_side + 1, size=len(types))
        boxes: list[PixelBox | None] = [None] * len(types)
        for i in np.argsort(-sides, kind="stable"):
            placed = [b for b in boxes if b is not None]
            box = _free_spot(rng, placed, int(sides[i]), size, lw + 2, lw + 1, tries)
            if box is None and sides[i] > min_side:
                box = _free_spot(rng, placed, min_side, size, lw + 2, lw + 1, tries)
            if box is None:
                break
            boxes[i] = box
        else:
            return [Shape(t[0], t[1], b) for t, b in zip(types, boxes, strict=True)]
    raise RuntimeError(f"could not place {len(types)} objects of {min_side}..{max_side} px on a {size} image "
                       f"in {restarts} tries; lower max_objects or max_side")


def _free_spot(rng: np.random.Generator, boxes: list[PixelBox], side: int, size: tuple[int, int], gap: int,
               margin: int, tries: int) -> PixelBox | None:
    """The first of ``tries`` random boxes of ``side`` that keeps ``gap`` to ``boxes``; None if none does."""
    W, H = size
    xs = rng.integers(margin, W - margin - side + 1, size=tries)
    ys = rng.integers(margin, H - margin - side + 1, size=tries)
    if not boxes:
        return int(xs[0]), int(ys[0]), int(xs[0]) + side, int(ys[0]) + side
    b = np.asarray(boxes)[None]  # [1, n, 4]
    x, y = xs[:, None], ys[:, None]
    clash = ((x < b[..., 2] + gap) & (b[..., 0] < x + side + gap)
             & (y < b[..., 3] + gap) & (b[..., 1] < y + side + gap))
    free = np.flatnonzero(~clash.any(axis=1))
    if free.size == 0:
        return None
    x0, y0 = int(xs[free[0]]), int(ys[free[0]])
    return x0, y0, x0 + side, y0 + side


# ------------------------------------------------------------------------------------------- drawing
def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, fill: tuple[int, int, int] | int) -> None:
    x1, y1, x2, y2 = shape.box
    xr, yb = x2 - 1, y2 - 1
    xm, ym = (x1 + xr) / 2, (y1 + yb) / 2
    if shape.kind == "circle":
        draw.ellipse([x1, y1, xr, yb], fill=fill)
    elif shape.kind == "square":
        draw.rectangle([x1, y1, xr, yb], fill=fill)
    elif shape.kind == "triangle":
        draw.polygon([(xm, y1), (xr, yb), (x1, yb)], fill=fill)
    elif shape.kind == "diamond":
        draw.polygon([(xm, y1), (xr, ym), (xm, yb), (x1, ym)], fill=fill)
    else:
        raise ValueError(f"unknown kind {shape.kind!r}; known: {KINDS}")


def render(scene: Scene, *, box: bool = False, line_width: int | None = None) -> Image.Image:
    """The scene as an RGB image of ``scene.size`` on white.

    ``box=True`` (the visual prompt) draws a red rectangle of ``line_width`` pixels (default
    :func:`paper_line_width`) just outside the exemplary object's box, clamped to the image: the same
    pixels as :func:`helpers.data.draw_boxes` applied to the plain image.
    """
    img = Image.new("RGB", scene.size, BACKGROUND)
    draw = ImageDraw.Draw(img)
    for shape in scene.objects:
        _draw_shape(draw, shape, COLOURS[shape.colour])
    if box:
        lw = paper_line_width(scene.size) if line_width is None else int(line_width)
        if lw < 1:
            raise ValueError(f"line_width must be at least 1, got {line_width}")
        x1, y1, x2, y2 = scene.box
        W, H = scene.size
        draw.rectangle([max(0, x1 - lw), max(0, y1 - lw), min(W - 1, x2 - 1 + lw), min(H - 1, y2 - 1 + lw)],
                       outline=BOX_COLOUR, width=lw)
    return img


def object_map(scene: Scene) -> np.ndarray:
    """``[H, W]`` ints: ``i + 1`` where object ``i`` is drawn (rasterised as by :func:`render`), else 0."""
    img = Image.new("I", scene.size, 0)
    draw = ImageDraw.Draw(img)
    for i, shape in enumerate(scene.objects):
        _draw_shape(draw, shape, i + 1)
    return np.asarray(img, dtype=np.int64)


# ------------------------------------------------------------------------------------------- language
def position(box: tuple[float, float, float, float], size: tuple[int, int]) -> str:
    """Where a box's centre lies in a 3x3 split of the image: one of :data:`POSITIONS`."""
    W, H = size
    col = min(2, max(0, int(3 * (box[0] + box[2]) / 2 / W)))
    row = min(2, max(0, int(3 * (box[1] + box[3]) / 2 / H)))
    return POSITIONS[3 * row + col]


def describe(shape: Shape, size: tuple[int, int]) -> str:
    """``"a blue circle at the top left"``: colour, kind and position (:data:`PREPOSITIONS`)."""
    return f"a {shape.name} {PREPOSITIONS[position(shape.box, size)]}"


def caption(scene: Scene, rng: np.random.Generator, *, max_objects: int = 4) -> str:
    """A short description of ``min(max_objects, #objects)`` objects chosen at random, in random order.

    E.g. ``"A blue circle at the top left, a green square in the centre and a yellow diamond on the
    right."`` Each object is named by colour, kind and position; the caption never says how many there
    are (it is the projector-alignment text, which must not teach counting).
    """
    n = min(max_objects, len(scene.objects))
    picks = rng.permutation(len(scene.objects))[:n]
    phrases = [describe(scene.objects[int(i)], scene.size) for i in picks]
    text = phrases[0] if n == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return text[0].upper() + text[1:] + "."


# ------------------------------------------------------------------------------------------- patches
def patch_bounds(size: int, grid: int) -> list[tuple[int, int]]:
    """Pixel ranges ``[start, stop)`` of ``grid`` patches along a side of ``size`` pixels."""
    return [(i * size // grid, (i + 1) * size // grid) for i in range(grid)]


def patch_labels(scene: Scene, *, grid: int = PATCH_GRID,
                 min_share: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch colour and kind labels, two int64 arrays ``[grid, grid]`` (row, column).

    A patch's label is that of the object with the most pixels in it, when those pixels cover at least
    ``min_share`` of the patch (default 0.1: 40 of a 20x20 patch's 400); else 0 (background). Colour ids
    are ``1..5`` in :data:`COLOURS` order, kind ids ``1..4`` in :data:`KINDS` order. The labels are the
    vision tower's pretraining target: they never mention counts, boxes or questions.
    """
    omap = object_map(scene)
    colour_of = np.array([0] + [list(COLOURS).index(o.colour) + 1 for o in scene.objects], dtype=np.int64)
    kind_of = np.array([0] + [KINDS.index(o.kind) + 1 for o in scene.objects], dtype=np.int64)
    best = np.zeros((grid, grid), dtype=np.int64)
    W, H = scene.size
    for r, (y0, y1) in enumerate(patch_bounds(H, grid)):
        for c, (x0, x1) in enumerate(patch_bounds(W, grid)):
            counts = np.bincount(omap[y0:y1, x0:x1].ravel(), minlength=len(scene.objects) + 1)
            i = int(np.argmax(counts[1:])) + 1
            if counts[i] >= min_share * counts.sum() and counts[i] > 0:
                best[r, c] = i
    return colour_of[best], kind_of[best]


def patches_covered(scene: Scene, *, grid: int = PATCH_GRID, min_share: float = 0.1) -> list[int]:
    """For each object, how many patches it covers with at least ``min_share`` of the patch's pixels."""
    omap = object_map(scene)
    W, H = scene.size
    covered = [0] * len(scene.objects)
    for y0, y1 in patch_bounds(H, grid):
        for x0, x1 in patch_bounds(W, grid):
            counts = np.bincount(omap[y0:y1, x0:x1].ravel(), minlength=len(scene.objects) + 1)
            for i in np.flatnonzero(counts[1:] >= min_share * (y1 - y0) * (x1 - x0)):
                covered[int(i)] += 1
    return covered
