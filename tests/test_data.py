"""helpers.data: loaders on small local files of each benchmark's schema (through `datasets`), the paper's
prompts byte for byte, answer scoring on messy outputs, the synthetic set's generator, and bad input."""

from __future__ import annotations

import importlib.util
import io
import json
import random
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from helpers import data, shapes

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "data" / "shapes-pointqa"


# ----------------------------------------------------------------------------------------- fixtures
def _png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _image_column(colours):
    return [{"bytes": _png(c), "path": None} for c in colours]


def _to_parquet(rows: dict, features: datasets.Features, path: Path) -> Path:
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path


def _pointqa_record(i: int, image: str, box=(5, 5, 20, 15), answer="3") -> dict:
    return {"id": f"pointQA_twice-test-{i}", "image": image, "general_question": "How many of these are there?",
            "obj_question": "How many clocks are there?", "super_question": "How many of these devices are there?",
            "answer": answer, "bboxes": [list(box)]}


@pytest.fixture()
def vg(tmp_path):
    """A LookTwice json with two records and a Visual-Genome-like folder (one image under VG_100K/)."""
    folder = tmp_path / "vg"
    (folder / "VG_100K").mkdir(parents=True)
    Image.new("RGB", (40, 30), (0, 0, 255)).save(folder / "1.jpg", format="PNG")  # lossless
    Image.new("RGB", (40, 30), (0, 255, 0)).save(folder / "VG_100K" / "2.jpg", format="PNG")
    records = [_pointqa_record(1, "1.jpg"), _pointqa_record(2, "VG_100K/2.jpg", box=(0, 0, 40, 30), answer="2")]
    path = tmp_path / "pointQA_twice_test.json"
    path.write_text(json.dumps(records))
    return path, folder, records


# ----------------------------------------------------------------------------------------- PointQA
def test_pointqa_loader_expands_question_and_prompt_kinds(vg):
    path, folder, _ = vg
    samples = data.load_pointqa(path, folder)
    assert len(samples) == 2 * 3 * 2 and samples.skipped == []
    first = samples[0]
    assert first.id == "pointQA_twice-test-1:general:visual"
    assert (first.question_kind, first.prompt_kind, first.answer, first.answer_type) == ("general", "visual", "3",
                                                                                         "count")
    assert first.boxes == ((5.0, 5.0, 20.0, 15.0),) and first.meta["image_size"] == (40, 30)
    kinds = {(s.question_kind, s.prompt_kind) for s in samples if s.meta["record_id"].endswith("-2")}
    assert kinds == {(q, p) for q in data.QUESTION_KINDS for p in data.PROMPT_KINDS}
    obj = next(s for s in samples if s.question_kind == "object")
    assert obj.question == "How many clocks are there?"
    # visual: red box drawn just outside the box; plain: the stored image unchanged
    visual = np.asarray(first.model_image())
    plain_sample = next(s for s in samples if s.meta["record_id"] == first.meta["record_id"]
                        and s.prompt_kind == "plain")
    plain = np.asarray(plain_sample.model_image())
    assert (plain == (0, 0, 255)).all()
    assert (visual[4, 4:21] == data.BOX_COLOR).all() and (visual[10, 10] == (0, 0, 255)).all()


def test_pointqa_filters_kinds_and_limits_records(vg):
    path, folder, _ = vg
    samples = data.load_pointqa(path, folder, question_kinds=["super"], prompt_kinds=["plain"], limit=1)
    assert [s.id for s in samples] == ["pointQA_twice-test-1:super:plain"]
    with pytest.raises(ValueError, match="question kind"):
        data.load_pointqa(path, folder, question_kinds=["obj"])


def test_pointqa_images_fetched_one_by_one_into_a_cache(vg, tmp_path):
    path, folder, _ = vg
    samples = data.load_pointqa(path, image_url=folder.as_uri(), cache_dir=tmp_path / "cache", limit=2)
    assert (tmp_path / "cache" / "1.jpg").is_file() and (tmp_path / "cache" / "VG_100K" / "2.jpg").is_file()
    assert samples[0].load_image().size == (40, 30)
    with pytest.raises(data.MissingImageError, match="could not fetch"):
        data.load_pointqa(path, image_url=(tmp_path / "nowhere").as_uri(), cache_dir=tmp_path / "c2")


