"""benchmarks/peers.py and benchmarks/gpu.py: the code paths, at tiny size (no timings asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


peers = _module("peers")


@pytest.fixture(scope="module")
def tiny():
    model, processor = peers.build_model("LLaVA-1.6", layers=3, mlp_width=0, tiny=True)
    return model, processor, peers.prompt_inputs(model, processor)


def test_shared_layers_are_distinct_modules_with_one_set_of_weights(tiny):
    model, _, _ = tiny
    layers = model.model.language_model.layers
    assert len(layers) == 3 == model.config.text_config.num_hidden_layers
    assert [layer.self_attn.layer_idx for layer in layers] == [0, 1, 2]
    assert len({id(layer) for layer in layers}) == 3
    assert all(layer.self_attn.q_proj.weight is layers[0].self_attn.q_proj.weight for layer in layers)
    assert all(layer.self_attn.config is model.model.language_model.config for layer in layers)


def _rows(method: str, model, processor, batch) -> dict:
    with torch.no_grad():
        return peers.METHOD_BUILDERS[method](model, processor)(batch)


def test_methods_agree_with_eager(tiny):
    model, processor, batch = tiny
    ours = _rows("ours", model, processor, batch)  # before eager: the builders switch the model to eager
    eager = _rows("eager", model, processor, batch)
    keys = batch["input_ids"].shape[1]
    assert ours["prompt_end"].shape == (3, 4, keys) and ours["answer"].shape == (3, 4, keys + 1)
    assert ours["token"] == eager["token"]
    for name in ("prompt_end", "answer"):
        assert torch.allclose(ours[name], eager[name], atol=1e-5)
    for peer in ("nnsight", "transformer_lens"):
        if importlib.util.find_spec(peer) is None:
            continue
        rows = _rows({"nnsight": "nnsight", "transformer_lens": "tlens"}[peer], model, processor, batch)
        assert rows["token"] == eager["token"]
        for name in ("prompt_end", "answer"):
            assert torch.allclose(rows[name], eager[name], atol=1e-5), (peer, name)


def test_render_ratios_oom_and_projection(tmp_path):
    records = [{"kind": "machine", "date": "2026-01-01", "cpu": "test"}, {"kind": "setup", "threads": 2}]
    for layers, rise in ((2, 100.0), (8, 400.0)):
        for method, factor in (("plain", 1.0), ("ours", 1.0), ("eager", 4.0)):
            records.append(dict(kind="run", method=method, geometry="LLaVA-1.6", layers=layers, repeat=0, status="ok",
                                tokens=2400, wall_s=10.0 * factor, cpu_s=8.0 * factor, peak_mib=rise * factor,
                                base_mib=1000.0, answer_token=5, detail=""))
    records.append(dict(kind="run", method="eager", geometry="LLaVA-1.6", layers=16, repeat=0, status="oom",
                        detail="out of memory at the 12 GiB cap"))
    records.append({"kind": "diff", "geometry": "LLaVA-1.6", "layers": 2, "method": "ours", "reference": "eager",
                    "max_diff": 2e-7, "finite": True})
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    text = peers.render(path)
    assert "| 2 | eager `output_attentions=True` | 1 | 40.00 | 32.00 | 400 | 4.00 / 4.00 | 4.0x |" in text
    assert "| LLaVA-1.6 | 8 | 1.000 / 1.000 | 4.0x | eager `output_attentions=True` | +0 / +1200 |" in text
    assert "2.0e-07" in text
    # eager: 1000 + 400*(2..8) -> 200 MiB/layer*4 = 200 per layer; (24576 - 1000 - 0) / 200
    assert "| LLaVA-1.6 | eager `output_attentions=True` | 16 | 200 | ~118 (projected) |" in text


def test_fit_line():
    assert peers.fit_line([(2, 3.0), (8, 9.0)]) == pytest.approx((1.0, 1.0))
    assert peers.fit_line([(2, 3.0)]) is None


@pytest.mark.slow
def test_gpu_benchmark_dry_run_on_cpu(tmp_path):
    gpu = _module("gpu")
    out = tmp_path / "gpu.md"
    gpu.main(["--device", "cpu", "--layers", "2", "--dry-run", "--quantization", "none", "--geometries", "LLaVA-1.5",
              "--cache", str(tmp_path / "cache"), "--out", str(out)])
    text = out.read_text()
    assert "DRY RUN" in text and "capture overhead" in text and "batch 2" in text
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["LLaVA-1.5"]["memory"]["max_diff"] < 1e-4


def test_model_depth_of_an_organism_is_its_base_lms():
    """Organism folders carry no config.json: the depth comes from the base LM (30 and 18 layers)."""
    from helpers import env

    assert peers.model_depth(str(env.REPO_ROOT / "data" / "organisms" / "smollm2-lora")) == 30
    assert peers.model_depth(str(env.REPO_ROOT / "data" / "organisms" / "gemma3-frozen")) == 18
