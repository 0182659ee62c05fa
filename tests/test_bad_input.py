"""Nothing silent (issue 14): bad input and misuse raise a named error that says what to do, never a wrong result.

Each test feeds one kind of bad input and asserts the error type and that the message names the argument,
row or file. The sweep cases run the real command in a subprocess on a tiny offline model.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers import data, metrics, results

ROOT = Path(__file__).resolve().parents[1]


# ============================================================================================ metrics
def _rows_and_image() -> tuple[torch.Tensor, torch.Tensor]:
    """One row over 10 keys, 0.8 of it on the image keys 3..7."""
    rows = torch.full((1, 1, 1, 10), 0.04)
    rows[..., 3:8] = 0.16
    image = torch.zeros(10, dtype=torch.bool)
    image[3:8] = True
    return rows, image


def test_bool_mask_and_positions_agree():
    """The valid forms still give the right weight (the reference for the refusals below)."""
    rows, image = _rows_and_image()
    assert metrics.attention_weight(rows, image).item() == pytest.approx(0.8)
    assert metrics.attention_weight(rows, torch.arange(3, 8)).item() == pytest.approx(0.8)
    assert metrics.attention_weight(rows, [torch.arange(3, 8)]).item() == pytest.approx(0.8)


@pytest.mark.parametrize("convert", [torch.Tensor.long, torch.Tensor.int], ids=["long", "int"])
def test_integer_01_mask_is_refused(convert):
    rows, image = _rows_and_image()
    with pytest.raises(ValueError, match=r"'index'.*0s and 1s.*\.bool\(\)"):
        metrics.attention_weight(rows, convert(image))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8])
def test_float_or_uint8_mask_is_refused(dtype):
    rows, image = _rows_and_image()
    with pytest.raises(TypeError, match=r"'image'.*image\.bool\(\)"):
        metrics.detection_hits(rows, image.to(dtype), image, k=1)


def test_integer_01_mask_per_sample_is_refused():
    rows, image = _rows_and_image()
    with pytest.raises(ValueError, match=r"'region', sample 0.*\.bool\(\)"):
        metrics.region_weight(rows, image[None].long())


def test_repeated_positions_are_refused():
    rows, _ = _rows_and_image()
    with pytest.raises(ValueError, match="'index'.*repeats positions"):
        metrics.attention_weight(rows, torch.tensor([3, 3, 4]))


def test_nan_rows_are_refused():
    rows, image = _rows_and_image()
    with pytest.raises(ValueError, match="rows hold NaN.*sample 0, layer 0, head 0"):
        metrics.detection_hits(torch.full_like(rows, float("nan")), image, image, k=2)


def test_one_nan_key_is_refused():
    rows, image = _rows_and_image()
    rows[..., 5] = float("nan")
    with pytest.raises(ValueError, match="rows hold NaN"):
        metrics.detection_hits(rows, image, image, k=1)


def test_pre_softmax_scores_are_refused():
    scores = torch.randn(1, 2, 3, 10, generator=torch.Generator().manual_seed(1)) * 4
    with pytest.raises(ValueError, match="rows hold negative values.*pre-softmax"):
        metrics.attention_weight(scores, torch.arange(3, 8))


def test_rows_summing_above_one_are_refused():
    rows = torch.full((2, 1, 2, 10), 0.1)
    rows[1, 0, 1] = 0.3
    with pytest.raises(ValueError, match=r"rows sum to 3 .*sample 1, layer 0, head 1"):
        metrics.concentration(rows, torch.arange(3, 8))


def test_rows_within_tolerance_pass():
    """fp16 rounding: rows summing to slightly above 1 are accepted (callers pass such rows)."""
    rows = torch.softmax(torch.randn(2, 3, 4, 600, generator=torch.Generator().manual_seed(0)), -1)
    half = (rows * 1.0005).half()
    assert float(half.float().sum(-1).max()) > 1
    w = metrics.attention_weight(half, torch.arange(10, 300))
    assert torch.allclose(w, metrics.attention_weight(rows, torch.arange(10, 300)), atol=2e-3)


def test_integer_rows_are_refused():
    with pytest.raises(TypeError, match="rows must be a float tensor"):
        metrics.attention_weight(torch.ones(1, 1, 1, 4, dtype=torch.long), torch.tensor([0]))


def test_integer_k_larger_than_the_keys_is_refused():
    rows, image = _rows_and_image()
    with pytest.raises(ValueError, match="k=50 top keys.*only 10 keys"):
        metrics.detection_hits(rows, image, image, k=50)


@pytest.mark.parametrize("k", [0.0, 1.5, -3, True, "half"])
def test_bad_k_is_refused(k):
    rows, image = _rows_and_image()
    with pytest.raises(ValueError, match="k "):
        metrics.detection_hits(rows, image, image, k=k)


def test_top_heads_refuses_negative_counts():
    with pytest.raises(ValueError, match="top_heads: k must be a count >= 0, got -1"):
        metrics.top_heads(torch.rand(3, 4), -1)


def test_top_heads_refuses_fractional_counts():
    with pytest.raises(TypeError, match="top_heads: k must be an integer"):
        metrics.top_heads(torch.rand(3, 4), 2.5)


def test_nan_never_ranks_first():
    scores = torch.tensor([[float("nan"), -float("inf")], [float("nan"), -float("inf")]])
    assert metrics.top_heads(scores, 4, tie_break="order") == [(0, 1), (1, 1), (0, 0), (1, 0)]
    top = metrics.top_heads(scores, 4)  # seeded random order among the tied -inf heads, NaN still last
    assert set(top[:2]) == {(0, 1), (1, 1)} and set(top[2:]) == {(0, 0), (1, 0)}
    assert metrics.top_heads(scores, np.int64(1))[0] in {(0, 1), (1, 1)}


def test_explorer_refuses_negative_counts():
    from helpers import widgets

    sample = data.Sample(id="s", image=Image.new("RGB", (8, 8)), question="q", answer="1", prompt="<image>\nq",
                         benchmark="b", answer_type="count")
    with pytest.raises(ValueError, match=r"HeadExplorer\(top_k=-2\)"):
        widgets.HeadExplorer(None, None, [sample], top_k=-2)  # refused before the model is touched


def test_max_new_tokens_below_what_the_rows_need_is_refused():
    from helpers import extract

    with pytest.raises(ValueError, match="max_new_tokens=1: rows='answer' needs at least 2"):
        extract.run_batch(None, None, [], rows="answer", max_new_tokens=1)


def test_batch_size_zero_is_refused():
    from helpers import extract

    sample = data.Sample(id="s", image=None, question="q", answer="1", prompt="<image>\nq", benchmark="b",
                         answer_type="count")
    with pytest.raises(ValueError, match="batch_size=0"):
        extract.head_results(None, None, [sample], batch_size=0)


# ============================================================================================ data
def _pointqa_file(tmp_path: Path, bad: dict | None = None, drop: str = "") -> Path:
    """A PointQA parquet: record ``good`` and record ``bad`` (``bad`` overrides fields, ``drop`` removes one)."""
    Image.new("RGB", (40, 30), (0, 0, 255)).save(tmp_path / "1.png")
    good = {"id": "good", "image": "1.png", "general_question": "How many of these are there?",
            "obj_question": "How many clocks are there?", "super_question": "How many devices are there?",
            "answer": "3", "bboxes": [[5.0, 5.0, 20.0, 15.0]]}
    record = {**good, "id": "bad", **(bad or {})}
    if drop:
        record[drop] = None  # a column missing in one row reads back as null
    path = tmp_path / "pointqa.parquet"
    datasets.Dataset.from_list([good, record]).to_parquet(str(path))
    return path


@pytest.mark.parametrize(("bad", "field"), [
    ({"answer": None}, "answer"),
    ({"answer": "many"}, "answer"),
    ({"obj_question": None}, "obj_question"),
    ({"general_question": "   "}, "general_question"),
    ({"image": None}, "image"),
    ({"bboxes": None}, "bboxes"),
    ({"bboxes": []}, "bboxes"),
    ({"bboxes": [[5.0, 5.0, 20.0]]}, "bboxes"),
    ({"bboxes": [[5.0, float("nan"), 20.0, 15.0]]}, "bboxes"),
], ids=["answer-null", "answer-not-a-count", "question-null", "question-blank", "image-null", "boxes-null",
        "boxes-empty", "box-three-numbers", "box-nan"])
def test_pointqa_row_fields_are_checked(tmp_path, bad, field):
    path = _pointqa_file(tmp_path, bad)
    with pytest.raises(data.FieldError, match=rf"sample bad: field '{field}'"):
        data.load_pointqa(path, tmp_path)
    samples = data.load_pointqa(path, tmp_path, on_error="skip")
    assert {s.meta["record_id"] for s in samples} == {"good"}
    assert samples.skipped[0][0] == "bad" and field in samples.skipped[0][1]


def test_pointqa_negative_count_is_refused(tmp_path):
    path = _pointqa_file(tmp_path, {"answer": "3"})
    rows = datasets.Dataset.from_parquet(str(path)).to_list()
    for r in rows:
        r["answer"] = 3 if r["id"] == "good" else -1
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    with pytest.raises(data.FieldError, match="sample bad: field 'answer' is -1"):
        data.load_pointqa(path, tmp_path)


def test_pointqa_reversed_box_is_refused(tmp_path):
    path = _pointqa_file(tmp_path, {"bboxes": [[20.0, 5.0, 5.0, 15.0]]})
    with pytest.raises(data.BoxOutsideImageError, match="sample bad: box"):
        data.load_pointqa(path, tmp_path)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _image_file(tmp_path: Path) -> str:
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "img.png")
    return str(tmp_path / "img.png")


@pytest.mark.parametrize(("bad", "field"), [({"question": None}, "question"), ({"answer": None}, "answer"),
                                            ({"question": ""}, "question")],
                         ids=["question-null", "answer-null", "question-empty"])
def test_pope_row_fields_are_checked(tmp_path, bad, field):
    good = {"question_id": "good", "question": "Is there a dog?", "answer": "yes", "image": _image_file(tmp_path),
            "category": "adversarial"}
    path = _jsonl(tmp_path / "pope.json", [good, {**good, "question_id": "bad", **bad}])
    with pytest.raises(data.FieldError, match=f"sample bad: field .*'{field}'"):
        data.load_pope(path)
    samples = data.load_pope(path, on_error="skip")
    assert [s.id for s in samples] == ["good"] and samples.skipped[0][0] == "bad"


@pytest.mark.parametrize("loader", ["mmbench", "seed"])
@pytest.mark.parametrize(("bad", "field"), [({"question": None}, "question"), ({"answer": None}, "answer")],
                         ids=["question-null", "answer-null"])
def test_multiple_choice_row_fields_are_checked(tmp_path, loader, bad, field):
    letters = {"A": "red", "B": "blue"} if loader == "mmbench" else {"choice_a": "red", "choice_b": "blue"}
    key = "index" if loader == "mmbench" else "question_id"
    good = {key: "good", "question": "Which colour?", **letters, "answer": "A", "image": _image_file(tmp_path)}
    path = _jsonl(tmp_path / f"{loader}.json", [good, {**good, key: "bad", **bad}])
    with pytest.raises(data.FieldError, match=f"sample bad: field '{field}'"):
        data.load(loader, path)
    assert data.load(loader, path, on_error="skip").skipped[0][0] == "bad"


def test_qbench_missing_correct_answer_is_named(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    good = {"img_path": "a.png", "question": "Is it sharp?", "candidates": ["yes", "no"], "correct_ans": "yes"}
    path = tmp_path / "qbench.json"
    path.write_text(json.dumps([good, {**good, "correct_ans": None}]))
    with pytest.raises(data.FieldError, match="sample row1: field 'correct_ans'"):
        data.load_qbench(path, image_folder=tmp_path)


def _bomb_limit(monkeypatch) -> None:
    """PIL refuses images above 2 x MAX_IMAGE_PIXELS pixels: make a 40x30 image count as a bomb."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)


