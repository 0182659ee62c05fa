"""Task sets on scenes v2: generators, the committed sets (regenerable, read by the real loaders), POPE
negatives, balanced letters, answers that match the scenes, chance levels, the training mixture."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import data, scenes, tasks

ROOT = Path(__file__).resolve().parents[1]
SETS = {name: ROOT / "data" / name for name in tasks.TASK_SETS}


def _generator(name: str):
    module_name = name.replace("-", "_") + "_generate"
    spec = importlib.util.spec_from_file_location(module_name, SETS[name] / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _without_image(sample: data.Sample) -> data.Sample:
    return dataclasses.replace(sample, image=None)


def _scene(sample: data.Sample) -> scenes.Scene:
    return scenes.Scene.from_dict(sample.meta["scene"])


# ------------------------------------------------------------------------------------------- committed sets
@pytest.mark.parametrize("name", tasks.TASK_SETS)
def test_committed_prefix_regenerates_exactly(name, tmp_path):
    gen = _generator(name)
    meta = json.loads((SETS[name] / "meta.json").read_text())
    committed = json.loads((SETS[name] / "test.json").read_text())
    assert meta["n"] == gen.N and meta["seed"] == gen.SEED
    rebuilt = gen.build(tmp_path, n=4, seed=gen.SEED)
    expected = [r for r in committed if r in rebuilt]
    assert len(expected) == len(rebuilt) == (12 if name == "scenes-pope" else 4)
    small = json.loads((tmp_path / "meta.json").read_text())
    assert all(meta["scenes"][k] == v for k, v in small["scenes"].items())
    assert all(meta["records"][k] == v for k, v in small["records"].items())
    for png in (tmp_path / "images").iterdir():
        assert png.read_bytes() == (SETS[name] / "images" / png.name).read_bytes()


def test_generator_is_deterministic_for_a_seed(tmp_path):
    gen = _generator("scenes-count")
    assert gen.build(tmp_path / "a", n=3, seed=5) == gen.build(tmp_path / "b", n=3, seed=5)
    assert gen.build(tmp_path / "c", n=3, seed=6) != gen.build(tmp_path / "a", n=3, seed=5)
    for png in (tmp_path / "a" / "images").iterdir():
        assert png.read_bytes() == (tmp_path / "b" / "images" / png.name).read_bytes()


@pytest.mark.parametrize("name", tasks.TASK_SETS)
def test_committed_set_is_small(name):
    assert sum(f.stat().st_size for f in SETS[name].rglob("*") if f.is_file()) < 3e6


def test_count_loader_matches_the_generator():
    gen = _generator("scenes-count")
    loaded = data.load("scenes-count")
    assert len(loaded) == 6 * gen.N and {s.benchmark for s in loaded} == {"scenes-count"}
    assert Counter(s.question_kind for s in loaded) == {k: 2 * gen.N for k in data.QUESTION_KINDS}
    assert Counter(s.prompt_kind for s in loaded) == {"visual": 3 * gen.N, "plain": 3 * gen.N}
    made = tasks.count_samples(gen.SEED, 5, expand=True)
    assert [_without_image(s) for s in loaded[:30]] == [_without_image(s) for s in made]
    for a, b in zip(loaded[:6], made[:6], strict=True):
        assert np.array_equal(np.asarray(a.model_image()), np.asarray(b.model_image()))
    plain = next(s for s in loaded if s.prompt_kind == "plain")
    assert data.box_in_words(plain.boxes[0], (160, 160)) in plain.prompt
    assert set(loaded[0].meta) >= {"record_id", "image_id", "scene", "group_sizes", "count", "image_size"}


def test_pope_loader_matches_the_generator():
    gen = _generator("scenes-pope")
    everything = data.load_scenes_pope(category=None)
    assert len(everything) == 3 * gen.N and {s.benchmark for s in everything} == {"scenes-pope"}
    assert Counter(s.meta["category"] for s in everything) == {k: gen.N for k in tasks.NEGATIVES}
    assert Counter(s.answer for s in everything) == {"yes": 3 * gen.N // 2, "no": 3 * gen.N // 2}
    adversarial = data.load("scenes-pope", limit=6)
    assert [_without_image(s) for s in adversarial] == \
        [_without_image(s) for s in tasks.pope_samples(gen.SEED, 6, negatives="adversarial")]
    assert len(data.load_scenes_pope(category="popular")) == gen.N
    images = {s.meta["image_id"]: s.image for s in everything}
    assert len(images) == gen.N, "the three negative kinds share their images"


def test_choice_loader_matches_the_generator():
    gen = _generator("scenes-choice")
    loaded = data.load("scenes-choice")
    assert len(loaded) == gen.N and {s.benchmark for s in loaded} == {"scenes-choice"}
    made = tasks.choice_samples(gen.SEED, 12)
    assert [_without_image(s) for s in loaded[:12]] == [_without_image(s) for s in made]
    for a, b in zip(loaded[:12], made, strict=True):
        assert np.array_equal(np.asarray(a.model_image()), np.asarray(b.model_image()))
    raw = data.load_mmbench(SETS["scenes-choice"] / "test.json", image_folder=SETS["scenes-choice"], limit=12)
    for a, b in zip(raw, made, strict=True):  # the real loader alone sees the box drawn in the stored image
        assert a.prompt == b.prompt and a.answer == b.answer
        assert np.array_equal(np.asarray(a.model_image()), np.asarray(b.model_image()))


# ------------------------------------------------------------------------------------------- counting
def test_count_answers_questions_and_prompts_match_the_scene():
    samples = tasks.count_samples(3, 60)
    assert Counter(s.prompt_kind for s in samples).keys() == {"visual", "plain"}
    for s in samples:
        scene = _scene(s)
        kind, colour = scene.target_type
        assert s.answer == str(scene.count) == str(s.meta["count"])
        assert s.meta["group_sizes"][scenes.group_key(kind, colour)] == scene.count
        assert s.boxes == (tuple(float(v) for v in scene.box),)
        assert s.question == tasks.count_questions(scene)[s.question_kind]
        box_text = data.box_in_words(s.boxes[0], scene.size)
        assert s.prompt == data.pointqa_prompt(s.question, s.prompt_kind, "coordinates", box_text)
        assert np.array_equal(np.asarray(s.load_image()), np.asarray(scenes.render(scene)))
    assert Counter(s.answer for s in tasks.count_samples(4, 300)).keys() == {str(i) for i in range(1, 7)}
    assert tasks.count_questions(_scene(samples[0]))["object"].endswith("s are there?")


def test_generators_rebuild_any_prefix():
    for make in (tasks.count_samples, tasks.pope_samples, tasks.choice_samples, tasks.mixed_samples):
        long, short = make(11, 8), make(11, 3)
        assert short == long[:3] and make(12, 3) != short


# ------------------------------------------------------------------------------------------- POPE
def test_pope_negatives_are_absent_and_defined_as_documented():
    for kind in tasks.NEGATIVES:
        samples = tasks.pope_samples(5, 80, negatives=kind)
        assert Counter(s.answer for s in samples) == {"yes": 40, "no": 40}
        for s in samples:
            scene, queried = _scene(s), s.meta["queried"]
            present = {scenes.group_key(*t) for t in scene.group_sizes}
            assert (queried in present) == (s.answer == "yes")
            assert s.question == f"Is there a {queried} in the image?"
            assert s.prompt == data.pope_prompt(s.question)
            if s.answer == "no":
                colour, kind_ = queried.split()
                if kind == "adversarial":
                    assert any(o.colour == colour for o in scene.objects)
                    assert any(o.kind == kind_ for o in scene.objects)
                if kind == "popular":
                    first_absent = next(t for t in scenes.POPULARITY if scenes.group_key(*t) not in present)
                    assert queried == scenes.group_key(*first_absent)


def test_pope_shares_images_and_yes_questions_across_negative_kinds():
    by_kind = {kind: tasks.pope_samples(6, 10, negatives=kind) for kind in tasks.NEGATIVES}
    for i in range(10):
        row = [by_kind[kind][i] for kind in tasks.NEGATIVES]
        assert len({json.dumps(s.meta["scene"]) for s in row}) == 1
        if i % 2 == 0:
            assert len({s.question for s in row}) == 1


def test_popular_negatives_are_present_more_often_than_random_ones():
    presence = Counter(t for s in tasks.pope_samples(7, 300, negatives="random")
                       for t in s.meta["group_sizes"])
    rate = {k: v / 300 for k, v in presence.items()}
    negatives = {kind: [rate.get(s.meta["queried"], 0) for s in tasks.pope_samples(8, 200, negatives=kind)
                        if s.answer == "no"] for kind in ("random", "popular")}
    assert np.mean(negatives["popular"]) > np.mean(negatives["random"]) + 0.1


# ------------------------------------------------------------------------------------------- choice
def test_choice_gold_letters_balanced_and_answers_match_the_scene():
    samples = tasks.choice_samples(9, 800)
    letters = Counter(s.answer for s in samples)
    assert set(letters) == set("ABCD") and min(letters.values()) > 800 / 4 * 0.8
    assert set(Counter(s.meta["category"] for s in samples)) == set(tasks.TOPICS)
    for s in samples:
        scene, gold = _scene(s), s.options[data.LETTERS.index(s.answer)]
        asked = [o for o in scene.objects if list(o.box) in s.meta["object_boxes"]]
        assert len(s.options) == len(set(s.options)) == 4
        assert s.prompt == data.multiple_choice_prompt(s.question, s.options)
        assert data.LETTER_INSTRUCTION in s.prompt
        assert (s.meta["variant"] == "box") == bool(s.boxes) == (s.prompt_kind == "visual")
        if s.meta["category"] == "colour":
            assert gold == asked[0].colour and set(s.options) <= set(scenes.COLOURS)
        elif s.meta["category"] == "kind":
            assert gold == asked[0].kind and set(s.options) == set(scenes.KINDS)
        elif s.meta["category"] == "position":
            assert gold == scenes.position(asked[0].box, scene.size) and scene.group_sizes[asked[0].type] == 1
        else:
            colour = s.question.split()[2]
            assert gold == str(sum(o.colour == colour for o in scene.objects)) == str(len(asked))
            low = min(int(o) for o in s.options)
            assert sorted(int(o) for o in s.options) == list(range(low, low + 4)) and 1 <= low <= 3
        if s.boxes:
            assert s.boxes == (tuple(float(v) for v in scene.box),) and asked == [scene.objects[scene.target]]


# ------------------------------------------------------------------------------------------- chance, mixture
def test_chance_levels():
    assert tasks.chance("scenes-count") == pytest.approx(1 / 6)
    assert tasks.chance("scenes-pope") == 0.5 and tasks.chance("scenes-choice") == 0.25
    with pytest.raises(KeyError):
        tasks.chance("pope")


def test_mixed_samples_follow_the_weights():
    mixed = tasks.mixed_samples(13, 90)
    assert Counter(s.meta["task_set"] for s in mixed).keys() == set(tasks.TASK_SETS)
    assert {s.benchmark for s in tasks.mixed_samples(13, 10, weights={"scenes-pope": 1})} == {"scenes-pope"}
    with pytest.raises(ValueError, match="weights"):
        tasks.mixed_samples(1, 2, weights={"pope": 1})


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="negative kind"):
        tasks.pope_samples(0, 1, negatives="frequent")
    with pytest.raises(ValueError, match="topic"):
        tasks.choice_samples(0, 1, topics=("size",))


def test_stored_images_are_160_px_rgb():
    for name in tasks.TASK_SETS:
        first = sorted((SETS[name] / "images").iterdir())[0]
        with Image.open(first) as image:
            assert image.size == (160, 160) and image.mode == "RGB"


# ------------------------------------------------------------------------------------------- conversations
def _answer_of(turn: tasks.Turn, scene: scenes.Scene) -> str:
    """The gold answer recomputed from the scene and the prompt's words (independently of the generator)."""
    lines = turn.prompt.split("\n")
    question = lines[1]
    if turn.task_set == "scenes-count":
        return str(scene.count)
    if turn.task_set == "scenes-pope":
        colour, kind = question.removeprefix("Is there a ").removesuffix(" in the image?").split()
        return "yes" if (kind, colour) in scene.group_sizes else "no"
    options = [line[3:] for line in lines[2:6]]
    if question.startswith("How many"):
        colour = question.split()[2]
        gold = str(sum(o.colour == colour for o in scene.objects))
    elif question.startswith("Where is the"):
        colour, kind = question.removeprefix("Where is the ").removesuffix("?").split()
        o = next(o for o in scene.objects if (o.kind, o.colour) == (kind, colour))
        gold = scenes.position(o.box, scene.size)
    elif question.startswith("What colour"):
        kind = question.removeprefix("What colour is the ").removesuffix("?")
        o = scene.objects[scene.target] if kind == "object in the box" else next(o for o in scene.objects if o.kind == kind)
        gold = o.colour
    else:
        colour = question.removeprefix("What shape is the ").removesuffix("?").removesuffix(" object")
        o = scene.objects[scene.target] if colour == "object in the box" else next(
            o for o in scene.objects if o.colour == colour)
        gold = o.kind
    return data.LETTERS[options.index(gold)]


