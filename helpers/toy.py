"""Toy model organisms: small LLaVA models trained on CPU on the synthetic shapes task.

    python -m helpers.toy build toy-a1            # train a committed model from its recipe
    python -m helpers.toy evaluate data/toy-a1    # held-out accuracy: box drawn, no box, blank image
    python -m helpers.toy card data/toy-a1        # held-out accuracy and masking experiment -> model card
    python -m helpers.toy train --decoder build/toy/decoder-a --out /tmp/x --steps 5   # ad hoc

Architecture (transformers ``LlavaForConditionalGeneration``, the real LLaVA-1.5 code path): a CLIP
vision tower (ViT, 14-pixel patches, 112-pixel images -> an 8x8 grid of 64 image tokens, 2 layers),
LLaVA's two-layer GELU projector, and a Llama decoder (default 6 layers x 8 heads of size 8).
Scenes come from :mod:`helpers.shapes` (one object per patch, 8 objects, counts 1-4).

Training, in three stages, each a function here, all seeded (same seeds, same weights on CPU):

1. :func:`pretrain` -- the family's *decoder*: the whole model trained on a text-only version of
   the task (the scene written as words, ``colour kind n`` per object, the exemplar in brackets),
   as a language model is pretrained before it meets images. Two families = two seeds.
2. :func:`pretrain_vision` -- the stand-in for CLIP pretraining: the vision tower (fresh, with the
   *connector seed*) learns with dense per-patch supervision which object each patch holds, how
   many objects of that type the image has, and whether the patch is boxed; it is then frozen,
   as LLaVA freezes CLIP. The decoder must still *find* the right image token (the boxed one,
   or one of the named type) and read it: that look-up is what the visual heads do.
3. :func:`finetune` -- the multimodal fine-tune: projector and decoder trained on rendered scenes
   with the paper's prompt, starting from the family's decoder. Two connector seeds / data mixes
   per family give the within-family pair (the paper's LLaVA-1.5 vs 1.6 style comparison).

Prompt: the paper's PointQA prompt in the vicuna_v1 template, ``USER: <image>\\n{Q} The exemplary
object is within the rectangle.\\nAnswer the question using a single word or phrase. ASSISTANT:``;
the loss is on the answer token and ``</s>``. A share of auxiliary questions (the boxed object's
colour or shape; counts of a colour or a kind) enriches the signal; they are never evaluated.
Scoring: the arg-max next token at the end of the prompt (= greedy decoding's first token) must be
the count. Chance for an image-blind model: 1/4 (counts uniform in 1..4). A model that reads the
whole image but not the box can do better: on the held-out scenes the count statistics (how many objects
of each type) predict 0.63 of the answers, and the type structure (the exemplar's type always has a
colour partner and a kind partner) 0.94 (:func:`statistics_baseline`, in every card). toy-a2 trains on
a mix with *balanced* scenes, where the count statistics predict nothing and the structure less
(:data:`RECIPES`).
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import ablation, data, extract, metrics, selection, shapes
from .env import DATA_DIR, REPO_ROOT
from .models import TEMPLATES, load
from .offline import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, build_tokenizer

PROMPT = ("<image>\n{question} The exemplary object is within the rectangle.\n"
          "Answer the question using a single word or phrase.")
TEMPLATE = "vicuna_v1"
EXTRA_WORDS = ("The Answer How What colour shape object this " + " ".join(shapes.words() + list(shapes.KINDS))).split()
AUX_KINDS = ("colour", "shape", "count_colour", "count_kind")


@dataclass
class ToyConfig:
    """Geometry and training settings of one toy model (saved in the model card)."""

    hidden: int = 64
    layers: int = 6
    heads: int = 8
    intermediate: int = 128
    vision_hidden: int = 64
    vision_layers: int = 2
    image_size: int = 112
    patch_size: int = 14
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.01
    visual_share: float = 0.75
    kind_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    aux_share: float = 0.2
    vision_steps: int = 2000
    vision_lr: float = 3e-3
    seed: int = 0
    scene: dict = field(default_factory=dict)  # extra helpers.shapes.make_scene arguments ...
    scene_share: float = 1.0  # ... used for this share of the scenes (the rest: make_scene's defaults)
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Building


def build_processor(cfg: ToyConfig) -> Any:
    """Word-level tokenizer (``helpers.offline.build_tokenizer``) and a CLIP processor at ``cfg.image_size``."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    tokenizer = build_tokenizer(EXTRA_WORDS)
    s = cfg.image_size
    image_processor = CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s},
                                         do_center_crop=True, image_mean=OPENAI_CLIP_MEAN,
                                         image_std=OPENAI_CLIP_STD, do_convert_rgb=True)
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=cfg.patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          image_token="<image>")