def test_decompression_bomb_file_is_named_and_skippable(tmp_path, monkeypatch):
    path = _pointqa_file(tmp_path)
    _bomb_limit(monkeypatch)
    with pytest.raises(data.ImageTooLargeError, match=r"sample good: image file .*1\.png.*MAX_IMAGE_PIXELS"):
        data.load_pointqa(path, tmp_path)
    with pytest.raises(data.EmptySplitError, match="2 skipped"):
        data.load_pointqa(path, tmp_path, on_error="skip")


def test_decompression_bomb_embedded_is_named(tmp_path, monkeypatch):
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="PNG")
    sample = data.Sample(id="big", image=buf.getvalue(), question="q", answer="yes", prompt="<image>\nq",
                         benchmark="pope", answer_type="yes_no")
    _bomb_limit(monkeypatch)
    with pytest.raises(data.ImageTooLargeError, match="sample big: its embedded image"):
        sample.load_image()


def test_16_bit_image_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100], [65535, 257 * 3]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    image = data.open_image(tmp_path / "deep.png", "deep")
    assert image.mode == "RGB"
    assert np.asarray(image)[..., 0].tolist() == [[0, 100], [255, 3]]


def test_32_bit_image_out_of_range_is_refused():
    image = Image.fromarray(np.array([[-5, 70000]], dtype=np.int32), mode="I")
    sample = data.Sample(id="wide", image=image, question="q", answer="yes", prompt="<image>\nq", benchmark="pope",
                         answer_type="yes_no")
    with pytest.raises(data.CorruptImageError, match="sample wide: a mode-I image with values from -5 to 70000"):
        sample.load_image()


