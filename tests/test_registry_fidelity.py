"""Registry fidelity (issue 17): each model's registry values against public copies of its checkpoint's files.

``helpers.models.REGISTRY_CHECKS`` holds, per model and field, the value a public file shows and where
(``SOURCES``: ``owner/repo/path@commit``). These tests fail when either side changes: a registry value, a
recorded value, or what ``helpers.offline`` builds from the registry.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from helpers import models, offline
from helpers.models import CHECKED_FIELDS, REGISTRY, REGISTRY_CHECKS, SOURCES, registry_mismatches

NAMES = list(REGISTRY)
#: what a tiny build keeps of the real geometry (widths are narrowed on purpose)
TINY_KEEPS = {"architecture", "text_model_type", "vision.image_size", "vision.patch_size", "vision_feature_layer",
              "vision_feature_select_strategy", "image_grid_pinpoints", "rope_theta", "rms_norm_eps",
              "processor.size", "processor.crop_size", "processor.image_mean", "processor.image_std",
              "processor.patch_size", "processor.num_additional_image_tokens"}


def test_every_model_has_a_record_for_every_field_and_every_source_is_pinned():
    assert set(REGISTRY_CHECKS) == set(REGISTRY)
    for name, checks in REGISTRY_CHECKS.items():
        assert {c.field for c in checks} == set(CHECKED_FIELDS), name
        assert len({c.field for c in checks}) == len(checks), f"{name}: one record per field"
        for c in checks:
            assert c.how in ("file", "derived", "not found"), (name, c)
            assert c.source in SOURCES, (name, c)
            if c.how == "not found":
                assert c.value is None and c.source == "none" and c.note, (name, c)
            else:
                assert c.source != "none", (name, c)
    for key, where in SOURCES.items():
        if key not in ("none", "transformers:defaults"):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+/\S+@[0-9a-f]{40}", where), (key, where)


@pytest.mark.parametrize("name", NAMES)
def test_registry_agrees_with_the_public_files(name):
    assert registry_mismatches(name) == []


@pytest.mark.parametrize("name", NAMES)
def test_offline_build_agrees_with_the_public_files(name):
    """The config and processor ``helpers.offline`` builds (no weights: cheap) against the same records."""
    config, processor = offline.build_config(name), offline.build_processor(name)
    assert registry_mismatches(name, config=config, processor=processor) == []


@pytest.mark.parametrize("name", ["llava-v1.5-7b", "llava-v1.6-mistral-7b", "vip-llava-7b"])
def test_tiny_offline_build_keeps_the_recorded_grid_and_feature_layers(name):
    config = offline.build_config(name, tiny=True)
    assert registry_mismatches(name, config=config, processor=offline.build_processor(name), only=TINY_KEEPS) == []


def test_values_derived_from_transformers_defaults_match_the_installed_transformers():
    """Records sourced ``transformers:defaults`` are the class defaults the converted configs leave out."""
    from transformers import LlamaConfig, LlavaConfig, LlavaNextConfig, Phi3Config, VipLlavaConfig

    def rope(c):
        return float((getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", 0)))

    llama, phi3, vision = LlamaConfig(), Phi3Config(), LlavaConfig().vision_config
    actual = {
        "rope_theta@llama": rope(llama),
        "vision": {k: getattr(vision, k) for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                                   "num_hidden_layers", "image_size", "patch_size")},
        "vision_feature_layer": LlavaNextConfig().vision_feature_layer,
        "vision_feature_select_strategy": LlavaNextConfig().vision_feature_select_strategy,
        "image_grid_pinpoints": [list(p) for p in LlavaNextConfig().image_grid_pinpoints],
        "vip_layers": list(VipLlavaConfig().vision_feature_layers),
        "phi3": {"layers": phi3.num_hidden_layers, "heads": phi3.num_attention_heads,
                 "kv_heads": phi3.num_key_value_heads, "hidden_size": phi3.hidden_size,
                 "intermediate_size": phi3.intermediate_size, "vocab_size": phi3.vocab_size,
                 "rope_theta": rope(phi3), "rms_norm_eps": phi3.rms_norm_eps, "head_dim": 3072 // 32},
    }
    seen = 0
    for name, checks in REGISTRY_CHECKS.items():
        for c in (c for c in checks if c.source == "transformers:defaults"):
            seen += 1
            if c.field.startswith("vision."):
                assert c.value == actual["vision"][c.field.split(".", 1)[1]], (name, c)
            elif name == "llava-1.5-phi-3-mini" and c.field in actual["phi3"]:
                assert c.value == actual["phi3"][c.field], (name, c)
            elif c.field == "rope_theta":
                assert c.value == actual["rope_theta@llama"], (name, c)
            elif c.field in ("vision_feature_layer", "vision_feature_select_strategy", "image_grid_pinpoints"):
                assert c.value == actual[c.field], (name, c)
            elif c.field in ("processor.patch_size", "processor.num_additional_image_tokens", "image_tokens"):
                assert c.value == {"processor.patch_size": vision.patch_size,
                                   "processor.num_additional_image_tokens": 1,
                                   "image_tokens": (vision.image_size // vision.patch_size) ** 2}[c.field]
            else:
                raise AssertionError(f"{name}: no installed default to compare {c.field} with")
    vip = {c.field: c.value for c in REGISTRY_CHECKS["vip-llava-7b"]}
    assert vip["vision_feature_layer"] == actual["vip_layers"]
    assert seen > 40


def test_the_checker_reports_a_changed_registry_value_a_changed_record_and_a_changed_build(monkeypatch):
    """It can fail: one registry value, one recorded value, one built value altered in turn."""
    name = "llava-v1.6-mistral-7b"
    monkeypatch.setitem(REGISTRY, name, replace(REGISTRY[name], kv_heads=32))
    found = registry_mismatches(name)
    assert len(found) == 1 and "kv_heads: registry has 32" in found[0] and "mistral-src-finetune" in found[0]
    monkeypatch.undo()

    checks = tuple(replace(c, value=5120) if c.field == "hidden_size" else c for c in REGISTRY_CHECKS[name])
    monkeypatch.setitem(REGISTRY_CHECKS, name, checks)
    assert [m.split(":")[1].strip() for m in registry_mismatches(name)] == ["hidden_size"]
    monkeypatch.undo()

    config = offline.build_config(name)
    config.vision_config.patch_size = 16
    found = registry_mismatches(name, config=config, processor=offline.build_processor(name))
    assert found == [f"{name}: vision.patch_size: built has 16, {SOURCES['transformers:defaults']} shows 14 "
                     "(derived)"]
    assert registry_mismatches(name) == []


def test_unchecked_fields_are_only_the_ones_no_public_copy_shows():
    assert models.unchecked_fields("llava-v1.5-7b") == []
    assert "layers" in models.unchecked_fields("llava-v1.5-13b")
    for name in NAMES:
        missing = {c.field for c in REGISTRY_CHECKS[name] if c.how == "not found"}
        assert set(models.unchecked_fields(name)) == missing
