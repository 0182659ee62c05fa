"""Task sets on scenes v2 (:mod:`helpers.scenes`) standing in for the paper's benchmarks.

- ``"scenes-count"`` (PointQA / LookTwice-QA): how many objects are like the one in the box; question
  kinds general / object / super, prompt kinds visual (box drawn) / plain (box given as coordinates);
  the prompt is :func:`helpers.data.pointqa_prompt`, as :func:`helpers.data.load_pointqa` builds it.
- ``"scenes-pope"`` (POPE): "Is there a {colour} {kind} in the image?", yes / no, half yes; negatives
  random, popular or adversarial (:func:`pope_samples`); the prompt is :func:`helpers.data.pope_prompt`.
- ``"scenes-choice"`` (MMBench / SEED-Bench): four lettered options about colour, kind, position or a
  count; the prompt is :func:`helpers.data.multiple_choice_prompt` (the paper's letter instruction).

Every generator takes ``(seed, n)`` and builds sample ``i`` from ``numpy.random.default_rng([seed, i])``
alone, so any prefix (or any single sample) can be rebuilt. Samples are :class:`helpers.data.Sample`
with the plain rendered image (a ``PIL.Image``), the boxes, and ``meta``: ``record_id``, ``image_id``,
``scene`` (:meth:`helpers.scenes.Scene.to_dict`), ``group_sizes`` (``{"blue circle": 3, ...}``) and the
task's own fields. The committed held-out sets (``data/scenes-*``) are written from these samples by
their ``generate.py`` and read back, identical, by ``helpers.data.load_scenes_*``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from . import data, scenes
from .scenes import Scene

TASK_SETS = ("scenes-count", "scenes-pope", "scenes-choice")
NEGATIVES = ("random", "popular", "adversarial")
TOPICS = ("colour", "kind", "position", "count")
# make_scene settings per task set. Counting: the balanced layout (no whole-image route beyond 1/3).
# POPE: free layout with the type prior, so some types are present more often (popular negatives).
# Multiple choice: free layout, uniform types (no option is favoured by type frequency).
COUNT_SCENE: dict[str, Any] = {}
POPE_SCENE: dict[str, Any] = {"layout": "free", "prior": scenes.TYPE_PRIOR}
CHOICE_SCENE: dict[str, Any] = {"layout": "free"}
PLAIN_TEXT = "coordinates"  # plain counting prompts give the box in words (data.pointqa_prompt)
POSITION_MARGIN = 6  # position questions ask only about objects whose centre is this far from the 3x3 lines
MAX_REDRAWS = 50


def scene_meta(scene: Scene, image_id: str) -> dict[str, Any]:
    """What every sample's ``meta`` says about its image: ``image_id``, ``scene`` and ``group_sizes``."""
    return {"image_id": image_id, "scene": scene.to_dict(), "group_sizes": scenes.group_sizes_json(scene)}


def _box(box: Sequence[float]) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in box)


def _many(seed: int, n: int, one: Callable[..., list[data.Sample]], **kwargs: Any) -> list[data.Sample]:
    """``one(rng, i, **kwargs)`` for ``i < n`` with ``rng = default_rng([seed, i])``, concatenated."""
    return [s for i in range(n) for s in one(np.random.default_rng([seed, i]), i, **kwargs)]


# ------------------------------------------------------------------------------------------- counting
def count_questions(scene: Scene) -> dict[str, str]:
    """``{"general" | "object" | "super": question}``; all ask for :attr:`Scene.count` (LookTwice-QA)."""
    kind, colour = scene.target_type
    return {"general": "How many of these are there?",
            "object": f"How many {colour} {kind}s are there?",
            "super": f"How many of these {scenes.SUPER[kind]} shapes are there?"}


