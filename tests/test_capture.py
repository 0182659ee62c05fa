"""helpers.capture: rows exact against eager attention, output unchanged, head masking.

The nine-architecture tests run each registry model's real attention geometry (hidden size,
heads, head size, key/value heads, 576-token grid or LLaVA-NeXT anyres) with one decoder layer;
the other tests run the tiny models of ``helpers.offline.build(name, tiny=True)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import capture, offline
from helpers.models import REGISTRY, decoder_layers

ARCHS = list(REGISTRY)
ATOL = 1e-5


def two_prompt_batch(name: str, processor) -> dict[str, torch.Tensor]:
    """A left-padded batch: two prompts of different lengths, one image each (of different shapes).

    For LLaVA-NeXT the two images give different anyres token counts; the wide, flat shapes keep
    the count low (758 and 808 tokens with the prompt) for test time.
    """
    spec = REGISTRY[name]
    rng = np.random.default_rng(0)
    shapes = [(40, 1008, 3), (30, 336, 3)] if spec.architecture == "llava_next" else [(300, 400, 3), (200, 200, 3)]
    images = [Image.fromarray(rng.integers(0, 255, s, dtype=np.uint8)) for s in shapes]
    prompts = [spec.format_prompt("<image>\nhow many red circles are in the image ?"),
               spec.format_prompt("<image>\nwhat shape ?")]
    batch = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    lengths = batch["attention_mask"].sum(1)
    assert lengths[0] != lengths[1] and batch["attention_mask"][:, -1].all(), "want a left-padded batch"
    return dict(batch)


def real_attention_model(name: str):
    """``offline.build(name)``'s model with its real attention geometry, narrowed where attention does not look.

    Real: hidden size, heads, head size, key/value heads, RoPE, image grid and processor. Narrowed
    (they never enter the attention computation, and at full width a prefill took ~16 s on the
    2-core test machine): the MLP width (128) and the CLIP tower's width (64, same 24x24 grid).
    """
    from transformers import AutoModelForImageTextToText

    tokenizer = offline.build_tokenizer()
    config = offline.build_config(name, tokenizer=tokenizer)
    config.text_config.intermediate_size = 128
    for key, value in {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}.items():
        setattr(config.vision_config, key, value)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32, attn_implementation="sdpa").eval()
    spec = REGISTRY[name]
    assert model.config.text_config.num_key_value_heads == spec.kv_heads
    assert model.config.text_config.hidden_size == spec.heads * spec.head_dim == spec.hidden_size
    return model, offline.build_processor(name, tokenizer)


def eager_forward(model, batch: dict, ids: torch.Tensor):
    """Eager attention with ``output_attentions`` on ``ids`` (prompt + first generated token)."""
    lm = capture.language_model(model)
    mask = torch.cat([batch["attention_mask"], torch.ones_like(ids[:, -1:])], dim=1)
    lm.set_attn_implementation("eager")
    try:
        return model(**{**batch, "input_ids": ids, "attention_mask": mask}, output_attentions=True)
    finally:
        lm.set_attn_implementation("sdpa")


@pytest.fixture(scope="module", params=ARCHS)
def real_run(request):
    """Per architecture: a captured prefill + decoding step, the same decoding step without capture, and eager.

    The captured pass is what ``generate`` does (prefill, then one decoding step with the cache) so
    that full-position logits are available; generate itself is tested on the tiny models. The
    decoding step is repeated without capture on a copy of the cache (bit-identical logits
    expected); the eager forward over prompt + first token gives the reference rows and logits.
    Slow (~10-25 s per architecture on 2 shared cores): real-width attention over ~600-830 tokens x 2.
    """
    import copy

    name = request.param
    model, processor = real_attention_model(name)
    batch = two_prompt_batch(name, processor)
    with torch.no_grad():
        with capture.attention(model, "prompt_end") as end, capture.attention(model, "first_generated") as answer, \
                capture.attention(model, "generated") as generated:
            first = model(**batch, use_cache=True)
            impl = capture.language_model(model).config._attn_implementation
            cache = copy.deepcopy(first.past_key_values)
            token = first.logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([batch["attention_mask"], torch.ones_like(token)], dim=1)
            step = model(input_ids=token, attention_mask=mask, cache=first.past_key_values, use_cache=True)
        plain_step = model(input_ids=token, attention_mask=mask, cache=cache, use_cache=True)
        eager = eager_forward(model, batch, torch.cat([batch["input_ids"], token], dim=1))
    reference = torch.stack([a[:, :, -2:] for a in eager.attentions], dim=1)  # [B, L, H, 2, K]
    yield {"name": name, "batch": batch, "captured": first.logits, "eager_logits": eager.logits[:, :-1],
           "step": step.logits, "plain_step": plain_step.logits, "end": end.rows, "answer": answer.rows,
           "generated": generated.rows, "reference": reference, "impl": impl}
    del model


def test_prompt_end_rows_equal_eager(real_run):
    ref = real_run["reference"][..., 0, :-1]  # the last prompt row, over the prompt keys
    got = real_run["end"]
    assert got.dtype == torch.float32 and got.shape == ref.shape
    err = (got - ref).abs().max().item()
    print(f"{real_run['name']}: prompt_end max abs diff {err:.2e}")
    assert err <= ATOL
    pad = real_run["batch"]["attention_mask"] == 0
    assert pad.any() and all((got[b][..., pad[b]] == 0).all() for b in range(2))


def test_answer_rows_equal_eager(real_run):
    ref = real_run["reference"][..., 1, :]
    got = real_run["answer"]
    assert got.shape == ref.shape
    err = (got - ref).abs().max().item()
    print(f"{real_run['name']}: answer max abs diff {err:.2e}")
    assert err <= ATOL
    torch.testing.assert_close(got.sum(-1), torch.ones(got.shape[:-1]), atol=1e-5, rtol=0)


def test_generated_rows_are_the_steps(real_run):
    generated = real_run["generated"]
    assert generated.shape[1] == 2
    assert torch.equal(generated[:, 0, ..., :-1], real_run["end"])
    assert torch.equal(generated[:, 1], real_run["answer"])
    assert generated[:, 0, ..., -1].abs().max() == 0


def test_logits_unchanged_under_capture(real_run):
    """Decoding step: bit-identical to the same step without capture. Prefill: equal to eager's logits."""
    assert real_run["impl"].startswith("visual_heads_")
    assert torch.equal(real_run["step"], real_run["plain_step"])
    real = real_run["batch"]["attention_mask"].bool()
    err = (real_run["captured"][real] - real_run["eager_logits"][real]).abs().max().item()
    print(f"{real_run['name']}: prefill logits vs eager max abs diff {err:.2e}")
    assert err <= 1e-4