@pytest.mark.parametrize(("box", "error"), [((1, 1, float("nan"), 5), data.FieldError),
                                            ((1, 1, 5), data.FieldError),
                                            ((6, 1, 2, 5), data.BoxOutsideImageError),
                                            ((50, 50, 60, 60), data.BoxOutsideImageError)],
                         ids=["nan", "three-numbers", "reversed", "outside"])
def test_draw_boxes_checks_its_boxes(box, error):
    image = Image.new("RGB", (20, 20))
    with pytest.raises(error, match="draw_boxes: box 1"):
        data.draw_boxes(image, [(2, 2, 8, 8), box])


# ============================================================================================ models
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random LLaVA-1.5 folder (2 layers)."""
    from helpers import offline

    return offline.save("llava-v1.5-7b", tmp_path_factory.mktemp("m") / "tiny", tiny=True, layers=2)


@pytest.fixture()
def broken(tiny_model, tmp_path, monkeypatch) -> Path:
    """A copy of the tiny model folder to break; loading weights from it fails the test (checks come first)."""
    from transformers import AutoModelForImageTextToText

    folder = tmp_path / "broken"
    shutil.copytree(tiny_model, folder)

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were loaded before the check")

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", no_weights)
    return folder


def test_cuda_device_without_cuda(broken, monkeypatch):
    from helpers import models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(models.ModelLoadError, match=f"loading {broken}: device 'cuda' .*no CUDA device"):
        models.load(broken, device="cuda")


def test_device_that_is_not_a_device(broken):
    from helpers import models

    with pytest.raises(models.ModelLoadError, match=f"loading {broken}: device 'gpu' is not a torch device"):
        models.load(broken, device="gpu")


def test_truncated_safetensors(broken):
    from helpers import models

    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(models.ModelLoadError, match=f"{broken}: weights file model.safetensors is truncated"):
        models.load(broken, device="cpu")


def test_corrupt_safetensors_header(broken):
    from helpers import models

    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(models.ModelLoadError, match=f"{broken}: weights file model.safetensors is corrupt"):
        models.load(broken, device="cpu")


def test_missing_weight_shard(broken):
    from helpers import models

    (broken / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00002.safetensors"}}))
    with pytest.raises(models.ModelLoadError, match=f"{broken}: .*index.json names .*model-00002"):
        models.load(broken, device="cpu")


@pytest.mark.parametrize("model_type", ["llavax", "llama"])
def test_unrecognised_config(broken, model_type):
    from helpers import models

    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
    with pytest.raises(models.ModelLoadError, match=f"{broken}: config.json has model_type '{model_type}'"):
        models.load(broken, device="cpu")


def test_config_that_is_not_json(broken):
    from helpers import models

    (broken / "config.json").write_text("{ truncated")
    with pytest.raises(models.ModelLoadError, match=f"{broken}: config.json cannot be read"):
        models.load(broken, device="cpu")


def test_missing_tokenizer_files(broken):
    from helpers import models

    for f in broken.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(models.ModelLoadError, match=f"{broken}: no tokenizer files"):
        models.load(broken, device="cpu")


# ============================================================================================ results
def _part(index: int, sid: str, settings: dict | None = None, scores: tuple[str, ...] = ("weight",),
          shape: tuple[int, int] = (2, 3)) -> results.Results:
    table = pd.DataFrame({"index": [index], "sample_id": [sid], "correct": [True]})
    return results.Results(table, {s: np.zeros((1, *shape), np.float32) for s in scores},
                           settings if settings is not None else {"model_name": "m", "k": 0.05})


def test_released_files_of_different_shapes_name_the_file(tmp_path):
    torch.save(torch.rand(5, 32, 32), tmp_path / "imatt_sum.pt")
    torch.save(torch.rand(5, 40, 40), tmp_path / "imatt_concen.pt")
    with pytest.raises(results.ResultsError, match=r"imatt_concen\.pt holds .*\[5, 40, 40\] but .*imatt_sum\.pt"):
        results.load_released(tmp_path)


def test_released_files_of_different_sample_counts_name_the_file(tmp_path):
    torch.save(torch.rand(5, 32, 32), tmp_path / "imatt_sum.pt")
    torch.save(torch.rand(4, 32, 32), tmp_path / "spatt_sum.pt")
    with pytest.raises(results.ResultsError, match=r"spatt_sum\.pt holds .*\[4, 32, 32\]"):
        results.load_released(tmp_path)


def test_released_file_that_is_not_a_tensor_is_named(tmp_path):
    torch.save({"not": "a tensor"}, tmp_path / "imatt_sum.pt")
    with pytest.raises(results.ResultsError, match=r"imatt_sum\.pt holds a dict"):
        results.load_released(tmp_path)


def test_parts_with_different_score_sets_are_refused(tmp_path):
    results.write(_part(0, "a"), tmp_path / "part-r0-000000.parquet")
    results.write(_part(1, "b", scores=("weight", "region_hits")), tmp_path / "part-r0-000001.parquet")
    with pytest.raises(results.ResultsError, match=r"part-r0-000001\.parquet has scores \['region_hits', 'weight'\]"):
        results.read_dir(tmp_path)


def test_parts_with_different_settings_are_refused(tmp_path):
    results.write(_part(0, "a"), tmp_path / "part-r0-000000.parquet")
    results.write(_part(1, "b", {"model_name": "other", "k": 0.05}), tmp_path / "part-r0-000001.parquet")
    with pytest.raises(results.ResultsError, match=r"part-r0-000001\.parquet differs .* model_name \('m' vs 'other'\)"):
        results.read_dir(tmp_path)


def test_parts_with_different_head_grids_are_refused():
    with pytest.raises(results.ResultsError, match=r"part 1 has \[layers, heads\] = \[4, 4\]"):
        results.concat([_part(0, "a"), _part(1, "b", shape=(4, 4))])


def test_sample_written_twice_under_two_indices_is_refused(tmp_path):
    results.write(_part(0, "a"), tmp_path / "part-r0-000000.parquet")
    results.write(_part(1, "a"), tmp_path / "part-r0-000001.parquet")
    with pytest.raises(results.ResultsError, match=r"written twice: sample_id \['a'\]"):
        results.read_dir(tmp_path)


def test_corrupt_part_names_the_file_to_delete(tmp_path):
    results.write(_part(0, "a"), tmp_path / "part-r0-000000.parquet")
    bad = tmp_path / "part-r0-000001.parquet"
    bad.write_bytes(b"PAR1 truncated")
    with pytest.raises(results.ResultsError, match=r"part-r0-000001\.parquet cannot be read.*delete this file"):
        results.read_dir(tmp_path)


# ============================================================================================ sweep arguments
def _args(tmp_path: Path, *extra: str):
    from helpers import sweep

    return sweep.parse_args(["--out", str(tmp_path / "out"), *extra])


@pytest.mark.parametrize(("extra", "message"), [
    (["--batch-size", "0"], "--batch-size 0"),
    (["--max-samples", "0"], "--max-samples 0"),
    (["--max-samples", "-2"], "--max-samples -2"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0"),
    (["--max-new-tokens", "1"], "--max-new-tokens 1: --rows answer needs at least 2"),
    (["--benchmark", "pope", "--split", "val"], "--split val: only the shapes set has splits"),
    (["--split", "nope"], "--split nope: the shapes set has no such split"),
    (["--benchmark", "pope", "--data-files", "missing.json"], r"--data-files: .*missing\.json not found"),
    (["--data-files", "x.json"], "--data-files: the shapes set is embedded"),
    (["--benchmark", "pointqa"], "--image-folder: pointqa needs"),
    (["--image-folder", "."], "--image-folder: shapes does not read images"),
], ids=["batch-size", "max-samples-0", "max-samples-negative", "max-new-tokens-0", "max-new-tokens-1",
        "split-of-pope", "unknown-split", "missing-data-file", "data-files-for-shapes", "pointqa-without-images",
        "image-folder-for-shapes"])
def test_sweep_arguments_are_checked(tmp_path, extra, message):
    from helpers import sweep

    with pytest.raises(sweep.SweepError, match=message):
        sweep.check_args(_args(tmp_path, *extra))


def test_sweep_valid_arguments_are_resolved(tmp_path):
    from helpers import sweep

    args = _args(tmp_path, "--rows", "prompt_end", "--max-new-tokens", "1", "--k", "29")
    sweep.check_args(args)
    assert (args.split, args.k, args.max_new_tokens) == ("test", 29, 1)
    pope = _args(tmp_path, "--benchmark", "mmbench")
    sweep.check_args(pope)
    assert pope.split == "dev", "the split recorded is the one the loader reads"


@pytest.mark.parametrize("k", ["0", "-1", "2.5", "abc"])
def test_sweep_k_is_checked(tmp_path, k, capsys):
    with pytest.raises(SystemExit):
        _args(tmp_path, "--k", k)
    assert "argument --k" in capsys.readouterr().err


def test_sweep_out_that_is_a_file(tmp_path):
    from helpers import sweep

    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(sweep.SweepError, match=f"--out {tmp_path / 'out'} is a file"):
        sweep.check_args(_args(tmp_path))


def test_sweep_out_that_cannot_be_written(tmp_path):
    from helpers import sweep

    args = sweep.parse_args(["--out", "/proc/visual-heads-cannot-write"])
    with pytest.raises(sweep.SweepError, match="--out /proc/visual-heads-cannot-write cannot be written"):
        sweep.check_args(args)


def test_sweep_duplicate_sample_ids_are_refused(tmp_path):
    from helpers import sweep

    row = {"question_id": "same", "question": "Is there a dog?", "answer": "yes", "image": _image_file(tmp_path),
           "category": "adversarial"}
    files = _jsonl(tmp_path / "pope.json", [row, row])
    args = _args(tmp_path, "--benchmark", "pope", "--data-files", str(files))
    sweep.check_args(args)
    with pytest.raises(sweep.SweepError, match="sample id same occurs twice"):
        sweep.load_samples(args)


# ============================================================================================ sweep command
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _sweep(model: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The real command on the shapes set (4 samples, batches of 2); ``extra`` flags override these."""
    cmd = [sys.executable, "-m", "helpers.sweep", "--model", str(model), "--benchmark", "shapes", "--max-samples",
           "4", "--out", str(out), "--batch-size", "2", "--max-new-tokens", "2", *extra]
    return subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def first_run(tiny_model, tmp_path_factory) -> Path:
    """A finished 4-sample sweep folder (2 parts) to resume into."""
    out = tmp_path_factory.mktemp("sweep") / "first"
    done = _sweep(tiny_model, out)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture()
