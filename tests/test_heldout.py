"""Issue 17, held-out discipline: heads are ranked on one set of samples and evaluated on another, and the two
share no sample, no record and no image; Figure 8 is measured on the held-out samples.

Each test here failed on the code before the fix (``/work/notes/issue17_evidence/heldout_before.txt``).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import ablation, data, extract, results, selection
from helpers.notebooks import NOTEBOOK_DIR
from helpers.results import Ranking, Results


def _sample(sid: str, image, **meta) -> data.Sample:
    """A minimal counting sample with ``image`` (a PIL image, bytes or a path) and ``meta``."""
    return data.Sample(id=sid, image=image, question="How many?", answer="2", prompt="<image>\nHow many?",
                       benchmark="shapes", answer_type="count", boxes=((1.0, 1.0, 4.0, 4.0),),
                       question_kind="general", prompt_kind="visual", meta=dict(meta))


def _picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# Sample lists


def test_overlapping_sample_ids_raise_and_name_them():
    rank = selection.samples("shapes/visual", 12)
    evaluate = selection.samples("shapes/visual", 12, offset=4)  # records 4.. overlap nothing
    selection.check_disjoint(rank, evaluate)
    with pytest.raises(selection.OverlapError) as err:
        selection.check_disjoint(rank, selection.samples("shapes/visual", 12, offset=2), what="ranking vs held-out")
    message = str(err.value)
    assert isinstance(err.value, ValueError) and message.startswith("ranking vs held-out")
    assert "6 sample ids" in message and "shapes-0002:general:visual" in message
    assert "2 record ids" in message and "offset=" in message


def test_two_question_kinds_of_one_record_overlap():
    """Different sample ids, same record (and so the same picture): a general and an object question of it."""
    general = selection.samples("shapes/general/visual", 1)
    objects = selection.samples("shapes/object/visual", 1)
    assert general[0].id != objects[0].id
    with pytest.raises(selection.OverlapError, match="1 record id.*shapes-0000"):
        selection.check_disjoint(general, objects)
    selection.check_disjoint(general, selection.samples("shapes/object/visual", 1, offset=1))


def test_two_records_on_one_image_id_overlap():
    a = _sample("r1:general:visual", _picture(0), record_id="r1", image_id="img-7")
    b = _sample("r2:general:visual", _picture(1), record_id="r2", image_id="img-7")
    with pytest.raises(selection.OverlapError, match="1 image.*img-7"):
        selection.check_disjoint([a], [b])
    selection.check_disjoint([a], [_sample("r3:general:visual", _picture(0), record_id="r3", image_id="img-8")],
                             keys=("sample", "record", "image"))


def test_two_records_on_the_same_pixels_overlap_without_an_image_id(tmp_path):
    """Same picture, no image id: as a PIL image, as PNG bytes, as a file; a different picture passes."""
    picture = _picture(3)
    path = tmp_path / "pic.png"
    picture.save(path)
    a = _sample("r1:general:visual", picture.copy(), record_id="r1")
    b = _sample("r2:general:visual", path.read_bytes(), record_id="r2")
    c = _sample("r3:general:visual", path, record_id="r3")
    for other in (b, c):
        with pytest.raises(selection.OverlapError, match="1 image"):
            selection.check_disjoint([a], [other])
    selection.check_disjoint([a], [_sample("r4:general:visual", _picture(4), record_id="r4")])


def test_pointqa_records_sharing_one_image_file_overlap(tmp_path):
    """Real PointQA records can share one image file: two records, two ids, one picture."""
    shutil.copy(data.SHAPES_DIR / "images" / "0000.png", tmp_path / "vg.png")
    row = {"image": "vg.png", "general_question": "How many of these are there?",
           "obj_question": "How many red circles are there?", "super_question": "How many of these are there?",
           "answer": "2", "bboxes": [[2, 2, 12, 12]]}
    (tmp_path / "test.json").write_text(json.dumps([{"id": "q1", **row}, {"id": "q2", **row}]))
    loaded = data.load_pointqa(tmp_path / "test.json", tmp_path, question_kinds=("general",),
                               prompt_kinds=("visual",))
    first = [s for s in loaded if s.meta["record_id"] == "q1"]
    second = [s for s in loaded if s.meta["record_id"] == "q2"]
    with pytest.raises(selection.OverlapError, match="1 image"):
        selection.check_disjoint(first, second)


# ---------------------------------------------------------------------------------------------
# Saved sweeps


def _saved(samples: list[data.Sample], path) -> Results:
    """A small sweep part of ``samples`` written with :func:`helpers.results.write` and read back."""
    table = extract.results_table(samples, ["2"] * len(samples))
    scores = {"region_hits": np.zeros((len(samples), 2, 2), np.float32)}
    return results.read(results.write(Results(table, scores, {"model_name": "m", "dataset": "shapes"}), path))


def test_results_table_carries_record_and_image_identity():
    samples = selection.samples("shapes/visual", 4)  # record 0 (3 question kinds) and record 1 (one)
    table = extract.results_table(samples, ["2"] * 4)
    assert table["record_id"].tolist() == [s.meta["record_id"] for s in samples]
    assert table["image_id"].nunique() == 2 and table.groupby("record_id")["image_id"].nunique().eq(1).all()


def test_saved_sweep_overlapping_the_evaluation_set_raises(tmp_path):
    ranking = _saved(selection.samples("shapes/general/visual", 3), tmp_path / "part-0.parquet")
    assert {"record_id", "image_id"} <= set(ranking.table.columns)
    # other sample ids (object questions) but the same records and pictures
    with pytest.raises(selection.OverlapError, match="3 record ids"):
        selection.check_disjoint(ranking, selection.samples("shapes/object/visual", 3), what="saved sweep")
    selection.check_disjoint(ranking, selection.samples("shapes/object/visual", 3, offset=3))


def test_old_sweep_without_identity_columns_checks_sample_ids_and_warns(tmp_path):
    ranking = _saved(selection.samples("shapes/general/visual", 3), tmp_path / "part-0.parquet")
    old = Results(ranking.table.drop(columns=["record_id", "image_id"]), ranking.scores, ranking.settings)
    old = results.read(results.write(old, tmp_path / "old.parquet"))
    with pytest.warns(UserWarning, match="record and image overlap could not be checked"):
        selection.check_disjoint(old, selection.samples("shapes/object/visual", 3))  # other ids: passes
    with pytest.warns(UserWarning), pytest.raises(selection.OverlapError, match="3 sample ids"):
        selection.check_disjoint(old, selection.samples("shapes/general/visual", 3))


# ---------------------------------------------------------------------------------------------
# Where heads are ranked on one set and evaluated on another


def test_run_models_raises_before_any_model_work(monkeypatch):
    def no_models(*args, **kwargs):
        raise AssertionError("a model was loaded before the overlap was found")

    monkeypatch.setattr(ablation, "iter_models", no_models)
    rank = selection.samples("shapes/general/visual", 2)
    with pytest.raises(selection.OverlapError, match="rank_samples.*eval_samples"):
        ablation.run_models([None], rank, eval_samples=selection.samples("shapes/object/visual", 2))
    saved = Results(extract.results_table(rank, ["2", "2"]), {"region_hits": np.zeros((2, 2, 2), np.float32)},
                    {"model_name": "m"})
    with pytest.raises(selection.OverlapError, match="saved"):
        ablation.run_models([None], [], eval_samples=selection.samples("shapes/object/visual", 2), saved=[saved])


def _fake(samples: list[data.Sample], concentration: float, seed: int) -> Results:
    """Results of ``samples`` with head (1, 0) the best detector and every concentration ``concentration``."""
    n = len(samples)
    hits = np.random.default_rng(seed).uniform(0, 0.3, (n, 3, 2)).astype(np.float32)
    hits[:, 1, 0] = 0.9
    table = extract.results_table(samples, [s.answer for s in samples])
    scores = {"region_hits": hits, "weight": np.ones((n, 3, 2), np.float32),
              "concentration": np.full((n, 3, 2), concentration, np.float32)}
    return Results(table, scores, {"model_name": "m", "dataset": "shapes"})


def test_figure_8_is_measured_on_the_held_out_samples():
    """Heads chosen on the ranking samples; their concentration and the accuracy measured on the held-out ones."""
    rank = _fake(selection.samples("shapes/visual", 4), 0.2, 0)
    held = _fake(selection.samples("shapes/visual", 8, offset=2), 0.7, 1)
    held.scores["concentration"][:, 1, 0] = np.linspace(0.5, 0.9, 8)
    ranking = rank.ranking(min_correct=1)
    binned, grouped = ablation.concentration_tables({"m": ranking}, {"m": held}, k=1, bins=2)
    assert binned["samples"].sum() == len(held) and grouped["samples"].sum() == len(held)
    values = np.linspace(0.5, 0.9, 8)  # head (1, 0) on the held-out samples, not 0.2 (the ranking samples)
    assert binned["concentration"].tolist() == pytest.approx([values[:4].mean(), values[4:].mean()])
    with pytest.raises(selection.OverlapError):
        ablation.concentration_tables({"m": ranking}, {"m": rank}, k=1)
    with pytest.raises(ValueError, match="held-out"):
        ablation.concentration_tables({"m": ranking}, {}, k=1)


def test_save_and_load_keep_the_held_out_results(tmp_path):
    rank = _fake(selection.samples("shapes/visual", 4), 0.2, 0)
    held = _fake(selection.samples("shapes/visual", 4, offset=2), 0.7, 1)
    ranking = rank.ranking(min_correct=1)
    per_sample = pd.DataFrame({"model": ["m"], "condition": ["top"], "k": [0], "correct": [True]})
    ablation.save(per_sample, {"m": ranking}, tmp_path / "out", held_out={"m": held})
    _, rankings, held_back = ablation.load(tmp_path / "out", min_correct=1)
    assert list(held_back) == ["m"] and held_back["m"].table["sample_id"].tolist() == held.table["sample_id"].tolist()
    assert isinstance(rankings["m"], Ranking)


def test_notebook_8_draws_figure_8_from_the_held_out_results():
    """The notebook passes run_models' held-out results (or the saved ones) to Figure 8 and saves them."""
    cells = json.loads((NOTEBOOK_DIR / "08_head_masking.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "per_sample, rankings, held_out = ablation.load(" in code  # re-plotting a saved run keeps them
    assert "part, ranking, held = ablation.run_models(" in code and "held_out.update(held)" in code
    assert "selection.held_out(" in code  # held-out samples come after those every other notebook uses
    assert "ablation.concentration_tables(rankings, held_out, k=TOP_SHARE)" in code and "held_out=held_out" in code
