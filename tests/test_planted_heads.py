"""Planted ground truth for the detection score: heads built to look at the box must rank on top.

A tiny random LLaVA-1.5 model (``helpers.offline.build``, 3 decoder layers x 4 heads) is given
images that are grey except a red box, on a wide 336x672 image (the processor's centre crop keeps
x in [168, 504)); the box is aligned to the 14-px patch grid of the crop. The vision tower is made
patch-local (attention ``out_proj`` and position embeddings zeroed), so every red patch has one
embedding and every grey patch another. In three chosen heads, one per layer, the query and key
projections are then set, by least squares on the layer's actual inputs, so that the last prompt
position's query times a region token's key is a large constant and times any other key about 0.
They use the rotary pair with the lowest frequency only, so relative position barely changes the
score (cos of at most 0.2 rad). Layers are planted bottom-up, each on the inputs that the planted
layers below produce.

Rows come from ``helpers.capture.attention(rows="prompt_end")``, region tokens from
``helpers.layout.region_mask`` and the score from ``helpers.metrics.detection_score``; the ranking
must put exactly the three planted heads on top. Batches are left-padded (questions differ in length).

Slower than 5 s (about 10-15 s on the shared 2-core CI machine): five forward passes of a 3-layer model
over 590-token prompts, which the planting needs (one per planted layer, plus the captured pass).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from helpers import capture, layout, metrics, offline

PLANTED = [(0, 1), (1, 3), (2, 0)]
H, W = 336, 672
BOXES = [(168 + 14 * 3, 14 * 5, 168 + 14 * 9, 14 * 11), (168 + 14 * 14, 14 * 12, 168 + 14 * 20, 14 * 18),
         (168 + 14 * 1, 14 * 17, 168 + 14 * 7, 14 * 23), (168 + 14 * 10, 14 * 1, 168 + 14 * 16, 14 * 7)]
QUESTIONS = ["how many circles are there ?", "what colour is the object in the box ?",
             "how many red squares are there in the image ?", "is there a triangle ?"]


def _image(box) -> Image.Image:
    pixels = np.full((H, W, 3), 128, dtype=np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = (220, 30, 30)
    return Image.fromarray(pixels)


def _inputs(processor, model):
    texts = [model.vh_spec.format_prompt(f"<image>\n{q}") for q in QUESTIONS]
    return processor(images=[_image(b) for b in BOXES], text=texts, return_tensors="pt", padding=True)


def _plant(model, inputs, region: torch.Tensor, scale: float = 12.0) -> None:
    """Set q/k of the PLANTED heads so that the last prompt row attends to the region tokens."""
    lm = model.model.language_model
    d = lm.config.head_dim
    i = d // 2 - 1  # lowest-frequency rotary pair: dims (i, i + d/2)
    for layer, head in PLANTED:
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states[layer]
            attn = lm.layers[layer].self_attn
            x = lm.layers[layer].input_layernorm(hidden)  # [b, seq, hidden]
            real = inputs["attention_mask"].bool()
            keys_x, target = x[real], region[real].double() * scale
            w_k = torch.linalg.lstsq(keys_x.double(), target[:, None]).solution[:, 0]
            w_q = torch.linalg.lstsq(x[:, -1].double(), torch.full((x.shape[0], 1), scale, dtype=torch.float64)
                                     ).solution[:, 0]
            q_rows = slice(head * d, (head + 1) * d)
            kv_head = head // (attn.config.num_attention_heads // attn.config.num_key_value_heads)
            k_rows = slice(kv_head * d, (kv_head + 1) * d)
            attn.q_proj.weight[q_rows] = 0
            attn.k_proj.weight[k_rows] = 0
            attn.q_proj.weight[head * d + i] = w_q.float()
            attn.k_proj.weight[kv_head * d + i] = w_k.float()


def test_planted_heads_rank_first():
    model, processor = offline.build("llava-v1.5-7b", tiny=True, layers=3, seed=1)
    vision = model.model.vision_tower
    with torch.no_grad():
        vision.embeddings.position_embedding.weight.zero_()
        for layer in vision.encoder.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
    inputs = _inputs(processor, model)
    tid = layout.image_token_id(model)
    image = layout.image_token_mask(inputs["input_ids"], tid)
    region = layout.region_mask(inputs["input_ids"], tid, processor, [(H, W)] * len(BOXES), BOXES,
                                sample_ids=[f"planted-{j}" for j in range(len(BOXES))])
    assert (inputs["attention_mask"] == 0).any()  # left padding present
    assert region.sum(-1).tolist() == [36] * len(BOXES)

    _plant(model, inputs, region)
    with torch.no_grad(), capture.attention(model, rows="prompt_end") as att:
        model(**inputs)
    rows = att.rows
    assert rows.shape[:3] == (len(BOXES), 3, 4)
    correct = torch.ones(len(BOXES), dtype=torch.bool)
    for kw in ({"k": 0.05}, {"k": "region"}, {"top1": True}, {"k": 0.05, "among": "image"}):
        score = metrics.detection_score(rows, image, region, correct, **kw)
        assert set(metrics.top_heads(score, 3)) == set(PLANTED), (kw, score)
        assert min(score[h].item() for h in PLANTED) == 1.0
    score = metrics.detection_score(rows, image, region, correct, k="region")
    others = [score[lh].item() for lh in np.ndindex(3, 4) if lh not in PLANTED]
    print(f"planted k=region score 1.0, others max {max(others):.3f}")
    assert max(others) < 0.5
    share = metrics.aggregate(metrics.region_share(rows, region, image)).mean
    assert all(share[h] > 0.9 for h in PLANTED)
    assert metrics.stage_distribution(PLANTED, 3) == {"early": 1 / 3, "middle": 1 / 3, "late": 1 / 3}