def count_samples(seed: int, n: int, *, question_kinds: Sequence[str] = data.QUESTION_KINDS,
                  prompt_kinds: Sequence[str] = data.PROMPT_KINDS, expand: bool = False,
                  plain_text: str = PLAIN_TEXT,
                  scene_kwargs: Mapping[str, Any] | None = None) -> list[data.Sample]:
    """PointQA analogue: ``n`` samples (``expand=True``: ``n`` scenes x every question kind x prompt kind).

    Sample ``i``: a scene from :func:`helpers.scenes.make_scene` (``COUNT_SCENE``, updated by
    ``scene_kwargs``), then a question kind and a prompt kind drawn uniformly from those given. The answer is
    the count of the boxed object's type as a string; the prompt is :func:`helpers.data.pointqa_prompt`
    with ``plain_text`` ("coordinates": plain prompts give the box as ``[x1, y1, x2, y2]`` pixels). Ids
    and order match :func:`helpers.data.load_pointqa`: ``scenes-count-{i:04d}:{question kind}:{prompt kind}``.
    """
    return _many(seed, n, _count_one, question_kinds=tuple(question_kinds), prompt_kinds=tuple(prompt_kinds),
                 expand=expand, plain_text=plain_text, scene_kwargs={**COUNT_SCENE, **(scene_kwargs or {})})


def _count_one(rng: np.random.Generator, i: int, *, question_kinds: tuple[str, ...],
               prompt_kinds: tuple[str, ...], expand: bool, plain_text: str,
               scene_kwargs: Mapping[str, Any]) -> list[data.Sample]:
    scene = scenes.make_scene(rng, **scene_kwargs)
    if expand:
        pairs = [(q, p) for q in question_kinds for p in prompt_kinds]
    else:
        pairs = [(question_kinds[int(rng.integers(len(question_kinds)))],
                  prompt_kinds[int(rng.integers(len(prompt_kinds)))])]
    record_id, image = f"scenes-count-{i:04d}", scenes.render(scene)
    box, questions = _box(scene.box), count_questions(scene)
    meta = {"record_id": record_id, "count": scene.count, "image_size": tuple(scene.size),
            **scene_meta(scene, f"{i:04d}")}
    return [data.Sample(
        id=f"{record_id}:{q}:{p}", image=image, question=questions[q], answer=str(scene.count),
        prompt=data.pointqa_prompt(questions[q], p, plain_text, data.box_in_words(box, scene.size)),
        benchmark="scenes-count", answer_type="count", boxes=(box,), question_kind=q, prompt_kind=p,
        meta=dict(meta)) for q, p in pairs]


# ------------------------------------------------------------------------------------------- POPE
def pope_question(kind: str, colour: str) -> str:
    """``"Is there a blue circle in the image?"``."""
    return f"Is there a {colour} {kind} in the image?"


def absent_types(scene: Scene) -> list[scenes.Type]:
    """Every ``(kind, colour)`` not in the scene, in :data:`helpers.scenes.TYPES` order."""
    present = scene.group_sizes
    return [t for t in scenes.TYPES if t not in present]


def adversarial_types(scene: Scene) -> list[scenes.Type]:
    """Absent types whose colour one present object has and whose kind another present object has."""
    colours = {o.colour for o in scene.objects}
    kinds = {o.kind for o in scene.objects}
    return [t for t in absent_types(scene) if t[0] in kinds and t[1] in colours]


def popular_type(scene: Scene) -> scenes.Type:
    """The absent type that POPE scenes hold most often: the first absent one in ``scenes.POPULARITY``.

    POPE scenes draw their types with :data:`helpers.scenes.TYPE_PRIOR`, so the ranking by prior is the
    ranking by how many scenes a type is present in (``tests/test_scenes.py`` measures it).
    """
    absent = set(absent_types(scene))
    return next(t for t in scenes.POPULARITY if t in absent)


def pope_samples(seed: int, n: int, *, negatives: str | Sequence[str] = "adversarial",
                 scene_kwargs: Mapping[str, Any] | None = None) -> list[data.Sample]:
    """POPE analogue: ``n`` yes/no existence questions; sample ``i`` is "yes" for even ``i`` (half yes).

    Sample ``i``: a scene (``POPE_SCENE``: free layout, types drawn with the prior; redrawn until an
    adversarial negative exists), then, always in this order, a present type (uniform over the types
    present), a random negative (uniform over absent types) and an adversarial negative (uniform over
    :func:`adversarial_types`); then, when ``negatives`` names several kinds, which one (uniform). So the
    image and the "yes" questions are the same for every negative kind, as in POPE. Negative kinds:

    - ``"random"``: an absent type drawn uniformly;
    - ``"popular"``: :func:`popular_type`, the absent type present in the most scenes;
    - ``"adversarial"``: an absent type that shares its colour with one present object and its kind with
      another (e.g. a green square where green circles and blue squares are).

    Ids ``scenes-pope-{negative}-{i:04d}``; ``meta["category"]`` the negative kind, ``meta["queried"]`` the
    asked type (``"blue circle"``).
    """
    kinds = (negatives,) if isinstance(negatives, str) else tuple(negatives)
    for kind in kinds:
        if kind not in NEGATIVES:
            raise ValueError(f"negative kind {kind!r} is not one of {NEGATIVES}")
    return _many(seed, n, _pope_one, negatives=kinds, scene_kwargs={**POPE_SCENE, **(scene_kwargs or {})})