def test_pointqa_multiple_choice_is_seeded_per_record(vg):
    path, folder, _ = vg
    opts = data.PointQAOptions(answer_format="choice", seed=3)
    a = data.load_pointqa(path, folder, options=opts)
    b = data.load_pointqa(path, folder, options=opts)
    assert [s.options for s in a] == [s.options for s in b]
    first = [s for s in a if s.meta["record_id"].endswith("-1")]
    assert len({s.options for s in first}) == 1, "all kinds of one record share the options"
    s = first[0]
    assert s.answer_type == "letter" and len(s.options) == 4 and s.options["ABCD".index(s.answer)] == "3"
    assert s.prompt == data.multiple_choice_prompt(s.question, s.options)


def test_count_options_modes():
    for answer in range(0, 8):
        options, right = data.count_options(answer, random.Random(answer))
        assert options[right] == str(answer) and len(set(options)) == 4
        assert all(abs(int(o) - answer) <= 3 and int(o) >= 0 for o in options)
    options, right = data.count_options(2, random.Random(0), mode="range", spread=7)
    assert options[right] == "2" and all(1 <= int(o) <= 7 for o in options)
    with pytest.raises(ValueError, match="raise spread"):
        data.count_options(0, random.Random(0), spread=2)


# ----------------------------------------------------------------------------------------- other benchmarks
def test_pope_parquet_hub_schema_filters_adversarial(tmp_path):
    features = datasets.Features({"id": datasets.Value("string"), "question_id": datasets.Value("string"),
                                  "question": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "image_source": datasets.Value("string"), "image": datasets.Image(),
                                  "category": datasets.Value("string")})
    rows = {"id": ["0", "1", "2"], "question_id": ["q0", "q1", "q2"],
            "question": ["Is there a dog in the image?", "Is there a cat in the image?", "Is there a car?"],
            "answer": ["yes", "no", "yes"], "image_source": ["a", "b", "c"],
            "image": _image_column([(1, 1, 1), (2, 2, 2), (3, 3, 3)]),
            "category": ["adversarial", "random", "adversarial"]}
    path = _to_parquet(rows, features, tmp_path / "pope.parquet")
    samples = data.load_pope(path)
    assert [s.id for s in samples] == ["0", "2"]
    assert samples[0].prompt == "<image>\nIs there a dog in the image?"
    assert samples[0].answer == "yes" and samples[0].answer_type == "yes_no"
    assert isinstance(samples[1].image, bytes), "embedded images stay encoded until used"
    assert samples[1].load_image().getpixel((0, 0)) == (3, 3, 3)
    assert len(data.load_pope(path, category=None)) == 3
    with pytest.raises(data.EmptySplitError, match="popular"):
        data.load_pope(path, category="popular")


def test_pope_original_jsonl_schema(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "COCO_val2014_1.jpg")
    path = tmp_path / "coco_pope_adversarial.json"
    path.write_text(json.dumps({"question_id": 1, "image": "COCO_val2014_1.jpg",
                                "text": "Is there a bird in the image?", "label": "no"}) + "\n")
    (s,) = data.load_pope(path, image_folder=tmp_path)
    assert (s.id, s.answer, s.prompt) == ("1", "no", "<image>\nIs there a bird in the image?")


