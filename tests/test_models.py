"""Registry, loading and the offline real-geometry builders, for each of the nine architectures."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from helpers import metrics, models, offline
from helpers.models import REGISTRY, ModelLoadError, NumericsError

NAMES = list(REGISTRY)
PROMPT = "<image>\nHow many circles are there within the rectangle?"


def _inputs(model, processor, sizes):
    """A left-padded batch: one image per size, one prompt each (different lengths)."""
    spec = models.spec_of(model)
    images = [Image.new("RGB", s, (40 * i + 20, 90, 160)) for i, s in enumerate(sizes)]
    texts = [spec.format_prompt(PROMPT + " Answer" * i) for i in range(len(sizes))]
    return processor(images=images, text=texts, return_tensors="pt", padding=True)


def _feature_counts(model, inputs) -> list[int]:
    """Number of image features the model produces per image."""
    kw = {k: v for k, v in inputs.items() if k in ("pixel_values", "image_sizes")}
    with torch.no_grad():
        out = model.model.get_image_features(**kw)
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    if isinstance(feats, (list, tuple)):
        return [f.reshape(-1, f.shape[-1]).shape[0] for f in feats]
    return [feats.shape[1]] * feats.shape[0]


def test_registry_has_the_papers_nine_models():
    assert len(REGISTRY) == 9
    for spec in REGISTRY.values():
        assert spec.heads % spec.kv_heads == 0
        assert spec.hidden_size == spec.heads * spec.head_dim
        assert "{prompt}" in spec.prompt_template
        early, middle, late = spec.stages
        assert early.start == 0 and late.stop == spec.layers and early.stop == middle.start
        assert (spec.image_tokens is None) == (spec.architecture == "llava_next")


def test_stage_bounds_follow_the_released_code():
    assert metrics.stage_bounds(32) == (10, 20)
    assert metrics.stage_bounds(40) == (13, 27)
    assert metrics.stage_bounds(6) == (2, 4)


@pytest.mark.parametrize("name", NAMES)
def test_offline_config_matches_registry_geometry(name):
    spec = REGISTRY[name]
    config = offline.build_config(name)
    text = config.text_config
    assert config.model_type == spec.architecture
    assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim, text.hidden_size) == (
        spec.heads, spec.kv_heads, spec.head_dim, spec.hidden_size)
    assert text.intermediate_size == spec.intermediate_size
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (336, 14)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_real_geometry_generates_and_image_tokens_match_features(name):
    """Real attention geometry, 1 decoder layer, random weights: a square and a wide image in one batch.

    Seconds per architecture on 2 CPU cores (7B/13B-wide layers in fp32).
    """
    model, processor = offline.build(name)
    inputs = _inputs(model, processor, [(336, 336), (500, 280)])
    n_tokens = (inputs.input_ids == model.config.image_token_id).sum(dim=1).tolist()
    assert n_tokens == _feature_counts(model, inputs)
    if REGISTRY[name].image_tokens is not None:
        assert n_tokens == [576, 576]
    else:
        assert n_tokens[0] != n_tokens[1], "anyres: the count depends on the image shape"
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape == (2, inputs.input_ids.shape[1] + 2)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_variant_saves_loads_and_generates(name, tmp_path):
    folder = offline.save(name, tmp_path / name, tiny=True, layers=2)
    model, processor = models.load(folder, device="cpu")
    assert models.spec_of(model).layers == 2
    assert models.spec_of(model).template == REGISTRY[name].template
    inputs = _inputs(model, processor, [(300, 400), (336, 336)])
    n_tokens = (inputs.input_ids == model.config.image_token_id).sum(dim=1).tolist()
    assert n_tokens == _feature_counts(model, inputs)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs.input_ids.shape[1] + 3


def test_4bit_path_runs_on_cpu_with_finite_logits(tmp_path):
    import bitsandbytes as bnb

    folder = offline.save("llava-v1.5-7b", tmp_path / "m", tiny=True, layers=2)
    model, processor = models.load(folder, quantization="4bit", device="cpu")
    layer = models.decoder_layers(model)[0]
    assert isinstance(layer.self_attn.q_proj, bnb.nn.Linear4bit)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.model.vision_tower.modules())
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.model.multi_modal_projector.modules())
    inputs = _inputs(model, processor, [(336, 336)])
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelLoadError, match="llava-v1.5-7b.*vip-llava-13b"):
        models.load("llava-v9-70b")


def test_original_format_checkpoint_points_to_hf_format():
    with pytest.raises(ModelLoadError, match="llava-v1.5-7b"):
        models.load("liuhaotian/llava-v1.5-7b")


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        models.load(tmp_path)


def test_4bit_without_cuda_says_what_to_do():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path is for machines without it")
    with pytest.raises(ModelLoadError, match="quantization=None"):
        models.load("llava-v1.5-7b", quantization="4bit", device="cuda")


def test_out_of_memory_while_loading_names_what_fits(monkeypatch, tmp_path):
    from transformers import AutoModelForImageTextToText

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", oom)
    monkeypatch.setattr(models, "resolve", lambda name: (REGISTRY["llava-v1.5-13b"], str(tmp_path)))
    with pytest.raises(ModelLoadError, match=r"4-bit ~\d+\.\d GiB"):
        models.load("llava-v1.5-13b", device="cpu")


def test_numerics_guard_says_what_to_change():
    models.check_finite(torch.zeros(2, 3))
    with pytest.raises(NumericsError, match="quantization='8bit'"):
        models.check_finite(torch.tensor([0.0, float("nan"), float("inf")]))


def test_memory_estimates_are_ordered():
    spec = REGISTRY["llava-v1.5-7b"]
    full, eight, four = (models.estimate_gib(spec, q) for q in (None, "8bit", "4bit"))
    assert 12 < full < 15 and four < eight < full and 3 < four < 5.5