def _pope_one(rng: np.random.Generator, i: int, *, negatives: tuple[str, ...],
              scene_kwargs: Mapping[str, Any]) -> list[data.Sample]:
    scene = _redraw(rng, scene_kwargs, lambda s: bool(adversarial_types(s)), "an adversarial negative")
    present, absent, adversarial = list(scene.group_sizes), absent_types(scene), adversarial_types(scene)
    picks = {"yes": present[int(rng.integers(len(present)))],
             "random": absent[int(rng.integers(len(absent)))],
             "adversarial": adversarial[int(rng.integers(len(adversarial)))], "popular": popular_type(scene)}
    category = negatives[int(rng.integers(len(negatives)))] if len(negatives) > 1 else negatives[0]
    answer = "yes" if i % 2 == 0 else "no"
    kind, colour = picks["yes" if answer == "yes" else category]
    question, record_id = pope_question(kind, colour), f"scenes-pope-{category}-{i:04d}"
    meta = {"category": category, "record_id": record_id, "queried": scenes.group_key(kind, colour),
            **scene_meta(scene, f"{i:04d}")}
    return [data.Sample(id=record_id, image=scenes.render(scene), question=question, answer=answer,
                        prompt=data.pope_prompt(question), benchmark="scenes-pope", answer_type="yes_no",
                        meta=meta)]


def _redraw(rng: np.random.Generator, scene_kwargs: Mapping[str, Any], ok: Callable[[Scene], Any],
            what: str) -> Scene:
    """The first scene drawn from ``rng`` for which ``ok`` is true (at most :data:`MAX_REDRAWS` draws)."""
    for _ in range(MAX_REDRAWS):
        scene = scenes.make_scene(rng, **scene_kwargs)
        if ok(scene):
            return scene
    raise RuntimeError(f"no scene with {what} in {MAX_REDRAWS} draws with {dict(scene_kwargs)}")


# ------------------------------------------------------------------------------------------- choice
def choice_samples(seed: int, n: int, *, topics: Sequence[str] = TOPICS,
                   scene_kwargs: Mapping[str, Any] | None = None) -> list[data.Sample]:
    """MMBench/SEED analogue: ``n`` four-option questions, gold letter uniform over A-D.

    Sample ``i``: a topic (uniform over ``topics``), a scene (``CHOICE_SCENE``, redrawn until the topic
    can be asked), the question, then the gold letter and the three distractors' order. Topics:

    - ``"colour"``: "What colour is the object in the box?" (box drawn) or, when some kind appears once,
      "What colour is the {kind}?" (half the time); distractors: three of the four other colours.
    - ``"kind"``: "What shape is the object in the box?" or "What shape is the {colour} object?" for a
      colour that appears once; the options are the four kinds.
    - ``"position"``: "Where is the {colour} {kind}?" for a type that appears once, whose centre lies at
      least :data:`POSITION_MARGIN` pixels from the 3x3 lines; distractors: three other position words.
    - ``"count"``: "How many {colour} objects are there?"; first the options, four consecutive numbers
      from ``s`` uniform in 1..3, and the answer uniform among them (1..6), then a scene where some colour
      has exactly that many objects; so the option numbers say nothing about which one is right.

    Box questions are visual prompts (``boxes`` = the target's box, ``prompt_kind="visual"``); the others
    are plain. ``meta``: ``category`` (the topic), ``variant`` ("box" or "named"), ``object_boxes`` (the
    boxes of the objects the question is about). Ids ``scenes-choice-{i:04d}``.
    """
    for topic in topics:
        if topic not in TOPICS:
            raise ValueError(f"topic {topic!r} is not one of {TOPICS}")
    return _many(seed, n, _choice_one, topics=tuple(topics),
                 scene_kwargs={**CHOICE_SCENE, **(scene_kwargs or {})})