@pytest.mark.parametrize("name", ARCHS)
def test_logits_bit_identical_under_capture_tiny(tiny_models, name):
    """Every non-padding position of the batch: same logits with and without capture, and masking no head."""
    model, processor = tiny_models(name)
    batch = two_prompt_batch(name, processor)
    with torch.no_grad():
        plain = model(**batch).logits
        with capture.attention(model, "prompt_end"):
            captured = model(**batch).logits
        with capture.mask_heads(model, []):
            unmasked = model(**batch).logits
    real = batch["attention_mask"].bool()
    assert torch.equal(captured[real], plain[real])
    assert torch.equal(unmasked[real], plain[real])


# ---------------------------------------------------------------------------------------------
# Tiny models: generate, masking, restoring, errors


@pytest.fixture(scope="module")
def tiny_models():
    cache: dict[str, tuple] = {}

    def get(name: str, layers: int = 2):
        if (name, layers) not in cache:
            cache[(name, layers)] = offline.build(name, tiny=True, layers=layers)
        return cache[(name, layers)]

    return get


def test_generate_answer_and_prompt_end_equal_eager_generate(tiny_models):
    name = "llava-v1.6-mistral-7b"  # grouped-query attention, variable image token count
    model, processor = tiny_models(name)
    batch = two_prompt_batch(name, processor)
    lm = capture.language_model(model)
    with torch.no_grad():
        with capture.attention(model, "first_generated") as answer, capture.attention(model, "prompt_end") as end:
            ours = model.generate(**batch, max_new_tokens=3, do_sample=False)
        lm.set_attn_implementation("eager")
        try:
            ref = model.generate(**batch, max_new_tokens=3, do_sample=False, output_attentions=True,
                                 return_dict_in_generate=True)
        finally:
            lm.set_attn_implementation("sdpa")
    assert torch.equal(ours, ref.sequences)
    step0 = torch.stack([a[:, :, -1] for a in ref.attentions[0]], dim=1)
    step1 = torch.stack([a[:, :, -1] for a in ref.attentions[1]], dim=1)
    assert (end.rows - step0).abs().max() <= ATOL
    assert (answer.rows - step1).abs().max() <= ATOL
    assert answer.rows.shape == (2, 2, 4, batch["input_ids"].shape[1] + 1)


def test_answer_needs_a_decoding_step(tiny_models):
    model, processor = tiny_models("llava-v1.5-7b")
    batch = two_prompt_batch("llava-v1.5-7b", processor)
    with torch.no_grad(), capture.attention(model, "first_generated") as att:
        model.generate(**batch, max_new_tokens=1, do_sample=False)
    with pytest.raises(capture.CaptureError, match="max_new_tokens=2"):
        _ = att.rows