def resumed(first_run, tmp_path) -> Path:
    """A copy of the first run's folder."""
    out = tmp_path / "resumed"
    shutil.copytree(first_run, out)
    return out


def _unchanged(out: Path) -> None:
    res = results.read_dir(out)
    assert len(res) == 4 and len(list(out.glob("part-*.parquet"))) == 2, "a refused resume writes nothing"


def test_sweep_bad_argument_exits_before_the_model_loads(tiny_model, tmp_path):
    done = _sweep(tiny_model, tmp_path / "out", "--max-samples", "-2")
    assert done.returncode == 2
    assert "helpers.sweep: error: --max-samples -2" in done.stderr and "loaded" not in done.stdout
    assert not list((tmp_path / "out").glob("part-*"))


@pytest.mark.parametrize(("extra", "message"), [
    (["--prompt-kind", "visual"], r"--prompt-kind: \(None vs 'visual'\)"),
    (["--k", "0.2"], r"--k: \(0\.05 vs 0\.2\)"),
    (["--rows", "prompt_end"], r"--rows: \('answer' vs 'prompt_end'\)"),
    (["--max-new-tokens", "3"], r"--max-new-tokens: \(2 vs 3\)"),
    (["--max-samples", "6"], r"--max-samples: \(4 vs 6\)"),
], ids=["prompt-kind", "k", "rows", "max-new-tokens", "max-samples"])
def test_resume_with_other_settings_is_refused_before_the_model_loads(tiny_model, resumed, extra, message):
    done = _sweep(tiny_model, resumed, *extra)
    assert done.returncode == 2, done.stderr[-2000:]
    assert re.search(f"--out {resumed} holds a sweep with other settings .*{message}", done.stderr), done.stderr
    assert "loaded" not in done.stdout
    _unchanged(resumed)