def _choice_one(rng: np.random.Generator, i: int, *, topics: tuple[str, ...],
                scene_kwargs: Mapping[str, Any]) -> list[data.Sample]:
    topic = topics[int(rng.integers(len(topics)))]
    plan = _count_plan(rng) if topic == "count" else None
    scene = _redraw(rng, scene_kwargs, lambda s: _ASKABLE[topic](s, plan), f"a {topic} question")
    question, gold, pool, variant, objects = _QUESTIONS[topic](rng, scene, plan)
    options, letter = _lettered(rng, gold, pool)
    boxed = variant == "box"
    record_id = f"scenes-choice-{i:04d}"
    meta = {"category": topic, "record_id": record_id, "variant": variant,
            "object_boxes": [list(scene.objects[j].box) for j in objects], **scene_meta(scene, f"{i:04d}")}
    return [data.Sample(id=record_id, image=scenes.render(scene), question=question,
                        answer=data.LETTERS[letter], prompt=data.multiple_choice_prompt(question, options),
                        benchmark="scenes-choice", answer_type="letter", options=tuple(options),
                        boxes=(_box(scene.box),) if boxed else (), prompt_kind="visual" if boxed else "plain",
                        meta=meta)]


def _lettered(rng: np.random.Generator, gold: str, pool: Sequence[str]) -> tuple[list[str], int]:
    """Four options: the gold at a uniform letter, three distractors drawn from ``pool`` in random order."""
    letter = int(rng.integers(4))
    options = [pool[int(j)] for j in rng.permutation(len(pool))[:3]]
    options.insert(letter, gold)
    return options, letter


def _unique(scene: Scene, attribute: str) -> list[int]:
    """Indices of objects whose ``attribute`` value ("kind", "colour" or "type") no other object has."""
    values = [getattr(o, attribute) for o in scene.objects]
    return [j for j, v in enumerate(values) if values.count(v) == 1]


def _well_placed(scene: Scene) -> list[int]:
    """Objects of a unique type whose centre is :data:`POSITION_MARGIN` pixels or more from the 3x3 lines."""
    W, H = scene.size

    def clear(centre: float, side: int) -> bool:
        return min(abs(centre - side * k / 3) for k in (1, 2)) >= POSITION_MARGIN

    boxes = {j: scene.objects[j].box for j in _unique(scene, "type")}
    return [j for j, b in boxes.items() if clear((b[0] + b[2]) / 2, W) and clear((b[1] + b[3]) / 2, H)]


# question, gold option, distractor pool, variant, indices of the objects asked about
Question = tuple[str, str, list[str], str, list[int]]


def _colour_question(rng: np.random.Generator, scene: Scene, plan: None = None) -> Question:
    named = _unique(scene, "kind")
    pool = lambda c: [x for x in scenes.COLOURS if x != c]  # noqa: E731
    if named and rng.integers(2):
        j = named[int(rng.integers(len(named)))]
        o = scene.objects[j]
        return f"What colour is the {o.kind}?", o.colour, pool(o.colour), "named", [j]
    o = scene.objects[scene.target]
    return "What colour is the object in the box?", o.colour, pool(o.colour), "box", [scene.target]


def _kind_question(rng: np.random.Generator, scene: Scene, plan: None = None) -> Question:
    named = _unique(scene, "colour")
    pool = lambda k: [x for x in scenes.KINDS if x != k]  # noqa: E731
    if named and rng.integers(2):
        j = named[int(rng.integers(len(named)))]
        o = scene.objects[j]
        return f"What shape is the {o.colour} object?", o.kind, pool(o.kind), "named", [j]
    o = scene.objects[scene.target]
    return "What shape is the object in the box?", o.kind, pool(o.kind), "box", [scene.target]


def _position_question(rng: np.random.Generator, scene: Scene, plan: None = None) -> Question:
    candidates = _well_placed(scene)
    j = candidates[int(rng.integers(len(candidates)))]
    o = scene.objects[j]
    gold = scenes.position(o.box, scene.size)
    return f"Where is the {o.name}?", gold, [p for p in scenes.POSITIONS if p != gold], "named", [j]