def test_second_call_in_one_context_is_an_error(tiny_models):
    model, processor = tiny_models("llava-v1.5-7b")
    batch = two_prompt_batch("llava-v1.5-7b", processor)
    with torch.no_grad(), pytest.raises(capture.CaptureError, match="new `with capture.attention"):
        with capture.attention(model, "prompt_end"):
            model(**batch)
            model(**batch)


def test_right_padded_batch_is_an_error(tiny_models):
    model, processor = tiny_models("llava-v1.5-7b")
    spec = REGISTRY["llava-v1.5-7b"]
    processor.tokenizer.padding_side = "right"
    try:
        batch = processor(images=[Image.new("RGB", (50, 40))] * 2, return_tensors="pt", padding=True,
                          text=[spec.format_prompt("<image>\nhow many red circles ?"), spec.format_prompt("<image>\nwhat ?")])
    finally:
        processor.tokenizer.padding_side = "left"
    assert not batch["attention_mask"][:, -1].all()
    with torch.no_grad(), pytest.raises(capture.CaptureError, match="padding_side = 'left'"):
        with capture.attention(model, "prompt_end"):
            model(**batch)
    assert capture.language_model(model).config._attn_implementation == "sdpa"


def test_restored_on_exception_and_registries_cleaned(tiny_models):
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model, _ = tiny_models("llava-v1.5-7b")
    lm = capture.language_model(model)
    vision = model.model.vision_tower.config._attn_implementation
    keys = set(ALL_ATTENTION_FUNCTIONS.valid_keys()), set(ALL_MASK_ATTENTION_FUNCTIONS.valid_keys())
    with pytest.raises(KeyError, match="boom"):
        with capture.attention(model, "first_generated"), capture.mask_heads(model, [(0, 1)]):
            assert lm.config._attn_implementation.startswith("visual_heads_")
            assert model.model.vision_tower.config._attn_implementation == vision
            raise KeyError("boom")
    assert lm.config._attn_implementation == "sdpa"
    assert (set(ALL_ATTENTION_FUNCTIONS.valid_keys()), set(ALL_MASK_ATTENTION_FUNCTIONS.valid_keys())) == keys


def test_bad_arguments_are_named(tiny_models):
    model, _ = tiny_models("llava-v1.5-7b")
    with pytest.raises(ValueError, match=r"\(layer 2, head 0\) is out of range.*2 decoder layers"):
        capture.mask_heads(model, [(0, 0), (2, 0)])
    with pytest.raises(ValueError, match=r"\(layer 1, head 4\) is out of range.*4 heads"):
        capture.mask_heads(model, [(1, 4)])
    with pytest.raises(ValueError, match="mode must be one of"):
        capture.mask_heads(model, [(0, 0)], mode="median")
    with pytest.raises(ValueError, match=r"mode='mean'\) needs means="):
        capture.mask_heads(model, [(0, 0)], mode="mean")
    with pytest.raises(ValueError, match="rows must be one of"):
        capture.attention(model, rows="last")


def _zero_o_proj_inputs(model, layer: int):
    """A pre-hook that zeroes ``layer``'s o_proj input: that layer's attention output removed."""
    o_proj = decoder_layers(model)[layer].self_attn.o_proj
    return o_proj.register_forward_pre_hook(lambda module, args: (torch.zeros_like(args[0]),))