def test_resume_with_another_model_is_refused(tiny_model, resumed, tmp_path):
    from helpers import offline

    other = offline.save("llava-v1.5-7b", tmp_path / "other", tiny=True, layers=2, seed=1)  # same geometry
    done = _sweep(other, resumed)
    assert done.returncode == 2
    assert re.search(rf"--model: \('{tiny_model}' vs '{other}'\)", done.stderr), done.stderr
    _unchanged(resumed)


@pytest.mark.parametrize(("key", "value", "named"), [("quantization", "4bit", "--quantization"),
                                                      ("commit", "0123abcd", "commit"),
                                                      ("package_version", "0.0.1", "package_version")])
def test_resume_into_a_folder_of_other_model_settings_is_refused(tiny_model, resumed, key, value, named):
    """Settings only known once the model has loaded (as if the folder was written with them)."""
    for path in resumed.glob("part-*.parquet"):
        part = results.read(path)
        part.settings[key] = value
        results.write(part, path)
    settings = json.loads((resumed / "settings.json").read_text())
    (resumed / "settings.json").write_text(json.dumps({**settings, key: value}))
    done = _sweep(tiny_model, resumed)
    assert done.returncode == 2
    assert f"{named}: ({value!r} vs" in done.stderr, done.stderr
    _unchanged(resumed)