def _count_plan(rng: np.random.Generator) -> tuple[int, int]:
    """``(start, answer)`` of a count question: options ``start..start+3``, ``start`` uniform in 1..3 and the
    answer uniform among the four, so that the option numbers say nothing about which one is right."""
    start = int(rng.integers(1, 4))
    return start, start + int(rng.integers(4))


def _colours_counted(scene: Scene, n: int) -> list[str]:
    """Colours that exactly ``n`` objects of the scene have, in :data:`helpers.scenes.COLOURS` order."""
    counts = Counter(o.colour for o in scene.objects)
    return [c for c in scenes.COLOURS if counts[c] == n]


def _count_question(rng: np.random.Generator, scene: Scene, plan: tuple[int, int]) -> Question:
    start, gold = plan
    colours = _colours_counted(scene, gold)
    colour = colours[int(rng.integers(len(colours)))]
    objects = [j for j, o in enumerate(scene.objects) if o.colour == colour]
    pool = [str(v) for v in range(start, start + 4) if v != gold]
    return f"How many {colour} objects are there?", str(gold), pool, "named", objects


_QUESTIONS: dict[str, Callable[[np.random.Generator, Scene, Any], Question]] = {
    "colour": _colour_question, "kind": _kind_question, "position": _position_question,
    "count": _count_question}
_ASKABLE: dict[str, Callable[[Scene, Any], bool]] = {
    "colour": lambda s, plan: True, "kind": lambda s, plan: True,
    "position": lambda s, plan: bool(_well_placed(s)),
    "count": lambda s, plan: bool(_colours_counted(s, plan[1]))}


# ------------------------------------------------------------------------------------------- mixtures
def chance(task_set: str, *, max_count: int = 6) -> float:
    """Accuracy of uniform guessing: ``1/max_count`` (counts uniform in 1..6), 0.5 (yes/no), 0.25 (A-D)."""
    levels = {"scenes-count": 1 / max_count, "scenes-pope": 0.5, "scenes-choice": 0.25}
    if task_set not in levels:
        raise KeyError(f"unknown task set {task_set!r}; known: {TASK_SETS}")
    return levels[task_set]


def largest_group_guess(sample: data.Sample) -> str:
    """The answer of a reader who counts the whole image but cannot find the box: the size of the largest group
    of one kind and colour in the sample's scene (``meta["group_sizes"]``), as a string. On the counting set it
    is the best single whole-image guess (``data/scenes-count/README.md``, "Routes around the box")."""
    sizes = sample.meta.get("group_sizes")
    if not sizes:
        raise KeyError(f"sample {sample.id}: no meta['group_sizes']; load it with helpers.data.load_scenes_count")
    return str(max(int(v) for v in sizes.values()))


def summary(task_sets: Mapping[str, Sequence[data.Sample]]) -> pd.DataFrame:
    """One row per task set (name -> its samples, e.g. ``data.load_scenes_pope(category=None)``): ``samples``,
    ``images`` (distinct ``meta["image_id"]``), ``records`` (distinct ``meta["record_id"]``), ``kinds`` (samples
    per question kind x prompt kind for counting, per ``meta["category"]`` and prompt kind otherwise),
    ``answers`` (samples per gold answer, one per record: a counting record asks its count six ways) and
    ``chance`` (:func:`chance`, NaN for a set it does not know)."""
    rows = []
    for name, samples in task_sets.items():
        first = {}
        for s in samples:
            first.setdefault(s.meta.get("record_id", s.id), s)
        kinds = Counter(f"{s.question_kind or s.meta.get('category', '')}/{s.prompt_kind}" for s in samples)
        answers = Counter(s.answer for s in first.values())
        rows.append({"task_set": name, "samples": len(samples),
                     "images": len({s.meta.get("image_id", s.id) for s in samples}), "records": len(first),
                     "kinds": dict(sorted(kinds.items())), "answers": dict(sorted(answers.items())),
                     "chance": chance(name) if name in TASK_SETS else float("nan")})
    return pd.DataFrame(rows)


