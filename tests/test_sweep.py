"""Sweeps: a killed run resumes to the same results; two processes give what one gives; result files round-trip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import offline, results

ROOT = Path(__file__).resolve().parents[1]
N_SAMPLES = 12


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random LLaVA-1.5 folder (fast; what is checked is bookkeeping, not findings)."""
    return offline.save("llava-v1.5-7b", tmp_path_factory.mktemp("m") / "tiny", tiny=True, layers=3)


def _cmd(model: Path, out: Path, batch: int = 2) -> list[str]:
    return ["-m", "helpers.sweep", "--model", str(model), "--benchmark", "shapes", "--max-samples", str(N_SAMPLES),
            "--out", str(out), "--batch-size", str(batch), "--max-new-tokens", "2"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _assert_same(a: results.Results, b: results.Results, atol: float = 1e-5) -> None:
    cols = ["index", "sample_id", "prediction", "correct", "n_image_tokens", "n_region_tokens"]
    pd.testing.assert_frame_equal(a.table[cols], b.table[cols])
    assert a.scores.keys() == b.scores.keys()
    for name in a.scores:
        np.testing.assert_allclose(a.scores[name], b.scores[name], atol=atol, equal_nan=True, err_msg=name)


def test_killed_sweep_resumes_to_the_uninterrupted_results(tiny_model, tmp_path):
    """Kills a real sweep subprocess (SIGKILL) after its first part files, resumes it, compares."""
    full = tmp_path / "full"
    subprocess.run([sys.executable, *_cmd(tiny_model, full)], check=True, env=_env(), cwd=ROOT,
                   capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, *_cmd(tiny_model, killed)], env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list(killed.glob("part-*.parquet"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list(killed.glob("part-*.parquet")))
    assert 2 <= written < N_SAMPLES // 2, f"the kill should land mid-way, found {written} parts"
    subprocess.run([sys.executable, *_cmd(tiny_model, killed)], check=True, env=_env(), cwd=ROOT,
                   capture_output=True)
    a, b = results.read_dir(full), results.read_dir(killed)
    assert len(b) == N_SAMPLES and b.table["index"].tolist() == list(range(N_SAMPLES))
    _assert_same(a, b, atol=0)
    assert not list(killed.glob(".*tmp*")), "no temporary files are left behind"


def test_two_processes_give_the_one_process_results(tiny_model, tmp_path):
    """``accelerate launch`` with 2 CPU processes (torchrun + gloo) vs a single process."""
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, *_cmd(tiny_model, one, batch=3)], check=True, env=_env(), cwd=ROOT,
                   capture_output=True)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    done = subprocess.run([*launch, *_cmd(tiny_model, two, batch=3)], env=_env(), cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = {p.name.split("-")[1] for p in two.glob("part-*.parquet")}
    assert ranks == {"r0", "r1"}, "both processes wrote shards"
    _assert_same(results.read_dir(one), results.read_dir(two))


def test_results_round_trip_and_duplicates_are_refused(tmp_path):
    table = pd.DataFrame({"index": [1, 0], "sample_id": ["b", "a"], "correct": [True, False]})
    res = results.Results(table, {"weight": np.random.rand(2, 3, 4).astype(np.float32)}, {"model": "m"})
    path = results.write(res, tmp_path / "part-r0-000000.parquet")
    back = results.read(path)
    pd.testing.assert_frame_equal(back.table, table)
    np.testing.assert_array_equal(back.scores["weight"], res.scores["weight"])
    assert back.settings == {"model": "m"}
    merged = results.read_dir(tmp_path)
    assert merged.table["sample_id"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(merged.scores["weight"][0], res.scores["weight"][1])
    results.write(res, tmp_path / "part-r1-000000.parquet")
    with pytest.raises(ValueError, match="written twice"):
        results.read_dir(tmp_path)


def test_released_files_map_into_the_schema(tmp_path):
    torch.save(torch.rand(5, 32, 32), tmp_path / "imatt_sum.pt")
    torch.save(torch.rand(5, 32, 32), tmp_path / "imatt_concen.pt")
    res = results.load_released(tmp_path, model="llava-v1.5-7b", split="pope")
    assert len(res) == 5 and res.shape == (32, 32)
    assert set(res.scores) == {"weight", "concentration"}
    torch.save({"not": "a tensor"}, tmp_path / "spatt_sum.pt")
    with pytest.raises(Exception):  # noqa: B017 - a dict is neither a tensor nor a list of tensors
        results.load_released(tmp_path)


def test_released_files_refuse_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    torch.save(Evil(), tmp_path / "imatt_sum.pt")
    with pytest.raises(Exception, match="[Ww]eights only|weights_only|Unsupported"):
        results.load_released(tmp_path)


def test_out_of_memory_halves_the_batch_and_goes_on(monkeypatch, tmp_path):
    """``sweep.process`` on a fake extraction that runs out of memory above 2 samples per batch."""
    from helpers import extract, sweep

    calls = []

    def fake_run_batch(model, processor, batch, indices, keep_rows=False, **kwargs):
        calls.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        table = pd.DataFrame({"index": list(indices), "sample_id": [str(i) for i in indices], "correct": True})
        return SimpleNamespace(results=results.Results(table, {"weight": np.zeros((len(batch), 2, 2), np.float32)}),
                               rows=None)

    monkeypatch.setattr(extract, "run_batch", fake_run_batch)
    with pytest.warns(UserWarning, match="halving the batch size to 4"):
        final = sweep.process(None, None, list(range(10)), list(range(10)), tmp_path, 0, 8,
                              {"model_name": "fake"})
    assert final == 2 and calls[:3] == [8, 4, 2]
    assert results.read_dir(tmp_path).table["index"].tolist() == list(range(10))