def build_model(cfg: ToyConfig, processor: Any, seed: int) -> Any:
    """A randomly initialised toy LLaVA (fp32, sdpa attention) from ``seed``."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<pad>", "<s>", "</s>", "<image>")}
    text = {"model_type": "llama", "hidden_size": cfg.hidden, "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads, "num_key_value_heads": cfg.heads,
            "head_dim": cfg.hidden // cfg.heads, "intermediate_size": cfg.intermediate,
            "vocab_size": len(tok), "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
            "pad_token_id": ids["<pad>"], "bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"],
            "tie_word_embeddings": False}
    vision = {"model_type": "clip_vision_model", "image_size": cfg.image_size, "patch_size": cfg.patch_size,
              "hidden_size": cfg.vision_hidden, "intermediate_size": 2 * cfg.vision_hidden,
              "num_attention_heads": 4, "num_hidden_layers": cfg.vision_layers,
              "projection_dim": cfg.vision_hidden}
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_index=ids["<image>"],
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", tie_word_embeddings=False,
                         image_seq_length=(cfg.image_size // cfg.patch_size) ** 2)
    config.pad_token_id = ids["<pad>"]
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.config._attn_implementation = "sdpa"
    return model


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Sample:
    """One training or evaluation item."""

    scene: shapes.Scene
    kind: str  # general | object | super
    visual: bool  # box drawn
    question: str
    answer: str


def aux_question(scene: shapes.Scene, kind: str) -> tuple[str, str]:
    """Auxiliary training questions (not evaluated): the boxed object's colour or shape, and counts
    of one colour or one kind over the image. They give the connector and the box look-up a denser
    learning signal than the counting answer alone (a curriculum; see :class:`ToyConfig.aux_share`)."""
    t = scene.shapes[scene.target]
    if kind == "colour":
        return "What colour is this object?", t.colour
    if kind == "shape":
        return "What shape is this object?", t.kind
    if kind == "count_colour":
        return f"How many {t.colour} shapes are there?", str(sum(s.colour == t.colour for s in scene.shapes))
    if kind == "count_kind":
        return f"How many {t.kind}s are there?", str(sum(s.kind == t.kind for s in scene.shapes))
    raise ValueError(f"unknown auxiliary question kind {kind!r}; known: {AUX_KINDS}")


def make_samples(rng: np.random.Generator, n: int, image_size: int, visual_share: float = 1.0,
                 kind_weights: tuple[float, float, float] = (1.0, 1.0, 1.0), aux_share: float = 0.0,
                 scene_args: dict | None = None, scene_share: float = 1.0) -> list[Sample]:
    """``n`` samples: a scene each, a question kind drawn by ``kind_weights`` (general, object,
    super), box drawn with probability ``visual_share``; a share ``aux_share`` of the samples asks
    an auxiliary question instead (:func:`aux_question`, box always drawn). ``scene_args``: extra
    arguments of :func:`helpers.shapes.make_scene` (e.g. ``{"group_counts": (1, 2, 3, 4)}``)."""
    p = np.asarray(kind_weights, float) / sum(kind_weights)
    out = []
    for _ in range(n):
        use = bool(scene_args) and (scene_share >= 1 or rng.random() < scene_share)
        scene = shapes.make_scene(rng, size=(image_size, image_size), **(scene_args if use else {}))
        if rng.random() < aux_share:
            kind = AUX_KINDS[rng.integers(len(AUX_KINDS))]
            q, a = aux_question(scene, kind)
            out.append(Sample(scene, kind, True, q, a))
            continue
        kind = shapes.QUESTION_KINDS[rng.choice(3, p=p)]
        visual = bool(rng.random() < visual_share)
        q, a = shapes.questions(scene)[kind]
        out.append(Sample(scene, kind, visual, q, a))
    return out


def prompt_text(question: str) -> str:
    """The full prompt string (template applied) for one question."""
    return TEMPLATES[TEMPLATE].format(prompt=PROMPT.format(question=question))


def scene_words(scene: shapes.Scene, mark: bool) -> str:
    """The scene as text for decoder pretraining: objects in reading order as ``colour kind n`` (``n``:
    how many of that type the scene holds, what the vision tower reports per object), the
    exemplar in brackets when ``mark``."""
    W = scene.size[0]
    sizes = scene.group_sizes
    order = sorted(range(len(scene.shapes)), key=lambda i: (scene.shapes[i].box[1] // (W // 4),
                                                            scene.shapes[i].box[0]))
    parts = []
    for i in order:
        s = scene.shapes[i]
        w = f"{s.colour} {s.kind} {sizes[s.type]}"
        parts.append(f"( {w} )" if (mark and i == scene.target) else w)
    return " , ".join(parts)


def encode(processor: Any, samples: list[Sample], image: str = "scene", with_answer: bool = True
           ) -> dict[str, torch.Tensor]:
    """Tokenised batch. ``image``: ``"scene"`` (render, box per sample), ``"blank"`` (white image),
    or ``"text"`` (no image; the scene written as words replaces ``<image>``, for pretraining).

    With ``with_answer`` the answer token and ``</s>`` are appended and ``labels`` mark them
    (left padding keeps them in the last two columns). Returns ``input_ids [B, T]``,
    ``attention_mask [B, T]``, ``labels [B, T]`` and ``pixel_values [B, 3, S, S]`` (not for text).
    """
    tok = processor.tokenizer
    if image == "text":
        texts = [prompt_text(s.question).replace("<image>", scene_words(s.scene, s.visual)) for s in samples]
        batch = dict(tok(texts, return_tensors="pt", padding=True))
    else:
        if image == "scene":
            images = [shapes.render(s.scene, draw_box=s.visual) for s in samples]
        elif image == "blank":
            images = [Image.new("RGB", s.scene.size, shapes.BACKGROUND) for s in samples]
        else:
            raise ValueError(f"image must be 'scene', 'blank' or 'text', got {image!r}")
        batch = dict(processor(text=[prompt_text(s.question) for s in samples], images=images,
                               return_tensors="pt", padding=True))
    if with_answer:
        answers = torch.tensor([[tok.convert_tokens_to_ids(s.answer), tok.eos_token_id] for s in samples])
        batch["input_ids"] = torch.cat([batch["input_ids"], answers], 1)
        batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(answers)], 1)
        labels = torch.full_like(batch["input_ids"], -100)
        labels[:, -2:] = answers
        batch["labels"] = labels
    return batch


# ---------------------------------------------------------------------------------------------
# Training


def _lr_at(step: int, cfg: ToyConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train_loop(model: Any, processor: Any, cfg: ToyConfig, image: str, log_every: int = 50,
               eval_every: int = 0) -> list[float]:
    """AdamW with warm-up and cosine decay on freshly generated samples (seeded by ``cfg.seed``).

    Returns the loss of every step. Deterministic on CPU for a given config.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    model.train()
    losses = []
    t0 = time.time()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        samples = make_samples(rng, cfg.batch_size, cfg.image_size, cfg.visual_share, cfg.kind_weights,
                               cfg.aux_share, cfg.scene, cfg.scene_share)
        batch = encode(processor, samples, image=image)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == cfg.steps - 1):
            print(f"step {step:5d}  loss {np.mean(losses[-log_every:]):.4f}  {time.time() - t0:6.1f}s", flush=True)
        if eval_every and (step + 1) % eval_every == 0:
            ev = evaluate(model, processor, n=96, image=image)
            print(f"step {step:5d}  held-out accuracy {ev['accuracy']:.3f} {ev['per_kind']}", flush=True)
            model.train()
    model.eval()
    return losses