def test_resume_with_a_corrupt_part_names_the_file_to_delete(tiny_model, resumed):
    bad = sorted(resumed.glob("part-*.parquet"))[-1]
    bad.write_bytes(bad.read_bytes()[:100])
    done = _sweep(tiny_model, resumed)
    assert done.returncode == 2
    assert f"{bad} cannot be read as a results file" in done.stderr and "delete this file" in done.stderr


def _pope_set(folder: Path, bad: int | None) -> Path:
    """Six POPE rows with image files; image ``bad`` is not an image."""
    folder.mkdir(exist_ok=True)
    rows = []
    for i in range(6):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (30 * i, 90, 160)).save(buf, format="PNG")
        (folder / f"{i}.png").write_bytes(b"not an image" if i == bad else buf.getvalue())
        rows.append({"question_id": f"q{i}", "question": "Is there a red circle in the image?",
                     "answer": "yes" if i % 2 else "no", "image": str(folder / f"{i}.png"), "category": "adversarial"})
    return _jsonl(folder / "pope.json", rows)


def _pope_sweep(model: Path, files: Path, out: Path) -> subprocess.CompletedProcess:
    return _sweep(model, out, "--benchmark", "pope", "--data-files", str(files), "--max-samples", "6")


def test_resume_after_a_skipped_sample_was_fixed_keys_on_ids(tiny_model, tmp_path):
    """Run 1 skips q2 (bad image) and is cut short; q2 is fixed; the resume runs q2 and q5 and nothing twice."""
    files = _pope_set(tmp_path / "pope", bad=2)
    out = tmp_path / "out"
    first = _pope_sweep(tiny_model, files, out)
    assert first.returncode == 0 and "skipped 1 bad sample(s): q2" in first.stderr
    sorted(out.glob("part-*.parquet"))[-1].unlink()  # as if killed before its last batch (q5)
    _pope_set(tmp_path / "pope", bad=None)
    done = _pope_sweep(tiny_model, files, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 samples to do" in done.stdout
    res = results.read_dir(out)
    assert res.table["sample_id"].tolist() == [f"q{i}" for i in range(6)]
    assert res.table["index"].tolist() == list(range(6))
    whole = tmp_path / "whole"
    assert _pope_sweep(tiny_model, files, whole).returncode == 0
    ref = results.read_dir(whole)
    pd.testing.assert_frame_equal(res.table[["index", "sample_id", "prediction"]],
                                  ref.table[["index", "sample_id", "prediction"]])
    np.testing.assert_allclose(res.scores["weight"], ref.scores["weight"], atol=1e-6)


def test_resume_after_a_done_sample_left_the_split_is_refused(tiny_model, tmp_path):
    files = _pope_set(tmp_path / "pope", bad=None)
    out = tmp_path / "out"
    assert _pope_sweep(tiny_model, files, out).returncode == 0
    _pope_set(tmp_path / "pope", bad=1)  # q1's image is now broken: it would be skipped
    done = _pope_sweep(tiny_model, files, out)
    assert done.returncode == 2
    assert re.search(r"part-r0-000000\.parquet holds samples that are not in the split now \(q1\)", done.stderr)
