"""Issue 17 (scientific validity): each test here failed on the code before the fix.

Concentration and effective tokens, sinks, split-half reliability, ties, the analysed row, pad-to-square,
mean ablation.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import agreement, metrics
from helpers.results import Results


def _rows_spread(m: int, n_image: int, keys: int | None = None) -> torch.Tensor:
    """One row ``[1, 1, 1, keys]``: attention spread evenly over the first ``m`` of ``n_image`` image tokens."""
    keys = keys or n_image + 4
    row = torch.zeros(1, 1, 1, keys)
    row[..., 4:4 + m] = 1.0 / m
    return row


# ---------------------------------------------------------------------------------------------
# 1. Concentration


def test_effective_tokens_do_not_depend_on_the_image_token_count():
    """A head spread over 10 patches: C differs between 576 and 2,340 image tokens, exp(H) is 10 for both."""
    out = {}
    for n in (576, 2340):
        rows = _rows_spread(10, n)
        image = torch.zeros(n + 4, dtype=torch.bool)
        image[4:] = True
        out[n] = (float(metrics.concentration(rows, image)), float(metrics.effective_tokens(rows, image)))
    assert out[576][0] == pytest.approx(1 - math.log(10) / math.log(576), abs=1e-6)  # 0.64
    assert out[2340][0] == pytest.approx(1 - math.log(10) / math.log(2340), abs=1e-6)  # 0.70
    assert out[576][1] == pytest.approx(10) and out[2340][1] == pytest.approx(10)


def test_per_head_concentration_is_weighted_by_image_weight():
    """Sample 0 barely looks at the image (W = 0.001, C = 1); sample 1 does (W = 0.9, C = 0.1): the head's
    concentration is that of sample 1, not the plain mean 0.55."""
    table = pd.DataFrame({"index": [0, 1], "correct": [True, True]})
    scores = {"weight": np.array([0.001, 0.9], np.float32).reshape(2, 1, 1),
              "concentration": np.array([1.0, 0.1], np.float32).reshape(2, 1, 1)}
    res = Results(table, scores, {"model_name": "m"})
    assert res.per_head("concentration")[0, 0] == pytest.approx((0.001 * 1 + 0.9 * 0.1) / 0.901, abs=1e-5)
    assert res.per_head("concentration", weighted=False)[0, 0] == pytest.approx(0.55)


def test_concentration_can_leave_out_positions():
    """``exclude`` (e.g. LLaVA-NeXT newline tokens) removes keys from V."""
    rows = _rows_spread(2, 8)
    image = torch.zeros(12, dtype=torch.bool)
    image[4:] = True
    newline = torch.tensor([10, 11])
    assert float(metrics.effective_tokens(rows, image, exclude=newline)) == pytest.approx(2)
    assert float(metrics.concentration(rows, image, exclude=newline)) == pytest.approx(1 - math.log(2) / math.log(6))


# ---------------------------------------------------------------------------------------------
# 2. Sinks


def test_weight_relative_to_uniform_and_sinks_left_out():
    """8 of 12 visible keys are image tokens; one image token (a sink) takes 0.5."""
    rows = torch.zeros(1, 1, 1, 12)
    rows[..., 0] = 0.3  # first token
    rows[..., 4] = 0.5  # sink image token
    rows[..., 5:12] = 0.2 / 7
    image = torch.zeros(12, dtype=torch.bool)
    image[4:] = True
    visible = torch.ones(1, 12, dtype=torch.bool)
    assert float(metrics.first_key_share(rows, visible)) == pytest.approx(0.3)
    assert float(metrics.weight_vs_uniform(rows, image, visible)) == pytest.approx(0.7 / (8 / 12))
    assert float(metrics.attention_weight(rows, image, exclude=torch.tensor([4]))) == pytest.approx(0.2)
    assert float(metrics.weight_vs_uniform(rows, image, visible, exclude=torch.tensor([4]))) == pytest.approx(
        0.2 / (7 / 12))


def test_first_key_share_with_left_padding_and_a_prompt_only_mask():
    """Left-padded sample: the first visible key is the first real token; a prompt-only mask (one key shorter
    than rows="answer" rows) is padded with True."""
    rows = torch.zeros(2, 1, 1, 6)
    rows[0, ..., 0] = 0.6
    rows[0, ..., 1:] = 0.08
    rows[1, ..., 2] = 0.7
    rows[1, ..., 3:] = 0.1
    visible = torch.tensor([[True] * 5, [False, False, True, True, True]])
    assert metrics.first_key_share(rows, visible).flatten().tolist() == pytest.approx([0.6, 0.7])


def test_sink_positions_found():
    rows = torch.full((1, 2, 3, 10), 0.05)
    rows[..., 6] = 0.55
    image = torch.zeros(10, dtype=torch.bool)
    image[2:] = True
    assert metrics.sink_positions(rows, image, factor=3)[0].tolist() == [6]


# ---------------------------------------------------------------------------------------------
# 3. Split-half reliability


def _res(maps: np.ndarray, name: str) -> Results:
    table = pd.DataFrame({"index": range(len(maps)), "correct": [True] * len(maps)})
    return Results(table, {"weight": maps.astype(np.float32)}, {"model_name": name, "dataset": "d"})


def test_split_half_reliability_is_spearman_brown_corrected_and_predicts_the_ceiling():
    """Two models with the *same* true map measured with noise: their full-sample maps correlate about
    sqrt(rel_a * rel_b) with the Spearman-Brown corrected reliabilities; the raw half-half r is too low."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(8, 8))
    n, noise = 40, 6.0
    a = truth + noise * rng.normal(size=(n, 8, 8))
    b = truth + noise * rng.normal(size=(n, 8, 8))
    ra, rb = _res(a, "a"), _res(b, "b")
    observed = agreement.compare(a.mean(0), b.mean(0))["pearson"]
    halves = [[agreement.split_half(r, "weight", only_correct=False, seed=s) for s in range(10)] for r in (ra, rb)]
    rel = [np.mean([h["reliability"] for h in hs]) for hs in halves]
    raw = [np.mean([h["pearson"] for h in hs]) for hs in halves]
    ceiling = agreement.noise_ceiling(*rel)
    assert abs(ceiling - observed) < 0.08, (ceiling, observed)
    assert math.sqrt(raw[0] * raw[1]) < observed - 0.1  # the uncorrected half-half r understates the ceiling
    assert agreement.spearman_brown(0.5) == pytest.approx(2 / 3)
    mats, pair_rows, _ = agreement.model_matrices([ra, rb], scores=("weight",))
    diag = mats["weight: pearson"].loc["a", "a"]
    assert diag == pytest.approx(agreement.split_half(ra, "weight", only_correct=False)["reliability"])
    assert "ceiling" in pair_rows and pair_rows["ceiling"].iloc[0] == pytest.approx(
        agreement.noise_ceiling(pair_rows["reliability_a"].iloc[0], pair_rows["reliability_b"].iloc[0]))


