"""Random-weight models of each registry architecture, built without network.

No checkpoint can be downloaded where this project is tested, so every code path runs on models
of the real geometry with random weights:

- ``build(name)``: the real attention geometry of ``REGISTRY[name]`` (hidden size, heads,
  key/value heads, head size, MLP width), the real vision geometry (CLIP ViT-L/14 at 336 px,
  24x24 patch grid, LLaVA-NeXT's grid pinpoints, ViP-LLaVA's five feature layers), 1 decoder
  layer by default and a small word-level vocabulary.
- ``build(name, tiny=True)``: the same image grid, processor and head ratio (heads : kv heads),
  with narrow layers (hidden 64), for speed.
- ``save(name, folder)`` writes either as a Hugging Face folder that ``helpers.models.load`` reads.

The tokenizer is a word-level ``tokenizers`` model with the chat-template markers of every
family as special tokens; its words come from :data:`WORDS` plus any the caller adds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .models import ANYRES_PINPOINTS, CLIP_L_336, REGISTRY, ModelSpec

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
           "<|user|>", "<|end|>", "<|assistant|>", "[INST]", "[/INST]", "###"]
WORDS = (
    "USER ASSISTANT Human Assistant user assistant : . , ? ! ' ( ) A B C D E yes no Yes No "
    "a an the of in on is are how many what which there this that image picture rectangle box exemplary object "
    "within inside outside answer question using single word or phrase with option letter from given choices "
    "directly choose between one options as follows chat curious human artificial intelligence gives helpful "
    "detailed and polite answers to s shapes shape objects things items red green blue yellow purple orange "
    "circle circles square squares triangle triangles colour color count number "
    + " ".join(str(i) for i in range(0, 33))
).split()

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_tokenizer(words: list[str] | None = None) -> Any:
    """A word-level fast tokenizer: special tokens first (``<image>`` included), then ``words``.

    Left padding, ``<pad>`` as pad token, ``<s>`` prepended like Llama's tokenizer.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in SPECIAL + WORDS + list(words or []):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[
        ("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="left",
                                   additional_special_tokens=[t for t in SPECIAL[4:]])
    return fast


