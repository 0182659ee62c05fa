"""The extraction cache (helpers.cache) and runs.extractions reading from it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import cache, data, runs, selection

TOY = selection.toy_models()[0]  # a model with planted retrieval heads: small and fast, nothing more


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_key_changes_with_settings_samples_and_model_files(tmp_path):
    samples = list(selection.samples("shapes", 4))
    base = cache.key(TOY, samples, settings={"rows": "answer", "k": 0.05})
    assert base == cache.key(TOY, list(selection.samples("shapes", 4)), settings={"k": 0.05, "rows": "answer"})
    assert base != cache.key(TOY, samples, settings={"rows": "answer", "k": 0.1})
    assert base != cache.key(TOY, samples[:3], settings={"rows": "answer", "k": 0.05})
    assert base != cache.key(TOY, samples, settings={"rows": "answer", "k": 0.05}, device="cuda")
    changed = list(samples)
    image = changed[0].model_image().copy()
    image.putpixel((0, 0), (1, 2, 3))
    changed[0] = data.Sample(**{**changed[0].__dict__, "image": image})
    assert base != cache.key(TOY, changed, settings={"rows": "answer", "k": 0.05})
    copy = shutil.copytree(TOY, tmp_path / "toy")
    assert cache.key(copy, samples, settings={}) == cache.key(copy, samples, settings={})
    weights = next(p for p in copy.iterdir() if p.suffix == ".safetensors")
    before = cache.key(copy, samples, settings={})
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert cache.key(copy, samples, settings={}) != before
    (copy / "README.md").write_text("a card edit does not change the model")
    assert cache.key(copy, samples, settings={}) == cache.key(copy, samples, settings={})


def test_extractions_compute_once_then_read_without_loading(cache_dir, monkeypatch):
    first = runs.extractions(TOY, ["shapes"], n_samples=4, batch_size=4)[0]
    assert len(list(cache_dir.glob("*.parquet"))) == 1

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded although its results are cached")

    monkeypatch.setattr(runs, "iter_models", no_loading)
    again = runs.extractions(TOY, ["shapes"], n_samples=4, batch_size=4)[0]
    np.testing.assert_array_equal(again.scores["weight"], first.scores["weight"])
    assert list(again.table.prediction) == list(first.table.prediction)
    assert again.settings["family"] == first.settings["family"]
    with pytest.raises(AssertionError, match="loaded"):  # other settings: computed again
        runs.extractions(TOY, ["shapes"], n_samples=4, batch_size=4, k=0.1)


def test_cache_off_and_corrupt_files_recompute(cache_dir, monkeypatch, capsys):
    samples = list(selection.samples("shapes", 2))
    k = cache.key(TOY, samples, settings={})
    cache_dir.mkdir(parents=True)
    (cache_dir / f"{k}.parquet").write_bytes(b"not parquet")
    assert cache.read(k) is None
    assert "computing again" in capsys.readouterr().out
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    assert cache.folder() is None and cache.read(k) is None


def test_extractions_use_a_loaded_model_instead_of_loading_it(cache_dir, monkeypatch):
    from helpers.models import load

    model, processor = load(TOY)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded again although it was given")

    monkeypatch.setattr(runs, "iter_models", no_loading)
    given = runs.collect([TOY], ["shapes"], n_samples=2, batch_size=2, loaded=(model, processor))[0]
    assert runs.cache_key(TOY, selection.samples("shapes", 2), batch_size=2) == next(cache_dir.glob("*.json")).stem
    np.testing.assert_array_equal(runs.extractions(TOY, ["shapes"], n_samples=2, batch_size=2)[0].scores["weight"],
                                  given.scores["weight"])
    with pytest.raises(ValueError, match="one model"):
        runs.collect([TOY, TOY], ["shapes"], n_samples=2, loaded=(model, processor))