# ---------------------------------------------------------------------------------------------
# 4. Ties


def test_ties_are_broken_at_random_with_a_seed_and_counted():
    """Four heads tie for first, one in each layer: the old (layer, head) order always picked layer 0."""
    scores = torch.zeros(4, 3)
    scores[:, 1] = 1.0
    firsts = {metrics.top_heads(scores, 1, seed=s)[0] for s in range(20)}
    assert len(firsts) > 1 and firsts <= {(layer, 1) for layer in range(4)}
    assert metrics.top_heads(scores, 2, seed=3) == metrics.top_heads(scores, 2, seed=3)
    assert metrics.top_heads(scores, 1, tie_break="order") == [(0, 1)]
    ties = metrics.ranking_ties(scores, 2)
    assert ties == {"cutoff": 1.0, "tied": 4, "tied_in_top": 2, "tied_first": 4}


def test_jaccard_diagonal_is_labelled_and_a_map_against_itself_is_one():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(12, 4, 4))
    res = _res(maps, "m")
    other = _res(maps + rng.normal(size=maps.shape), "n")
    mats, _, _ = agreement.model_matrices([res, other], scores=("weight",))
    jac = mats["weight: top-k jaccard"]
    assert "half" in jac.attrs["diagonal"]  # split-half, not the model against itself
    flat = torch.zeros(4, 4)  # all tied: the same map must still select the same heads
    assert metrics.topk_jaccard(flat, flat.clone(), 3) == 1.0
    assert agreement.compare(maps.mean(0), maps.mean(0))["jaccard"] == 1.0


# ---------------------------------------------------------------------------------------------
# 7. Masking: mean ablation; layer-matched random control offered with the stage-matched one