def build_llama_style_tokenizer(words: list[str] | None = None) -> Any:
    """A SentencePiece-style (Llama / Vicuna) fast tokenizer built offline: what ``build_tokenizer`` is not.

    As the Llama tokenizers' ``tokenizer.json``: a Unigram model over ``▁``-prefixed pieces (normaliser
    ``Prepend("▁")`` + ``Replace(" ", "▁")``), digits always single pieces (Llama's ``split_digits``, so
    ``" 3"`` is ``["▁", "3"]``: the lone ``"▁"`` before a count), decoder ``Replace("▁", " ")``, ``ByteFallback``,
    ``Fuse``, ``Strip(" ", 1, 0)``, byte fallback (``"\\n"`` is ``<0x0A>``). Vocabulary: ``<unk>``, ``<s>``, ``</s>``,
    the 256 byte tokens, ``▁``, the digits, letters,
    ``▁`` + each word and each bare word of ``WORDS`` and ``words``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pieces: dict[str, float] = {"<unk>": 0.0, "<s>": 0.0, "</s>": 0.0}
    pieces.update({f"<0x{b:02X}>": -20.0 for b in range(256)})  # byte fallback, as Llama's: "\n" is <0x0A>
    pieces["▁"] = -3.0
    for ch in [*"0123456789", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ", *"abcdefghijklmnopqrstuvwxyz", "?", ".", ",", ":"]:
        pieces.setdefault(ch, -5.0)
    for w in [*WORDS, *(words or [])]:
        if w.isalpha():
            pieces.setdefault(f"▁{w}", -1.0)
            pieces.setdefault(w, -1.5)
    tok = Tokenizer(models.Unigram(list(pieces.items()), unk_id=0, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Digits(individual_digits=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>", padding_side="left")


def _text_config(spec: ModelSpec, tiny: bool, layers: int, vocab_size: int, ids: dict[str, int]) -> dict:
    if tiny:
        heads = 4
        kv = max(1, heads * spec.kv_heads // spec.heads)
        geometry = {"hidden_size": 64, "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": 16,
                    "intermediate_size": 128}
    else:
        geometry = {"hidden_size": spec.hidden_size, "num_attention_heads": spec.heads,
                    "num_key_value_heads": spec.kv_heads, "head_dim": spec.head_dim,
                    "intermediate_size": spec.intermediate_size}
    return {"model_type": spec.text_model_type, "num_hidden_layers": layers, "vocab_size": vocab_size,
            "max_position_embeddings": 4096, "rope_theta": spec.rope_theta, "rms_norm_eps": 1e-5,
            "pad_token_id": ids["<pad>"], "bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"],
            "tie_word_embeddings": False, **geometry}


def _vision_config(spec: ModelSpec, tiny: bool) -> dict:
    """CLIP ViT-L/14-336 geometry; as few layers as the feature layers need (ViP-LLaVA reads 6 and -11)."""
    layers = 11 if spec.architecture == "vipllava" else 2
    if tiny:
        width = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}
    else:
        width = {k: CLIP_L_336[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads")}
    return {"model_type": "clip_vision_model", "image_size": 336, "patch_size": 14, "num_hidden_layers": layers,
            "projection_dim": 768, **width}


def build_config(name: str, tiny: bool = False, layers: int = 1, vocab_size: int | None = None,
                 tokenizer: Any = None) -> Any:
    """The transformers config of a random-weight ``name`` model (see the module docstring)."""
    from transformers import AutoConfig

    spec = REGISTRY[name]
    tokenizer = tokenizer or build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<s>", "</s>", "<image>")}
    vocab_size = vocab_size or len(tokenizer)
    kw: dict[str, Any] = {
        "text_config": _text_config(spec, tiny, layers, vocab_size, ids),
        "vision_config": _vision_config(spec, tiny),
        "image_token_index": ids["<image>"],
        "projector_hidden_act": "gelu",
        "tie_word_embeddings": False,
    }
    if spec.architecture == "vipllava":
        kw["vision_feature_layers"] = list(spec.vision_feature_layer)
    else:
        kw["vision_feature_layer"] = spec.vision_feature_layer
        kw["vision_feature_select_strategy"] = "default"
    if spec.architecture == "llava_next":
        kw["image_grid_pinpoints"] = [list(p) for p in ANYRES_PINPOINTS]
    return AutoConfig.for_model(spec.architecture, **kw)


def build_processor(name: str, tokenizer: Any = None) -> Any:
    """The processor with the real image settings of ``name``'s Hugging Face checkpoint.

    LLaVA-1.5, ViP-LLaVA and the xtuner models: CLIP resize (shortest edge 336) and centre crop 336.
    LLaVA-NeXT: anyres over :data:`ANYRES_PINPOINTS` with a 336 base view. CLS dropped (576 tokens).
    """
    from transformers import CLIPImageProcessor, LlavaNextImageProcessor, LlavaNextProcessor, LlavaProcessor

    spec = REGISTRY[name]
    tokenizer = tokenizer or build_tokenizer()
    common = {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}, "do_center_crop": True,
              "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD, "do_convert_rgb": True}
    kw = {"tokenizer": tokenizer, "patch_size": 14, "vision_feature_select_strategy": "default",
          "num_additional_image_tokens": 1, "image_token": "<image>"}
    if spec.architecture == "llava_next":
        image_processor = LlavaNextImageProcessor(image_grid_pinpoints=[list(p) for p in ANYRES_PINPOINTS],
                                                  **common)
        return LlavaNextProcessor(image_processor=image_processor, **kw)
    return LlavaProcessor(image_processor=CLIPImageProcessor(**common), **kw)


def build(name: str, tiny: bool = False, layers: int = 1, seed: int = 0,
          dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """A random-weight model of ``REGISTRY[name]``'s architecture and its offline processor.

    Returns ``(model, processor)``; the model is in eval mode with sdpa attention and
    ``model.vh_spec`` set to the registry spec with ``layers`` changed to the built depth.
    """
    from dataclasses import replace

    from transformers import AutoModelForImageTextToText

    tokenizer = build_tokenizer()
    config = build_config(name, tiny=tiny, layers=layers, tokenizer=tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    spec = REGISTRY[name]
    model.vh_spec = replace(spec, layers=layers, name=f"{spec.name} ({'tiny' if tiny else 'real geometry'}, "
                                                      f"random weights, {layers} layer{'s' * (layers > 1)})")
    return model, build_processor(name, tokenizer)


def save(name: str, folder: str | Path, tiny: bool = False, layers: int = 1, seed: int = 0) -> Path:
    """Build a random-weight model and save it as a Hugging Face folder ``helpers.models.load`` reads."""
    folder = Path(folder)
    model, processor = build(name, tiny=tiny, layers=layers, seed=seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    spec = REGISTRY[name]
    (folder / "visual_heads.json").write_text(json.dumps({
        "name": f"{name}-{'tiny' if tiny else 'geometry'}-random", "family": spec.family, "template": spec.template,
        "note": f"random weights, {name} geometry{' (tiny)' if tiny else ''}, {layers} decoder layer(s): "
                "for testing code paths, not for results"}, indent=2))
    return folder