def test_mmbench_parquet_dev_en(tmp_path):
    str_ = datasets.Value("string")
    features = datasets.Features({"index": datasets.Value("int64"), "question": str_, "hint": str_, "A": str_,
                                  "B": str_, "C": str_, "D": str_, "answer": str_, "category": str_,
                                  "image": datasets.Image(), "source": str_, "L2-category": str_,
                                  "comment": str_, "split": str_})
    rows = {"index": [10, 11], "question": ["Which colour is the sky?", "What is shown?"],
            "hint": ["Look up.", None], "A": ["red", "a cat"], "B": ["blue", "a dog"], "C": ["green", "a cow"],
            "D": ["black", None], "answer": ["B", "C"], "category": ["c", "c"],
            "image": _image_column([(0, 0, 9), (0, 9, 0)]), "source": ["s", "s"], "L2-category": ["l", "l"],
            "comment": [None, None], "split": ["dev", "dev"]}
    samples = data.load_mmbench(_to_parquet(rows, features, tmp_path / "mmbench.parquet"))
    assert [s.id for s in samples] == ["10", "11"]
    assert samples[0].options == ("red", "blue", "green", "black") and samples[0].answer == "B"
    assert samples[1].options == ("a cat", "a dog", "a cow"), "missing option D is left out"
    assert "Look up" not in samples[0].prompt, "no hint, as in the paper"


def test_seed_parquet_keeps_image_questions(tmp_path):
    str_ = datasets.Value("string")
    features = datasets.Features({"answer": str_, "choice_a": str_, "choice_b": str_, "choice_c": str_,
                                  "choice_d": str_, "data_id": str_, "data_type": str_, "question": str_,
                                  "question_id": str_, "question_type_id": datasets.Value("int16"),
                                  "image": datasets.Sequence(datasets.Image()), "segment": str_})
    rows = {"answer": ["A", "D"], "choice_a": ["one", "x"], "choice_b": ["two", "y"], "choice_c": ["three", "z"],
            "choice_d": ["four", "w"], "data_id": ["1.jpg", "v.mp4"], "data_type": ["image", "video"],
            "question": ["How many?", "What happens?"], "question_id": ["101", "102"], "question_type_id": [5, 10],
            "image": [_image_column([(4, 4, 4)]), _image_column([(5, 5, 5), (6, 6, 6)])], "segment": [None, None]}
    (s,) = data.load_seed(_to_parquet(rows, features, tmp_path / "seed.parquet"))
    assert (s.id, s.answer, s.options) == ("101", "A", ("one", "two", "three", "four"))
    assert s.load_image().getpixel((0, 0)) == (4, 4, 4)


def test_qbench_hub_parquet_and_original_json(tmp_path):
    str_ = datasets.Value("string")
    features = datasets.Features({"id": datasets.Value("int64"), "image": datasets.Image(), "question": str_,
                                  "option0": str_, "option1": str_, "option2": str_, "option3": str_,
                                  "question_type": datasets.Value("int64"),
                                  "question_concern": datasets.Value("int64"), "correct_choice": str_})
    rows = {"id": [0, 1], "image": _image_column([(1, 2, 3), (3, 2, 1)]),
            "question": ["Is the image blurry?", "How is the lighting?"], "option0": ["Yes", "Dark"],
            "option1": ["No", "Bright"], "option2": [None, "Normal"], "option3": [None, None],
            "question_type": [0, 1], "question_concern": [0, 2], "correct_choice": ["B", "2"]}
    hub = data.load_qbench(_to_parquet(rows, features, tmp_path / "qbench.parquet"))
    assert [(s.answer, s.options) for s in hub] == [("B", ("Yes", "No")), ("C", ("Dark", "Bright", "Normal"))]
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    path = tmp_path / "llvisionqa_dev.json"
    path.write_text(json.dumps([{"img_path": "a.jpg", "question": "Is the image blurry?",
                                 "candidates": ["Yes", "No"], "correct_ans": "No", "type": 0, "concern": 0}]))
    (s,) = data.load_qbench(path, image_folder=tmp_path)
    assert s.answer == "B" and s.prompt == hub[0].prompt


def test_dispatch_and_hub_table_cover_every_benchmark():
    assert set(data.HUB) <= set(data.LOADERS)
    for hub in data.HUB.values():
        assert hub.repo.count("/") == 1 and hub.revision and not hub.verified
    with pytest.raises(KeyError, match="known"):
        data.load("vqav2")