def patch_labels(scene: shapes.Scene, grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-patch targets for vision pretraining, ``[grid*grid]`` each, at the patch holding each
    shape's centre: object type (0 = empty, 1 + index in kinds x colours), how many shapes of
    that type the image holds (0 = empty), and 1 where the exemplary object is."""
    types = [(k, c) for k in shapes.KINDS for c in shapes.COLOURS]
    W, H = scene.size
    kind = np.zeros(grid * grid, np.int64)
    count = np.zeros(grid * grid, np.int64)
    frame = np.zeros(grid * grid, np.float32)
    sizes = scene.group_sizes
    for i, sh in enumerate(scene.shapes):
        x, y = (sh.box[0] + sh.box[2]) / 2, (sh.box[1] + sh.box[3]) / 2
        cell = int(y * grid // H) * grid + int(x * grid // W)
        kind[cell] = 1 + types.index(sh.type)
        count[cell] = sizes[sh.type]
        frame[cell] = float(i == scene.target)
    return kind, count, frame


def pretrain_vision(model: Any, processor: Any, cfg: ToyConfig, seed: int) -> dict:
    """Stage 0, the stand-in for CLIP pretraining: train the vision tower, with a throw-away MLP
    read-out on each patch token, to tell which object lies in the patch, how many objects of that
    type the image holds, and whether the patch is boxed (dense per-patch supervision,
    ``cfg.vision_steps`` steps of 16 images). The tower is then frozen, as LLaVA freezes CLIP.
    Returns held-out per-patch accuracies on occupied patches."""
    import torch.nn.functional as F

    grid = cfg.image_size // cfg.patch_size
    n_types = 1 + len(shapes.KINDS) * len(shapes.COLOURS)
    max_count = 17
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tower = model.model.vision_tower
    dim = tower.config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(dim, 128), torch.nn.GELU(), torch.nn.Linear(128, n_types + max_count + 1))
    opt = torch.optim.AdamW(list(tower.parameters()) + list(head.parameters()), lr=cfg.vision_lr)

    def batch(r: np.random.Generator, n: int) -> tuple[torch.Tensor, ...]:
        scenes = [shapes.make_scene(r, size=(cfg.image_size, cfg.image_size),
                                    **(cfg.scene if cfg.scene and r.random() < cfg.scene_share else {}))
                  for _ in range(n)]
        visual = r.random(n) < cfg.visual_share
        images = [shapes.render(sc, draw_box=bool(v)) for sc, v in zip(scenes, visual, strict=True)]
        pv = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        labels = [patch_labels(sc, grid) for sc in scenes]
        kind, count, frame = (torch.tensor(np.stack([lab[i] for lab in labels])) for i in range(3))
        return pv, kind, count, frame * torch.tensor(visual, dtype=torch.float32)[:, None]

    def outputs(pv: torch.Tensor) -> torch.Tensor:
        return head(tower(pv).last_hidden_state[:, 1:])  # [B, grid*grid, n_types + max_count + 1]

    tower.train()
    for step in range(cfg.vision_steps):
        for g in opt.param_groups:
            g["lr"] = cfg.vision_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.vision_steps)))
        pv, kind, count, frame = batch(rng, 16)
        o = outputs(pv)
        loss = (F.cross_entropy(o[..., :n_types].reshape(-1, n_types), kind.reshape(-1))
                + F.cross_entropy(o[..., n_types:-1].reshape(-1, max_count), count.reshape(-1))
                + F.binary_cross_entropy_with_logits(o[..., -1], frame))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(opt.param_groups[0]["params"], 1.0)
        opt.step()
        if step % 250 == 0:
            print(f"vision step {step:5d}  loss {loss.item():.4f}", flush=True)
    tower.eval()
    with torch.no_grad():
        pv, kind, count, frame = batch(np.random.default_rng(HELD_OUT_SEED), 64)
        o = outputs(pv)
    occ = kind > 0
    tower.requires_grad_(False)
    return {"type": float((o[..., :n_types].argmax(-1)[occ] == kind[occ]).float().mean()),
            "count": float((o[..., n_types:-1].argmax(-1)[occ] == count[occ]).float().mean()),
            "box": float(((o[..., -1] > 0) == (frame > 0.5))[occ].float().mean())}


def pretrain(cfg: ToyConfig, out: Path) -> Path:
    """Phase 1: train a family's decoder on the text-only task; save the whole model to ``out``."""
    processor = build_processor(cfg)
    model = build_model(cfg, processor, seed=cfg.seed)
    t0 = time.time()
    train_loop(model, processor, cfg, image="text")
    acc = evaluate(model, processor, n=150, image="text")
    _save(model, processor, out, {"phase": "text pretraining", "config": asdict(cfg),
                                   "seconds": round(time.time() - t0, 1), "text_accuracy": acc})
    return out


def finetune(cfg: ToyConfig, decoder: Path | None, out: Path, connector_seed: int, name: str, family: str,
             card: bool = True, eval_every: int = 0, eval_n: int = 300) -> tuple[Any, Any, dict]:
    """Phase 2: a fresh vision tower and projector (``connector_seed``) on ``decoder``'s language model:
    :func:`pretrain_vision`, then everything trained on rendered scenes (:func:`train_loop`).
    Saves a loadable folder with ``visual_heads.json``, ``training.json`` and a model card."""
    processor = build_processor(cfg)
    model = build_model(cfg, processor, seed=connector_seed)
    if decoder is not None:
        from safetensors.torch import load_file

        state = load_file(str(Path(decoder) / "model.safetensors"))
        lm = {k: v for k, v in state.items() if ".language_model." in k or k.startswith("lm_head")}
        missing = model.load_state_dict(lm, strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"decoder {decoder} has keys this config lacks: {missing.unexpected_keys[:3]}")
    t0 = time.time()
    vision_acc = pretrain_vision(model, processor, cfg, seed=connector_seed)
    print(f"vision pretraining: held-out per-patch accuracy {vision_acc}", flush=True)
    train_loop(model, processor, cfg, image="scene", eval_every=eval_every)
    seconds = time.time() - t0
    meta = {"name": name, "family": family, "template": TEMPLATE, "decoder": _repo_relative(decoder),
            "connector_seed": connector_seed, "config": asdict(cfg), "train_seconds": round(seconds, 1),
            "vision_pretraining_patch_accuracy": vision_acc}
    add_decoder_meta(meta)
    if card:
        meta["evaluation"] = full_evaluation(model, processor, eval_n)
    _save(model, processor, out, meta)
    if card:
        write_card(out, meta)
    return model, processor, meta


def _repo_relative(path: Path | str | None) -> str | None:
    """``path`` relative to the repository root when inside it (so cards name no machine paths)."""
    if path is None:
        return None
    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(path)


def add_decoder_meta(meta: dict) -> dict:
    """Copy the decoder pretraining's seed, steps, time and text accuracy into a model's ``meta``."""
    folder = REPO_ROOT / (meta.get("decoder") or "-")
    if (folder / "training.json").is_file():
        dmeta = json.loads((folder / "training.json").read_text())
        meta.update(decoder_seed=dmeta["config"]["seed"], decoder_steps=dmeta["config"]["steps"],
                    decoder_seconds=dmeta["seconds"], decoder_text_accuracy=dmeta["text_accuracy"]["accuracy"])
    return meta


def _save(model: Any, processor: Any, out: Path, meta: dict) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    if "name" in meta:
        write_registry_entry(out, meta, model.config.text_config)


def write_registry_entry(out: Path, meta: dict, text_config: Any) -> None:
    """``visual_heads.json``: what ``helpers.models.load`` reads for a local folder (name, family, template, note)."""
    note = (f"toy model trained on synthetic shapes (helpers.toy); held-out accuracy "
            f"{meta.get('evaluation', {}).get('visual', {}).get('accuracy', float('nan')):.3f}, chance 0.25")
    (Path(out) / "visual_heads.json").write_text(json.dumps(
        {"name": meta["name"], "family": meta["family"], "template": TEMPLATE, "note": note,
         "backbone": f"toy Llama {text_config.num_hidden_layers}x{text_config.num_attention_heads}"}, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Evaluation

HELD_OUT_SEED = 1_000_003


def held_out(n: int, image_size: int = 112, visual: bool = True, seed: int = HELD_OUT_SEED) -> list[Sample]:
    """A fixed held-out set (seed disjoint from training seeds): question kinds cycle general/object/super."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        scene = shapes.make_scene(rng, size=(image_size, image_size))
        kind = shapes.QUESTION_KINDS[i % 3]
        q, a = shapes.questions(scene)[kind]
        out.append(Sample(scene, kind, visual, q, a))
    return out


def as_samples(samples: list[Sample], image: str = "scene") -> list[data.Sample]:
    """The toy samples as :class:`helpers.data.Sample`, which :mod:`helpers.extract` runs: the scene rendered
    without the box (:func:`helpers.data.draw_boxes` draws it for visual prompts exactly as
    :func:`helpers.shapes.render` does), the toy prompt (:data:`PROMPT`), the box as the region.
    ``image="blank"``: a white image of the scene's size and nothing drawn (no box, no region)."""
    if image not in ("scene", "blank"):
        raise ValueError(f"image must be 'scene' or 'blank', got {image!r}")
    out = []
    for i, s in enumerate(samples):
        scene = image == "scene"
        picture = shapes.render(s.scene, draw_box=False) if scene else Image.new("RGB", s.scene.size,
                                                                                 shapes.BACKGROUND)
        out.append(data.Sample(id=f"toy-{i}", image=picture, question=s.question, answer=s.answer,
                               prompt=PROMPT.format(question=s.question), benchmark="toy", answer_type="count",
                               boxes=(tuple(s.scene.box),) if scene else (), question_kind=s.kind,
                               prompt_kind="visual" if s.visual and scene else "plain"))
    return out


def predict(model: Any, processor: Any, samples: list[Sample], image: str = "scene",
            batch_size: int = 64) -> list[str]:
    """Greedy first answer token for each sample: :func:`helpers.extract.answers` (one new token) for scenes and
    blank images; for ``image="text"`` (the decoder pretraining's text-only task, which no LLaVA input
    carries) the arg-max at the last prompt position of :func:`encode`'s batch."""
    if image != "text":
        table = extract.answers(model, processor, as_samples(samples, image), batch_size=batch_size,
                                max_new_tokens=1)
        return table["prediction"].tolist()
    out: list[str] = []
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            logits = model(**encode(processor, samples[i:i + batch_size], image=image, with_answer=False)).logits
            out += processor.tokenizer.convert_ids_to_tokens(logits[:, -1].argmax(-1).tolist())
    return out


def evaluate(model: Any, processor: Any, n: int = 300, image: str = "scene", visual: bool = True,
             image_size: int | None = None) -> dict:
    """Accuracy on :func:`held_out` (``n`` samples): overall and per question kind.

    ``image="blank"`` replaces every image with a white one (the blind baseline); ``visual=False``
    leaves the box undrawn (plain prompt).
    """
    size = image_size or model.config.vision_config.image_size
    samples = held_out(n, size, visual)
    preds = predict(model, processor, samples, image=image)
    right = [p == s.answer for p, s in zip(preds, samples, strict=True)]
    per_kind = {k: float(np.mean([r for r, s in zip(right, samples, strict=True) if s.kind == k]))
                for k in shapes.QUESTION_KINDS}
    return {"accuracy": float(np.mean(right)), "n": n, "per_kind": per_kind, "chance": 0.25}


def full_evaluation(model: Any, processor: Any, n: int = 300) -> dict:
    """Held-out accuracy with the box drawn (visual), without it (plain), and on blank images, and
    what guesses from whole-image cues alone would reach on the same scenes (:func:`statistics_baseline`:
    ``"statistics"`` by group sizes, ``"structure"`` by the type structure)."""
    size = model.config.vision_config.image_size
    scenes = held_out(n, size)
    return {"visual": evaluate(model, processor, n), "plain": evaluate(model, processor, n, visual=False),
            "blank": evaluate(model, processor, n, image="blank"),
            "statistics": statistics_baseline(scenes, image_size=size, by="sizes"),
            "structure": statistics_baseline(scenes, image_size=size, by="structure")}


def scene_key(scene: shapes.Scene, by: str = "sizes") -> tuple:
    """What a guess from whole-image cues may use, without knowing which object is boxed.

    ``by="sizes"``: the sorted group sizes (how many objects of each type). ``by="structure"``: for
    each type present, its group size and how many other present types share its colour and its kind,
    sorted (colour and kind names do not matter). The exemplar's type always has a colour partner and a
    kind partner (:func:`helpers.shapes.make_scene`), so the structure often singles it out.
    """
    sizes = scene.group_sizes
    if by == "sizes":
        return tuple(sorted(sizes.values()))
    if by == "structure":
        return tuple(sorted((n, sum(o[1] == t[1] for o in sizes if o != t), sum(o[0] == t[0] for o in sizes if o != t))
                            for t, n in sizes.items()))
    raise ValueError(f"by must be 'sizes' or 'structure', got {by!r}")


def statistics_baseline(samples: list[Sample], image_size: int = 112, reference: int = 20000, seed: int = 7,
                        by: str = "sizes", scene_args: dict | None = None) -> float:
    """Accuracy on ``samples`` of the best guess from whole-image cues alone: each sample's
    :func:`scene_key` mapped to the most frequent answer among ``reference`` scenes of
    :func:`helpers.shapes.make_scene` (with ``scene_args``) that share the key (unseen keys: "1").

    On the 300 held-out default scenes: 0.63 by group sizes, 0.94 by structure (chance 0.25); on
    balanced scenes (``group_counts=(1, 2, 3, 4)``, same ``scene_args`` for the reference) about 0.25 and
    0.7. A lower bound on what whole-image routes offer a model that does not find the box: it ignores
    the question (object questions name the type) and the objects' positions.
    """
    rng = np.random.default_rng(seed)
    table: dict[tuple, np.ndarray] = {}
    for _ in range(reference):
        sc = shapes.make_scene(rng, size=(image_size, image_size), **(scene_args or {}))
        table.setdefault(scene_key(sc, by), np.zeros(17, int))[sc.count] += 1
    guess = [int(table[key].argmax()) if (key := scene_key(s.scene, by)) in table else 1 for s in samples]
    return float(np.mean([str(g) == s.answer for g, s in zip(guess, samples, strict=True)]))


def visual_head_scores(model: Any, processor: Any, n: int = 192, seed: int = HELD_OUT_SEED + 1,
                       rows: str = "prompt_end", k: float | int | str = 0.05, batch_size: int = 64,
                       correct_only: bool = True) -> np.ndarray:
    """Detection score of every head, ``[layers, heads]`` (:func:`helpers.extract.head_results`' ``region_hits``).

    Measured on ``n`` visual-prompt samples drawn with ``seed`` (disjoint from the accuracy set of
    :func:`held_out`), over the correctly answered ones (``correct_only=False``: over all). ``rows="prompt_end"`` (default here): the
    answers are single tokens, so the row that predicts the answer is the last prompt position;
    the paper's ``"answer"`` row (first generated token) would be the one predicting ``</s>``.
    """
    samples = as_samples(held_out(n, model.config.vision_config.image_size, True, seed=seed))
    res = extract.head_results(model, processor, samples, batch_size=batch_size, rows=rows, k=k,
                               max_new_tokens=extract.min_new_tokens(rows))
    return res.per_head("region_hits", only_correct=correct_only)


def masking_experiment(model: Any, processor: Any, ks: tuple[int, ...] = (2, 3, 4, 5, 6, 8), n: int = 300, draws: int = 10,
                       seed: int = 0, mode: str = "uniform", score_n: int = 192) -> dict:
    """Accuracy on :func:`held_out` with the top-``k`` visual heads masked (by :func:`visual_head_scores`)
    versus ``k`` random heads from the same stages (``draws`` draws of :func:`helpers.ablation.random_same_stage`,
    draw ``d`` seeded ``seed + k + 7919 * d``), for each ``k``: :func:`helpers.ablation.masking_curve`.

    Returns ``{"baseline": acc, "scores": [[...]], "k": {k: {"top_heads", "top", "random", "random_each",
    "extra_drop"}}}`` where ``extra_drop = mean(random) - top`` (in accuracy units). Head scores come
    from ``score_n`` samples disjoint from the ``n`` accuracy samples (no shared picture: checked,
    :func:`helpers.selection.check_disjoint`).
    """
    size = model.config.vision_config.image_size
    scores = visual_head_scores(model, processor, n=score_n)
    samples = as_samples(held_out(n, size, True))
    # the ranking scenes of visual_head_scores; ids (toy-0, ...) repeat across seeds, so compare pictures
    selection.check_disjoint(as_samples(held_out(score_n, size, True, seed=HELD_OUT_SEED + 1)), samples,
                             what="toy.masking_experiment: ranking vs held-out scenes", keys=("image",), pixels=True)
    curve = ablation.masking_curve(model, processor, samples, scores, ks=(0, *ks), conditions=("top", "random"),
                                   seed=seed, mode=mode, batch_size=64, max_new_tokens=1, random_draws=draws)
    accuracy = curve.groupby(["condition", "k", "draw"], sort=False)["correct"].mean()
    result: dict = {"baseline": float(accuracy["top", 0, 0]), "scores": scores.tolist(), "mode": mode, "n": n,
                    "k": {}}
    for k in ks:
        randoms = [float(accuracy["random", k, d]) for d in range(draws)]
        drawn = curve[(curve.condition == "random") & (curve.k == k)].drop_duplicates("draw")["heads"]
        acc_top = float(accuracy["top", k, 0])
        result["k"][k] = {"top_heads": metrics.top_heads(scores, k), "top": acc_top, "random": float(np.mean(randoms)),
                          "random_each": randoms, "distinct_draws": drawn.nunique(),
                          "extra_drop": float(np.mean(randoms) - acc_top)}
    return result


# "its top visual heads" in the toys' masking criterion. Fixed at 4 of 48 (~8%, as 100 of LLaVA-7B's
# 1024 heads are ~10%) in session 2, when the session-1 results at k = 2 and 4 were known; every card
# shows k = 2..6 and 8 as measured, so the choice can be judged.
CRITERION_K = 4
CRITERION_POINTS = 30


def masking_text(res: dict) -> str:
    """Markdown table of :func:`masking_experiment`."""
    n_heads = len(res["scores"]) * len(res["scores"][0])
    draws = len(next(iter(res["k"].values()))["random_each"])
    intro = (f"Held-out accuracy ({res['n']} visual-prompt samples) with heads masked (`helpers.capture.mask_heads`, "
             f"mode `{res['mode']}`); top heads by detection score (`helpers.toy.visual_head_scores`), random heads "
             f"drawn from the same stages, excluding the top heads ({draws} draws: their mean, the worst of them, "
             f"and how many left accuracy above the top heads', of how many different head sets). Unmasked: "
             f"{res['baseline']:.3f}. A draw that takes a head the model cannot do without breaks it at any k, "
             "however small (see the worst draws); the more of a stage (16 heads here) the top heads fill, the "
             "fewer other heads the draws can take, and the less mild the control.")
    if str(CRITERION_K) in map(str, res["k"]):
        intro += (f" Criterion (the toys' acceptance test): with the top {CRITERION_K} heads (of {n_heads}) masked, "
                  f"accuracy falls at least {CRITERION_POINTS} points more than with {CRITERION_K} random same-stage "
                  f"heads (mean of the draws). k = {CRITERION_K} was fixed after the results at k = 2 and 4 of the "
                  "first toys were known; the other k are shown as measured.")
    lines = [textwrap.fill(intro, 104), "",
             "| heads masked | top visual heads | random, same stages (mean) | random, worst draw | draws above top "
             "| extra drop (points) | top heads (layer, head) |",
             "|---|---|---|---|---|---|---|"]
    for k, r in res["k"].items():
        above = sum(x > r["top"] for x in r["random_each"])
        n_sets = r.get("distinct_draws")
        sets = "" if n_sets is None else f" ({n_sets} set{'s' if n_sets != 1 else ''})"
        lines.append(f"| {k} | {r['top']:.3f} | {r['random']:.3f} | {min(r['random_each']):.3f} | "
                     f"{above}/{len(r['random_each'])}{sets} | {100 * r['extra_drop']:.1f} | "
                     f"{', '.join(f'({a},{b})' for a, b in r['top_heads'])} |")
    return "\n".join(lines)


def _fmt(acc: dict | None) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in acc.items()) if acc else "n/a"


def write_card(out: Path, meta: dict) -> None:
    """The model card ``README.md`` from the training metadata."""
    cfg, ev = meta["config"], meta.get("evaluation", {})
    size = sum(p.stat().st_size for p in Path(out).glob("*.safetensors"))

    def row(key: str, label: str) -> str:
        e = ev[key]
        k = e["per_kind"]
        return (f"| {label} | {e['accuracy']:.3f} | {k['general']:.3f} | {k['object']:.3f} | {k['super']:.3f} |")

    grid = cfg["image_size"] // cfg["patch_size"]
    stats_line = ""
    if "statistics" in ev:
        stats_line = textwrap.fill(
            f"Whole-image cues on these scenes, without knowing which object is boxed "
            f"(`helpers.toy.statistics_baseline`, a property of the held-out set, the same in every toy's card): "
            f"the best guess from the group sizes (how many objects of each type) gets {ev['statistics']:.3f} "
            f"right, from the type structure (the exemplar's type has a colour partner and a kind partner) "
            f"{ev.get('structure', float('nan')):.3f}. A model that answers without finding the box can reach "
            f"at least that much; this one answers {ev['plain']['accuracy']:.3f} without the box.", 104) + "\n\n"
    scene_mix = ""
    if cfg.get("scene"):
        args = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in cfg["scene"].items())
        scene_mix = (f"\n  {cfg.get('scene_share', 1.0):.0%} of the scenes *balanced* (`make_scene({args})`: "
                     "the same group sizes in every scene,\n  so they say nothing about the answer), the rest "
                     "like the held-out scenes,")
    text = f"""# {meta['name']}: toy LLaVA model organism (family {meta['family']})

A small `LlavaForConditionalGeneration` trained on CPU on the synthetic PointQA-style shapes task
(`helpers.shapes`, `helpers.toy`). It answers counting questions about an exemplary object marked by
a red box, and genuinely reads the image (see the blank-image row). Weights: {size / 1e6:.1f} MB (fp32).

## Architecture
- Vision: CLIP ViT, {cfg['image_size']} px images, {cfg['patch_size']} px patches ({grid}x{grid} = {grid * grid}
  image tokens), {cfg['vision_layers']} layers of width {cfg['vision_hidden']}, features of the last layer
  (`vision_feature_layer=-1`, CLS dropped). Pretrained per patch (object type, how many of that type the
  image holds, boxed or not; held-out patch accuracy {_fmt(meta.get('vision_pretraining_patch_accuracy'))}), then frozen.
- Projector: LLaVA's two-layer GELU MLP.
- Decoder: Llama, {cfg['layers']} layers x {cfg['heads']} heads (head size {cfg['hidden'] // cfg['heads']}),
  hidden {cfg['hidden']}, MLP {cfg['intermediate']}; word-level tokenizer (`helpers.offline.build_tokenizer`).
- Prompt: vicuna_v1, `USER: <image>\\n{{Q}} The exemplary object is within the rectangle.\\nAnswer the
  question using a single word or phrase. ASSISTANT:`; answers `1`..`4`.

## Training
- Decoder start: family {meta['family']}'s decoder, text-only pretraining (`helpers.toy.pretrain`, seed
  {meta.get('decoder_seed', '?')}, {meta.get('decoder_steps', '?')} steps, text-task accuracy
  {meta.get('decoder_text_accuracy', float('nan')):.3f}; cached in `build/toy/decoder-{meta['family']}`, not committed).
- Vision pretraining: {cfg['vision_steps']} steps x 16 images (scenes drawn as in the fine-tune), seed
  {meta['connector_seed']} (the connector seed).
- Multimodal fine-tune: projector (seed {meta['connector_seed']}) and decoder trained
  {cfg['steps']} steps x batch {cfg['batch_size']} of freshly generated scenes (data seed {cfg['seed']}),{scene_mix}
  AdamW lr {cfg['lr']} (warm-up {cfg['warmup']}, cosine to 10%), box drawn in {cfg['visual_share']:.0%} of
  samples, question kinds weighted {tuple(cfg['kind_weights'])} (general, object, super), auxiliary
  questions in {cfg['aux_share']:.0%} of samples.
- Time: {meta['train_seconds'] / 60:.1f} min for vision pretraining + fine-tune, one thread of a shared 2-core
  CPU (plus the family's decoder pretraining, {meta.get('decoder_seconds', float('nan')) / 60:.1f} min).
- Reproduce: `python -m helpers.toy build {meta['name']}`, then `python -m helpers.toy card data/{meta['name']}`
  for the masking section (see `helpers/toy.py`).

## Held-out accuracy
{ev.get('visual', {}).get('n', 0)} held-out scenes (`helpers.toy.held_out`, seed {HELD_OUT_SEED}), question kinds
in equal parts. Chance for an image-blind model: 0.25 (counts uniform in 1..4).

| condition | all | general | object | super |
|---|---|---|---|---|
{row('visual', 'box drawn (visual prompt)')}
{row('plain', 'no box (plain prompt)')}
{row('blank', 'blank white image')}

{stats_line}Without the box, *general* questions are ambiguous (nothing says which object is meant). *Object*
questions name the object, so a model could answer them without the box; this one gets
{ev['plain']['per_kind']['object']:.3f} of them right without it ({ev['visual']['per_kind']['object']:.3f} with it): the gap
measures how much it reads the count at the boxed token even when the words name the object (box drawn in
{cfg['visual_share']:.0%} of its training samples).
"""
    if "masking" in meta:
        text += "\n## Head masking\n" + masking_text(meta["masking"]) + "\n"
    (Path(out) / "README.md").write_text(text)


# ---------------------------------------------------------------------------------------------
# The committed models

# family -> decoder pretraining seed; model -> (family, connector seed, data seed, settings)
FAMILIES = {"a": 1, "b": 2}
# The second variant of each family differs from the first in its connector seed and its data mix: the
# box drawn more often and longer training. toy-a2 also draws half of its scenes *balanced* (group sizes
# 1, 2, 3, 4 in every scene): there the group sizes, which predict 0.63 of the held-out answers, predict
# nothing, and the type structure predicts less (about 0.7 instead of 0.94; statistics_baseline).
# Why (2026-11-25): trained on default scenes only, toy-a2 kept a backup to its visual heads: with its
# top 2, 4 or 8 heads masked (or all of layer 1) it still answered 0.73 (it never said "2", and got most
# 1s, 3s and 4s right), 16 points below the random control. We did not identify that backup; taking
# whole-image cues away was the hypothesis. Outcome: with the mix, masking its top 4 heads leaves 0.28
# (chance 0.25; it then answers "3" to nearly everything). Tried and dropped (logs not kept): balanced
# scenes only, or balanced after the first half of the steps, left toy-a2 near chance after 800 steps;
# the same half-balanced mix for toy-b2 stalled at 0.73 held-out accuracy (loss flat from step 400 to
# 800), so toy-b2 keeps the default scenes, with which it meets every criterion of its card.
BALANCED = {"group_counts": (1, 2, 3, 4)}
RECIPES: dict[str, dict] = {
    "toy-a1": {"family": "a", "connector_seed": 11, "seed": 101, "visual_share": 0.75},
    "toy-a2": {"family": "a", "connector_seed": 12, "seed": 102, "visual_share": 0.9, "steps": 800,
               "scene": BALANCED, "scene_share": 0.5},
    "toy-b1": {"family": "b", "connector_seed": 21, "seed": 201, "visual_share": 0.75},
    "toy-b2": {"family": "b", "connector_seed": 22, "seed": 202, "visual_share": 0.9, "steps": 800},
}
PRETRAIN_STEPS = 300


def build(name: str, out: Path | None = None, decoder_dir: Path | None = None) -> Path:
    """Train the committed model ``name`` (a key of :data:`RECIPES`) from scratch, deterministically:
    the family's decoder (text pretraining, cached under ``build/toy/``) then the multimodal fine-tune."""
    if name not in RECIPES:
        raise ValueError(f"unknown toy model {name!r}; known: {', '.join(RECIPES)}")
    recipe = dict(RECIPES[name])
    family = recipe.pop("family")
    connector_seed = recipe.pop("connector_seed")
    decoder_dir = Path(decoder_dir or REPO_ROOT / "build" / "toy" / f"decoder-{family}")
    if not (decoder_dir / "model.safetensors").is_file():
        pretrain(ToyConfig(seed=FAMILIES[family], steps=PRETRAIN_STEPS), decoder_dir)
    cfg = ToyConfig(**recipe)
    out = Path(out or DATA_DIR / name)
    finetune(cfg, decoder_dir, out, connector_seed, name, family, eval_every=200)
    return out


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m helpers.toy", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("pretrain", "train"):
        s = sub.add_parser(name)
        s.add_argument("--out", required=True)
        s.add_argument("--seed", type=int, default=0, help="data seed (and decoder init seed for pretrain)")
        s.add_argument("--steps", type=int, default=None)
        s.add_argument("--batch-size", type=int, default=None)
        s.add_argument("--layers", type=int, default=None)
        s.add_argument("--hidden", type=int, default=None)
        s.add_argument("--heads", type=int, default=None)
        s.add_argument("--lr", type=float, default=None)
        s.add_argument("--visual-share", type=float, default=None)
        s.add_argument("--vision-steps", type=int, default=None)
        s.add_argument("--vision-hidden", type=int, default=None)
        s.add_argument("--intermediate", type=int, default=None)
        if name == "train":
            s.add_argument("--decoder", default=None, help="folder made by `pretrain` (default: random decoder)")
            s.add_argument("--connector-seed", type=int, default=0)
            s.add_argument("--name", default=None)
            s.add_argument("--family", default="toy")
            s.add_argument("--no-card", action="store_true", help="skip the evaluation and model card")
            s.add_argument("--eval-n", type=int, default=300, help="held-out samples for the model card")
    b = sub.add_parser("build", help="train a committed model from its recipe (RECIPES)")
    b.add_argument("name", choices=sorted(RECIPES))
    b.add_argument("--out", default=None)
    c = sub.add_parser("card", help="evaluate a saved model (held-out accuracy, masking) and rewrite its card")
    c.add_argument("folder")
    e = sub.add_parser("evaluate")
    e.add_argument("folder")
    e.add_argument("-n", type=int, default=300)
    a = p.parse_args(argv)
    torch.set_num_threads(1)  # on a shared CPU one thread runs ~10x faster than two contending ones
    if a.cmd == "build":
        build(a.name, a.out)
        return
    if a.cmd == "card":
        model, processor = load(a.folder)
        meta = add_decoder_meta(json.loads((Path(a.folder) / "training.json").read_text()))
        meta["evaluation"] = full_evaluation(model, processor)
        meta["masking"] = masking_experiment(model, processor)
        (Path(a.folder) / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
        write_registry_entry(Path(a.folder), meta, model.config.text_config)
        write_card(Path(a.folder), meta)
        print(masking_text(meta["masking"]))
        return
    if a.cmd == "evaluate":
        model, processor = load(a.folder)
        print(json.dumps(full_evaluation(model, processor, a.n), indent=2))
        return
    cfg = ToyConfig(seed=a.seed)
    for key in ("steps", "batch_size", "layers", "hidden", "heads", "lr", "visual_share", "vision_steps",
                "vision_hidden", "intermediate"):
        if getattr(a, key) is not None:
            setattr(cfg, key, getattr(a, key))
    if a.cmd == "pretrain":
        pretrain(cfg, Path(a.out))
    else:
        finetune(cfg, a.decoder, Path(a.out), a.connector_seed, a.name or Path(a.out).name, a.family,
                 card=not a.no_card, eval_n=a.eval_n)


if __name__ == "__main__":
    main()