def test_conversation_answers_follow_from_the_scene():
    for i in range(120):
        conv = tasks.conversation(np.random.default_rng([9, i]))
        by_set = Counter(t.task_set for t in conv.turns)
        assert by_set["scenes-count"] == 1 and by_set["scenes-pope"] == 2 and 1 <= by_set["scenes-choice"] <= 4
        assert sorted(t.answer for t in conv.turns if t.task_set == "scenes-pope") == ["no", "yes"]
        for turn in conv.turns:
            assert turn.prompt.startswith(data.IMAGE_PREFIX)
            assert turn.answer == _answer_of(turn, conv.scene), turn.prompt
            mentions_box = "in the box" in turn.prompt or "within the rectangle." in turn.prompt
            assert not mentions_box or conv.boxed, "a box question on an image without the box"
        plain = np.asarray(scenes.render(conv.scene))
        assert np.array_equal(np.asarray(conv.image), plain) != conv.boxed
    assert Counter(tasks.conversation(np.random.default_rng([9, i])).boxed for i in range(120)).keys() == {True, False}
    assert tasks.conversation(np.random.default_rng([9, 3])) == tasks.conversation(np.random.default_rng([9, 3]))


def test_conversation_scene_settings_follow_the_weights():
    counted = [tasks.conversation(np.random.default_rng([2, i]), weights={"scenes-count": 1.0}) for i in range(20)]
    assert all(len(c.scene.objects) == 12 for c in counted)  # the balanced layout: always 12 objects
    free = [tasks.conversation(np.random.default_rng([2, i]), weights={"scenes-pope": 1.0}) for i in range(40)]
    assert any(len(c.scene.objects) != 12 for c in free)