# ----------------------------------------------------------------------------------------- prompts
# Literal copies of the templates in docs/paper-notes.md ("Benchmarks and prompts").
def test_pointqa_prompts_byte_identical():
    q = "How many of these vehicles are there?"
    visual = ("<image>\nHow many of these vehicles are there? The exemplary object is within the rectangle.\n"
              "Answer the question using a single word or phrase.")
    assert data.pointqa_prompt(q, "visual") == visual
    assert data.pointqa_prompt(q, "plain") == visual, "authors' code: same text, nothing drawn"
    assert data.pointqa_prompt(q, "plain", "none") == (
        "<image>\nHow many of these vehicles are there?\nAnswer the question using a single word or phrase.")
    assert data.pointqa_prompt(q, "plain", "coordinates", "[1, 2, 30, 40]") == (
        "<image>\nHow many of these vehicles are there? The exemplary object is within the rectangle "
        "[1, 2, 30, 40].\nAnswer the question using a single word or phrase.")
    assert data.pointqa_prompt(q, "visual", "coordinates", "[1, 2, 30, 40]") == visual
    assert data.box_in_words((10, 20, 30.4, 40), (100, 50)) == "[10, 20, 30, 40]"
    assert data.box_in_words((10, 20, 30, 40), (100, 50), "normalised") == "[0.10, 0.40, 0.30, 0.80]"


def test_choice_pope_qbench_prompts_byte_identical():
    assert data.multiple_choice_prompt("How many of these are there?", ["4", "2", "3", "1"]) == (
        "<image>\nHow many of these are there?\nA. 4\nB. 2\nC. 3\nD. 1\n"
        "Answer with the option's letter from the given choices directly.")
    assert data.pope_prompt("Is there a dog in the image?") == "<image>\nIs there a dog in the image?"
    assert data.qbench_prompt("Is the image blurry?", ["Yes", "No"]) == (
        "<image>\nIs the image blurry?\nChoose between one of the options as follows:\nA. Yes\nB. No\n")


def test_prompts_fit_every_model_template():
    from helpers.models import REGISTRY

    prompt = data.pope_prompt("Is there a dog?")
    for spec in REGISTRY.values():
        text = spec.format_prompt(prompt)
        assert text.count("<image>\nIs there a dog?") == 1


def test_model_inputs_apply_template_and_draw_boxes(vg):
    from helpers.models import REGISTRY

    path, folder, _ = vg
    samples = data.load_pointqa(path, folder, question_kinds=["general"], limit=1)
    images, texts = data.model_inputs(samples, REGISTRY["llava-v1.5-7b"])
    assert texts[0] == "USER: " + samples[0].prompt + " ASSISTANT:"
    assert [s.prompt_kind for s in samples] == ["visual", "plain"]
    assert (np.asarray(images[0]) == data.BOX_COLOR).all(-1).any()
    assert not (np.asarray(images[1]) == data.BOX_COLOR).all(-1).any()


# ----------------------------------------------------------------------------------------- scoring
@pytest.mark.parametrize("text,expected", [
    ("A", "A"), ("A.", "A"), ("(B)", "B"), (" C) a cat", "C"), ("D\n", "D"), ("Answer: C", "C"),
    ("The answer is (D).", "D"), ('"B"', "B"), ("**A**", "A"), ("a cat", None), ("", None), ("I am not sure", None),
])
def test_normalise_letter(text, expected):
    assert data.normalise_letter(text) == expected


def test_normalise_letter_falls_back_to_option_text():
    assert data.normalise_letter("blue.", ["red", "Blue"]) == "B"
    assert data.normalise_letter("purple", ["red", "blue"]) is None


@pytest.mark.parametrize("text,expected", [
    ("Yes", "yes"), ("yes.", "yes"), ("Yes, there is", "yes"), (" No, there is not.", "no"), ("NO", "no"),
    ("There is no dog.", "no"), ("Nothing", None), ("yesterday", None),
])
def test_normalise_yes_no(text, expected):
    assert data.normalise_yes_no(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("3", 3), (" 3 people", 3), ("three", 3), ("Three.", 3), ("There are 12 clocks", 12), ("none", 0),
    ("twenty", 20), ("many", None), ("", None),
])
def test_normalise_count(text, expected):
    assert data.normalise_count(text) == expected