@pytest.fixture(scope="module")
def tiny_llava():
    from helpers import offline

    return offline.build("llava-v1.5-7b", tiny=True, layers=2)


def _batch(processor, spec):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, s, dtype=np.uint8)) for s in [(60, 80, 3), (50, 50, 3)]]
    prompts = [spec.format_prompt("<image>\nhow many red circles ?"), spec.format_prompt("<image>\nwhat shape ?")]
    return dict(processor(images=images, text=prompts, return_tensors="pt", padding=True, padding_side="left"))


def test_mean_ablation_replaces_a_head_output_by_its_reference_mean(tiny_llava):
    from helpers import capture
    from helpers.models import decoder_layers

    model, processor = tiny_llava
    inputs = _batch(processor, model.vh_spec)
    with torch.no_grad(), capture.head_means(model) as ref:
        model(**inputs)
    means = ref.means
    layers, heads = len(decoder_layers(model)), model.config.text_config.num_attention_heads
    d = model.config.text_config.hidden_size // heads
    assert means.shape == (layers, heads, d)
    seen = {}
    o_proj = decoder_layers(model)[1].self_attn.o_proj
    hook = o_proj.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0].detach().clone()))
    try:
        with torch.no_grad(), capture.mask_heads(model, [(1, 2)], mode="mean", means=means):
            model(**inputs)
        masked = seen["x"].reshape(*seen["x"].shape[:2], heads, d)
        with torch.no_grad():
            model(**inputs)
        plain = seen["x"].reshape(*seen["x"].shape[:2], heads, d)
    finally:
        hook.remove()
    assert torch.allclose(masked[:, :, 2], means[1, 2].expand_as(masked[:, :, 2]), atol=1e-5)
    assert torch.allclose(masked[:, :, :2], plain[:, :, :2], atol=1e-5)  # other heads untouched
    real = inputs["attention_mask"].bool()
    assert torch.allclose(plain[:, :, 2][real].double().mean(0).float(), means[1, 2], atol=1e-4)  # the mean it used


def test_masking_conditions_offer_the_layer_matched_random_control():
    from helpers import ablation

    assert "random_layer" in ablation.CONDITIONS and "random" in ablation.CONDITIONS
    scores = -np.random.default_rng(0).random((6, 4))
    scores[0, 1], scores[2, 2], scores[4, 0] = 3.0, 2.0, 1.0
    sets = ablation.head_sets(scores, 3)
    top = sets["top"]
    assert sorted(lyr for lyr, _ in sets["random_layer"]) == sorted(lyr for lyr, _ in top)
    assert not set(sets["random_layer"]) & set(top)


# ---------------------------------------------------------------------------------------------
# 6. Preprocessing: pad to square with the mean colour (layout tests: tests/test_layout.py)


def test_registry_pads_llava_1_5_and_vip_llava_to_a_square_with_the_mean_colour():
    from PIL import Image

    from helpers import layout, offline
    from helpers.models import REGISTRY, configure_processor

    padded = {n for n, s in REGISTRY.items() if s.pad_to_square}
    assert padded == {"llava-v1.5-7b", "llava-v1.5-13b", "vip-llava-7b", "vip-llava-13b",
                      "llava-1.5-llama-3-8b", "llava-1.5-phi-3-mini"}  # xtuner trained both on padded images
    proc = configure_processor(offline.build_processor("vip-llava-7b"), REGISTRY["vip-llava-7b"])
    assert proc.image_processor.do_pad and layout.image_geometry(proc, (240, 320)).layout == "pad"
    off = configure_processor(offline.build_processor("vip-llava-7b"), REGISTRY["vip-llava-7b"], pad_to_square=False)
    assert not getattr(off.image_processor, "do_pad", False) and layout.image_geometry(off, (240, 320)).layout == "crop"
    nxt = offline.build_processor("llava-v1.6-vicuna-7b")
    assert configure_processor(nxt, REGISTRY["llava-v1.6-vicuna-7b"]) is nxt
    with pytest.raises(ValueError, match="anyres"):
        configure_processor(nxt, REGISTRY["llava-v1.6-vicuna-7b"], pad_to_square=True)
    # the padding is the mean colour: after normalisation ~0 in every channel
    pixels = proc.image_processor(images=[Image.new("RGB", (320, 240), (200, 30, 90))],
                                  return_tensors="pt")["pixel_values"][0]
    assert pixels[:, :40].abs().max() < 0.02 and pixels[:, 300:].abs().max() < 0.02
    assert pixels[:, 100:200].abs().min() > 0.15  # the image itself