@pytest.mark.parametrize("name", ARCHS)
def test_zero_mask_of_a_whole_layer_removes_its_attention(tiny_models, name):
    """Prefill and decoding: generate's logits at both steps equal those with the layer's o_proj input zeroed.

    Also: masking an empty set of heads leaves generate's logits bit-identical at both steps.
    """
    model, processor = tiny_models(name)
    batch = two_prompt_batch(name, processor)
    layer = 1
    n_heads = model.config.text_config.num_attention_heads
    kw = {"max_new_tokens": 2, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    with torch.no_grad():
        with capture.mask_heads(model, [(layer, h) for h in range(n_heads)], mode="zero"):
            masked = model.generate(**batch, **kw)
        hook = _zero_o_proj_inputs(model, layer)
        try:
            removed = model.generate(**batch, **kw)
        finally:
            hook.remove()
        plain = model.generate(**batch, **kw)
        with capture.mask_heads(model, [], mode="uniform"):
            empty = model.generate(**batch, **kw)
    for a, b in zip(masked.logits, removed.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(masked.logits[0], plain.logits[0], atol=1e-3)
    for a, b in zip(empty.logits, plain.logits, strict=True):
        assert torch.equal(a, b)


def test_uniform_mask_equals_hand_computed_mean_of_values(tiny_models):
    """Head (0, 2): o_proj's input slice is the mean of that head's values over the keys each query sees."""
    name = "llava-v1.6-mistral-7b"  # kv heads 1 of 4 here: head 2 reads key/value head 0
    model, processor = tiny_models(name)
    batch = two_prompt_batch(name, processor)
    attn = decoder_layers(model)[0].self_attn
    seen: dict[str, torch.Tensor] = {}
    hooks = [attn.register_forward_pre_hook(lambda m, a, k: seen.__setitem__("x", k["hidden_states"]),
                                            with_kwargs=True),
             attn.o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("o", a[0]))]
    try:
        with torch.no_grad(), capture.mask_heads(model, [(0, 2)]), capture.attention(model, "prompt_end") as att:
            model(**batch)
    finally:
        for h in hooks:
            h.remove()
    d = attn.head_dim
    groups = attn.num_key_value_groups
    with torch.no_grad():
        values = attn.v_proj(seen["x"])[..., (2 // groups) * d:(2 // groups + 1) * d]  # [B, T, D]
    out = seen["o"][..., 2 * d:3 * d]
    mask = batch["attention_mask"]
    for b in range(2):
        real = mask[b].nonzero().flatten()
        for t in [real[0].item(), real[len(real) // 2].item(), mask.shape[1] - 1]:
            keys = [j for j in real.tolist() if j <= t]
            expected = values[b, keys].mean(0)
            torch.testing.assert_close(out[b, t], expected, atol=1e-5, rtol=1e-5)
        row = att.rows[b, 0, 2]
        assert torch.allclose(row[real], torch.full((len(real),), 1 / len(real)), atol=1e-7)
        assert (row[mask[b] == 0] == 0).all()
    assert not torch.allclose(att.rows[0, 0, 1], att.rows[0, 0, 2])


def test_capture_on_a_4bit_model(tmp_path):
    """bitsandbytes NF4 on CPU (tiny widths are multiples of 64); bf16 compute, so eager's rows are bf16-rounded.

    Grouped-query attention is not combined with 4-bit here: bitsandbytes' CPU kernel needs output
    widths divisible by 32 and the tiny GQA models have 16-wide key/value projections.
    """
    pytest.importorskip("bitsandbytes")
    from helpers.models import bitsandbytes_problem, load

    if bitsandbytes_problem("cpu"):
        pytest.skip(f"bitsandbytes cannot run on this CPU: {bitsandbytes_problem('cpu')}")
    name = "llava-v1.5-7b"
    folder = offline.save(name, tmp_path / "m", tiny=True, layers=2)
    model, processor = load(folder, quantization="4bit", device="cpu", check=False)
    assert "Linear4bit" in type(decoder_layers(model)[0].self_attn.q_proj).__name__
    batch = two_prompt_batch(name, processor)
    with torch.no_grad():
        plain = model(**batch).logits
        with capture.attention(model, "prompt_end") as att:
            captured = model(**batch).logits
        lm = capture.language_model(model)
        lm.set_attn_implementation("eager")
        try:
            ref = model(**batch, output_attentions=True).attentions
        finally:
            lm.set_attn_implementation("sdpa")
    ref_rows = torch.stack([a[:, :, -1] for a in ref], dim=1).float()
    real = batch["attention_mask"].bool()
    assert torch.equal(captured[real], plain[real])
    assert att.rows.dtype == torch.float32
    err = (att.rows - ref_rows).abs().max().item()
    print(f"4-bit {name}: prompt_end rows vs eager (bf16) max abs diff {err:.2e}")
    # eager rounds the scores and the probabilities to bf16; our rows are float32 from the same bf16 q, k
    torch.testing.assert_close(att.rows, ref_rows, rtol=2e-2, atol=1e-5)


def test_a_model_in_eager_mode_keeps_eager_as_its_kernel(tiny_models):
    """Capture on top of eager (additive float masks): output bit-identical, rows equal output_attentions."""
    name = "llava-1.5-phi-3-mini"
    model, processor = tiny_models(name)
    batch = two_prompt_batch(name, processor)
    lm = capture.language_model(model)
    lm.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            plain = model(**batch, output_attentions=True)
            with capture.attention(model, "prompt_end") as att:
                captured = model(**batch).logits
        assert lm.config._attn_implementation == "eager"
    finally:
        lm.set_attn_implementation("sdpa")
    real = batch["attention_mask"].bool()
    assert torch.equal(captured[real], plain.logits[real])
    ref = torch.stack([a[:, :, -1] for a in plain.attentions], dim=1)
    assert (att.rows - ref).abs().max() <= ATOL