@pytest.mark.parametrize("text,answer_type,expected", [
    ("Yes答案No", "yes_no", "yes"), ("No no matter", "yes_no", "no"), ("  Yes.", "yes_no", "yes"),
    ("There is no dog.", "yes_no", None), ("Nothing", "yes_no", None), ("yesterday", "yes_no", None),
    ("B) red", "letter", "B"), ("(C)答案", "letter", "C"), ("a cat", "letter", None), ("Blue", "letter", None),
    ("3 cats", "count", "3"), ("Three.", "count", "3"), ("12答", "count", "12"), ("3d", "count", None),
    ("many", "count", None), ("", "count", None),
])
def test_leading_answer_reads_the_first_word_only(text, answer_type, expected):
    assert data.leading_answer(text, answer_type) == expected


def test_answer_form_tells_a_run_on_answer_from_a_wrong_one():
    """A masked model that still says the right option but no longer stops ("Yes答案No") is scored wrong by
    :func:`data.is_correct`; ``answer_form`` says the scorer read nothing and the first word was right."""
    yes = _sample("yes", "yes_no")
    assert not data.is_correct(yes, "Yes答案No")
    assert data.answer_form(yes, "Yes答案No") == {"read": False, "first_word_correct": True}
    assert data.answer_form(yes, "No") == {"read": True, "first_word_correct": False}
    assert data.answer_form(yes, "There is, yes") == {"read": True, "first_word_correct": False}
    assert data.answer_form(_sample("B", "letter", ["red", "blue"]), "B答案C") == {"read": False,
                                                                                 "first_word_correct": True}
    with pytest.raises(ValueError, match="unknown answer_type 'free'"):
        data.leading_answer("x", "free")


def _sample(answer: str, answer_type: str, options=()) -> data.Sample:
    return data.Sample(id="s", image=None, question="q", answer=answer, prompt="p", benchmark="b",
                       answer_type=answer_type, options=tuple(options))


def test_is_correct_normalised_and_strict():
    assert data.is_correct(_sample("3", "count"), " 3 people")
    assert data.is_correct(_sample("3", "count"), "three")
    assert not data.is_correct(_sample("3", "count"), "4")
    assert not data.is_correct(_sample("3", "count"), "three", strict=True)
    assert data.is_correct(_sample("3", "count"), " 3 ", strict=True)
    assert data.is_correct(_sample("B", "letter"), "(B)")
    assert not data.is_correct(_sample("B", "letter"), "(B)", strict=True)
    assert data.is_correct(_sample("yes", "yes_no"), "Yes, there is")
    assert data.is_correct(_sample("yes", "yes_no"), "Yes, there is", strict=True), "POPE: first word"
    assert not data.is_correct(_sample("no", "yes_no"), "There is no dog.", strict=True)
    samples = [_sample("A", "letter"), _sample("no", "yes_no"), _sample("2", "count")]
    assert data.accuracy(samples, ["A.", "yes", "two"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="outputs"):
        data.accuracy(samples, ["A"])


# ----------------------------------------------------------------------------------------- synthetic set
def _generator():
    spec = importlib.util.spec_from_file_location("shapes_generate", SHAPES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_is_deterministic_for_a_seed(tmp_path):
    gen = _generator()
    a = gen.build(tmp_path / "a", n=6, seed=5)
    b = gen.build(tmp_path / "b", n=6, seed=5)
    c = gen.build(tmp_path / "c", n=6, seed=6)
    assert a == b and a != c
    for rec in a:
        assert (tmp_path / "a" / rec["image"]).read_bytes() == (tmp_path / "b" / rec["image"]).read_bytes()


def test_committed_set_is_what_the_generator_makes():
    gen = _generator()
    committed = json.loads((SHAPES / "test.json").read_text())
    meta = json.loads((SHAPES / "meta.json").read_text())
    assert len(committed) == meta["n"] >= 200
    for i in (0, 1, len(committed) - 1):
        rec, image = gen.record(i, meta["seed"], tuple(meta["size"]), meta["grid"])
        assert rec == committed[i]
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(SHAPES / rec["image"]).convert("RGB")))
    answers = {r["answer"] for r in committed}
    assert answers == {"1", "2", "3", "4"}