# ---------------------------------------------------------------------------------------------
# 5. The analysed row: the row that predicts the answer's first content token


@pytest.mark.parametrize("key", ["smollm2-135m", "gemma3-270m", "llama-style"])
def test_first_content_token_with_real_tokenizers(key):
    """SmolLM2 writes " 3" as ["Ġ", "3"], Gemma as ["▁", "3"], Llama (split digits) "3" as ["▁", "3"]: the
    analysed row is the one that predicts the digit, not the whitespace token."""
    from helpers import assemble, capture, offline

    tok = offline.build_llama_style_tokenizer() if key == "llama-style" else assemble.build_processor(key).tokenizer

    def ids(text):
        return tok(text, add_special_tokens=False).input_ids

    if key == "llama-style":  # the lone "▁" before a digit, as Llama / Vicuna tokenizers emit it
        assert tok.convert_ids_to_tokens(ids("3")) == ["▁", "3"]
    for text in (" 3", "\n3", " 12"):
        got = ids(text)
        i = capture.first_content_index(got, tok)
        assert i >= 1 and tok.decode(got[i:i + 1]).strip() == text.strip()[0], (key, text, got)
    assert capture.first_content_index(ids("yes"), tok) == 0
    eos = [tok.eos_token_id]
    assert capture.first_content_index(eos, tok) == 0  # an empty answer: the row that predicts its end
    assert capture.first_content_index(ids(" ") + eos, tok) == len(ids(" "))


class _SpaceTokenizer:
    """Decodes token ``space`` as " " and every other token as "x"."""

    def __init__(self, space):
        self.space = space

    def decode(self, ids, skip_special_tokens=False):
        return " " if list(ids) == [self.space] else "x"


def test_answer_row_is_the_row_that_predicts_the_first_content_token(tiny_llava):
    """Sample 0 answers (space, digit, ...), sample 1 (digit, ...): their analysed rows are generation steps 1 and 0.
    The old rule took step 1 (the first generated token's row) for both: on sample 1 that row predicts what
    follows the digit."""
    from helpers import capture

    model, processor = tiny_llava
    inputs = _batch(processor, model.vh_spec)
    space, digit = 7, 9
    plan = {0: [space, digit, digit, digit], 1: [digit, digit, digit, digit]}
    prompt = inputs["input_ids"].shape[1]

    def allowed(b, ids):
        return [plan[b][ids.shape[0] - prompt]]

    tok = _SpaceTokenizer(space)
    with torch.no_grad(), capture.attention(model, "answer", tokenizer=tok) as answer, \
            capture.attention(model, "generated") as generated:
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, prefix_allowed_tokens_fn=allowed)
    assert out[:, prompt:].tolist() == [plan[0][:3], plan[1][:3]]
    assert answer.answer_steps.tolist() == [1, 0]
    rows, gen = answer.rows, generated.rows
    assert rows.shape[-1] == prompt + 1
    assert torch.equal(rows[0], gen[0, 1, ..., :prompt + 1])
    assert torch.equal(rows[1, ..., :prompt], gen[1, 0, ..., :prompt]) and not rows[1, ..., prompt:].any()
    with pytest.raises(ValueError, match="tokenizer"):
        capture.attention(model, "answer")


def test_every_notebook_analyses_the_same_row():
    """One rule: every notebook's ROWS is "answer" (or None, which means "answer" for every model)."""
    import json
    import re
    from pathlib import Path

    from helpers import selection

    class _Toy:
        vh_spec = None

    assert selection.rows_for(_Toy()) == "answer"
    found = {}
    for path in sorted(Path(__file__).parent.parent.glob("notebooks/*.ipynb")):
        source = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        for m in re.finditer(r"^ROWS = (\S+)", source, re.M):
            found[path.name] = m.group(1)
    assert set(found.values()) <= {'"answer"', "None"}, found
    for path in sorted(Path(__file__).parent.parent.glob("notebooks/*.ipynb")):  # nor a row passed by hand
        source = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        assert not re.search(r"rows\s*=\s*[\"'](?!answer)", source), path.name