_ONE: dict[str, tuple[Callable[..., list[data.Sample]], Callable[[], dict[str, Any]]]] = {
    "scenes-count": (_count_one, lambda: {"question_kinds": data.QUESTION_KINDS,
                                          "prompt_kinds": data.PROMPT_KINDS, "expand": False,
                                          "plain_text": PLAIN_TEXT, "scene_kwargs": COUNT_SCENE}),
    "scenes-pope": (_pope_one, lambda: {"negatives": NEGATIVES, "scene_kwargs": POPE_SCENE}),
    "scenes-choice": (_choice_one, lambda: {"topics": TOPICS, "scene_kwargs": CHOICE_SCENE}),
}


def _checked_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """``weights`` per task set (default equal), refused unless non-negative, not all 0, with known keys."""
    weights = dict(weights or {t: 1.0 for t in TASK_SETS})
    unknown = set(weights) - set(TASK_SETS)
    if unknown or not weights or min(weights.values()) < 0 or sum(weights.values()) <= 0:
        raise ValueError(f"weights {weights} must be non-negative, not all 0, with keys from {TASK_SETS}")
    return weights


def _draw_task_set(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    """One task set drawn with probabilities proportional to ``weights``."""
    names = list(weights)
    p = np.array([weights[t] for t in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def mixed_samples(seed: int, n: int, *, weights: Mapping[str, float] | None = None) -> list[data.Sample]:
    """Instruction-tuning mixture: sample ``i`` draws its task set with ``weights`` (default equal) from
    ``default_rng([seed, i])``, then one sample of it from the same generator, with every question kind,
    prompt kind, negative kind and topic drawn uniformly. ``meta["task_set"]`` names the set.
    """
    weights = _checked_weights(weights)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        name = _draw_task_set(rng, weights)
        one, kwargs = _ONE[name]
        for sample in one(rng, i, **kwargs()):
            sample.meta["task_set"] = name
            out.append(sample)
    return out


# ------------------------------------------------------------------------------------------- conversations
SCENE_SETTINGS: dict[str, dict[str, Any]] = {"scenes-count": COUNT_SCENE, "scenes-pope": POPE_SCENE,
                                             "scenes-choice": CHOICE_SCENE}


@dataclass(frozen=True)
class Turn:
    """One question of a conversation: the prompt as the task sets write it (starting with ``<image>\\n``;
    :func:`helpers.organisms.conversation_examples` drops that prefix from later turns), the gold answer as a
    sample states it, and the task set and answer type it stands for."""

    prompt: str
    answer: str
    task_set: str
    answer_type: str


@dataclass(frozen=True)
class Conversation:
    """Several questions about one image (LLaVA-665K's multi-turn format): ``image`` is what the model sees
    (the box drawn when ``boxed``), ``turns`` in the order asked, every prompt starting with ``<image>\\n``."""

    image: Image.Image
    turns: tuple[Turn, ...]
    boxed: bool
    scene: Scene


def conversation(rng: np.random.Generator, *, weights: Mapping[str, float] | None = None) -> Conversation:
    """Every kind of question the task sets ask, about one scene (instruction-tuning data, never evaluation).

    The scene's settings come from one task set drawn with ``weights`` (default equal); the box is drawn
    with probability 1/2. Then, in a random order: one counting question (a random question kind; visual
    prompt when the box is drawn, else the box in words), a POPE "yes" and a POPE "no" (negative kind
    uniform over those the scene allows), and one multiple-choice question per topic the scene allows
    (box variants only when the box is drawn; a count question's options hold its answer at a uniform
    place). Prompts are built by the same functions as the task sets' (:func:`helpers.data.pointqa_prompt`,
    :func:`helpers.data.pope_prompt`, :func:`helpers.data.multiple_choice_prompt`).
    """
    scene = scenes.make_scene(rng, **SCENE_SETTINGS[_draw_task_set(rng, _checked_weights(weights))])
    boxed = bool(rng.integers(2))
    turns = [_count_turn(rng, scene, boxed), *_pope_turns(rng, scene), *_choice_turns(rng, scene, boxed)]
    order = rng.permutation(len(turns))
    image = scenes.render(scene)
    if boxed:
        image = data.draw_boxes(image, (_box(scene.box),))
    return Conversation(image=image, turns=tuple(turns[int(j)] for j in order), boxed=boxed, scene=scene)


def _count_turn(rng: np.random.Generator, scene: Scene, boxed: bool) -> Turn:
    kind = data.QUESTION_KINDS[int(rng.integers(len(data.QUESTION_KINDS)))]
    question = count_questions(scene)[kind]
    prompt = data.pointqa_prompt(question, "visual" if boxed else "plain", PLAIN_TEXT,
                                 data.box_in_words(_box(scene.box), scene.size))
    return Turn(prompt, str(scene.count), "scenes-count", "count")


def _pope_turns(rng: np.random.Generator, scene: Scene) -> list[Turn]:
    present, absent = list(scene.group_sizes), absent_types(scene)
    negatives = {"random": absent, "adversarial": adversarial_types(scene), "popular": [popular_type(scene)]}
    usable = [k for k in NEGATIVES if negatives[k]]
    pool = negatives[usable[int(rng.integers(len(usable)))]]
    yes, no = present[int(rng.integers(len(present)))], pool[int(rng.integers(len(pool)))]
    return [Turn(data.pope_prompt(pope_question(*t)), answer, "scenes-pope", "yes_no")
            for t, answer in ((yes, "yes"), (no, "no"))]


def _choice_turns(rng: np.random.Generator, scene: Scene, boxed: bool) -> list[Turn]:
    turns = []
    for topic in TOPICS:
        plan = _scene_count_plan(rng, scene) if topic == "count" else None
        if (topic == "count" and plan is None) or not _ASKABLE[topic](scene, plan):
            continue
        question, gold, pool, variant, _ = _QUESTIONS[topic](rng, scene, plan)
        if variant == "box" and not boxed:
            continue
        options, letter = _lettered(rng, gold, pool)
        turns.append(Turn(data.multiple_choice_prompt(question, options), data.LETTERS[letter], "scenes-choice",
                          "letter"))
    return turns


def _scene_count_plan(rng: np.random.Generator, scene: Scene) -> tuple[int, int] | None:
    """A count question's ``(start, answer)`` for a colour the scene holds 1..6 times (None when none)."""
    counts = sorted(set(Counter(o.colour for o in scene.objects).values()) & set(range(1, 7)))
    if not counts:
        return None
    gold = counts[int(rng.integers(len(counts)))]
    starts = [s for s in range(1, 4) if s <= gold <= s + 3]
    return starts[int(rng.integers(len(starts)))], gold


# ------------------------------------------------------------------------------------------- committed sets
def sidecar(samples: Sequence[data.Sample], *, row_id: Callable[[data.Sample], str],
            loader_keys: Sequence[str], rename: bool = False) -> dict[str, Any]:
    """The ``scenes`` and ``records`` of a committed set's ``meta.json`` (read by ``data._scenes_meta``).

    ``scenes[image_id]``: ``{"scene", "group_sizes"}``. ``records[row_id(sample)]``: ``{"meta": the sample's
    meta without the scene and without ``loader_keys`` (what the benchmark's loader already sets)}``, plus
    ``"id"`` (the sample id) with ``rename=True`` (the loader's id is another), and ``"boxes"`` for visual
    prompts that the
    benchmark's schema cannot hold (multiple choice).
    """
    scene_entries: dict[str, Any] = {}
    records: dict[str, Any] = {}
    for s in samples:
        scene_entries[s.meta["image_id"]] = {"scene": s.meta["scene"], "group_sizes": s.meta["group_sizes"]}
        skip = {"scene", "group_sizes", *loader_keys}
        row: dict[str, Any] = {"meta": {k: v for k, v in s.meta.items() if k not in skip}}
        if rename:
            row["id"] = s.id
        if s.answer_type == "letter" and s.boxes:
            row["boxes"] = [list(b) for b in s.boxes]
        records[row_id(s)] = row
    return {"scenes": scene_entries, "records": records}


def write_images(samples: Sequence[data.Sample], folder: str | Path, *, model_image: bool = False) -> None:
    """Save each sample's image once as ``folder/images/{image_id}.png`` (``model_image``: as the model sees
    it, box drawn for visual prompts; else the plain image)."""
    images = Path(folder) / "images"
    images.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    for s in samples:
        image_id = s.meta["image_id"]
        if image_id not in done:
            image = s.model_image() if model_image else s.load_image()
            image.save(images / f"{image_id}.png", optimize=True)
            done.add(image_id)