def test_embedded_set_loads_and_visual_image_is_the_training_render():
    gen = _generator()
    samples = data.load_shapes(limit=4)
    assert len(samples) == 4 * 6 and {s.benchmark for s in samples} == {"shapes"}
    meta = json.loads((SHAPES / "meta.json").read_text())
    scene = shapes.make_scene(np.random.default_rng([meta["seed"], 0]), size=tuple(meta["size"]), grid=meta["grid"])
    assert gen.record(0, meta["seed"], tuple(meta["size"]), meta["grid"])[0]["bboxes"] == [list(scene.box)]
    by_kind = {s.prompt_kind: s for s in samples if s.meta["record_id"] == "shapes-0000"}
    assert np.array_equal(np.asarray(by_kind["visual"].model_image()), np.asarray(shapes.render(scene, True)))
    assert np.array_equal(np.asarray(by_kind["plain"].model_image()), np.asarray(shapes.render(scene, False)))
    assert by_kind["visual"].answer == str(scene.count)


# ----------------------------------------------------------------------------------------- errors
def test_missing_image_names_file_and_sample(vg):
    path, folder, _ = vg
    (folder / "1.jpg").unlink()
    with pytest.raises(data.MissingImageError, match=r"pointQA_twice-test-1.*1\.jpg"):
        data.load_pointqa(path, folder)


def test_corrupt_image_and_skip_option(vg, caplog):
    path, folder, _ = vg
    (folder / "1.jpg").write_bytes(b"not an image at all")
    with pytest.raises(data.CorruptImageError, match=r"pointQA_twice-test-1.*cannot be read"):
        data.load_pointqa(path, folder)
    samples = data.load_pointqa(path, folder, on_error="skip")
    assert {s.meta["record_id"] for s in samples} == {"pointQA_twice-test-2"}
    assert [sid for sid, _ in samples.skipped] == ["pointQA_twice-test-1"]
    assert "skipped 1 bad sample" in caplog.text


def test_box_outside_image(vg):
    path, folder, records = vg
    records[1]["bboxes"] = [[10, 10, 45, 20]]  # the image is 40 wide
    records.append(_pointqa_record(3, "1.jpg", box=(10, 10, 10, 20)))  # empty box
    path.write_text(json.dumps(records))
    with pytest.raises(data.BoxOutsideImageError, match=r"pointQA_twice-test-2.*40x30"):
        data.load_pointqa(path, folder)
    samples = data.load_pointqa(path, folder, on_error="skip")
    assert [sid for sid, _ in samples.skipped] == ["pointQA_twice-test-2", "pointQA_twice-test-3"]


def test_empty_split_and_all_skipped(vg, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(data.EmptySplitError, match="no rows"):
        data.load_pointqa(empty, tmp_path)
    path, folder, _ = vg
    for f in (folder / "1.jpg", folder / "VG_100K" / "2.jpg"):
        f.unlink()
    with pytest.raises(data.EmptySplitError, match="2 skipped"):
        data.load_pointqa(path, folder, on_error="skip")


def test_corrupt_embedded_image_is_named_and_skippable(tmp_path):
    features = datasets.Features({"question_id": datasets.Value("string"), "question": datasets.Value("string"),
                                  "answer": datasets.Value("string"), "image": datasets.Image(),
                                  "category": datasets.Value("string")})
    rows = {"question_id": ["good", "bad"], "question": ["Is there a dog?", "Is there a cat?"],
            "answer": ["yes", "no"], "image": [{"bytes": _png((1, 1, 1)), "path": None},
                                               {"bytes": b"garbage", "path": None}],
            "category": ["adversarial", "adversarial"]}
    path = _to_parquet(rows, features, tmp_path / "pope.parquet")
    with pytest.raises(data.CorruptImageError, match="bad"):
        data.load_pope(path)
    samples = data.load_pope(path, on_error="skip")
    assert [s.id for s in samples] == ["good"] and samples.skipped[0][0] == "bad"
