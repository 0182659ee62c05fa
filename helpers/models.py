"""The paper's nine models, and one call to load any of them (or a local Hugging Face folder).

    model, processor = load("llava-v1.5-7b", quantization="4bit")     # Colab GPU
    model, processor = load("data/toy-a1")                            # local folder, CPU

``load`` attaches the model's :class:`ModelSpec` as ``model.vh_spec``; :func:`spec_of` reads it
(or derives one from the config for models loaded elsewhere).

Quantization choice (documented, a parameter): bitsandbytes NF4 with double quantization on the
language model's linear layers only. The vision tower, the multimodal projector and ``lm_head``
stay in the compute dtype (``DEFAULT_SKIP_MODULES``): they are small (about 0.3 B parameters for
CLIP ViT-L/14-336) and the image features every head attends to come from them, so quantizing
them would change the very signal we measure. The compute dtype is bf16 on GPUs that support it
and fp16 on those that do not (T4); fp16 can overflow, and a NaN/inf guard turns that into an
error that says what to change.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import torch

from .assemble import OrganismError, is_organism, load_organism
from .baselm import BaseLMError
from .env import default_device
from .layout import pad_to_square as _pad_to_square
from .metrics import stage_bounds

# ---------------------------------------------------------------------------------------------
# Registry


SYSTEM_VICUNA = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

# Each template has one ``{prompt}`` slot; the prompt itself starts with ``<image>\n`` (data.py).
TEMPLATES = {
    "vicuna_v1": "USER: {prompt} ASSISTANT:",
    "vicuna_v1_system": SYSTEM_VICUNA + " USER: {prompt} ASSISTANT:",
    "mistral_instruct": "[INST] {prompt} [/INST]",
    "vip_llava": SYSTEM_VICUNA + "###Human: {prompt}###Assistant:",
    "llama3": "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "phi3": "<|user|>\n{prompt}<|end|>\n<|assistant|>\n",
    # the organisms' base LMs (helpers.baselm): SmolLM2's ChatML without its default system message, and
    # Gemma 3's turn format (the base model ships no chat template; its vocabulary has the turn tokens)
    "chatml": "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n",
    "gemma": "<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n",
}

CLIP_L_336 = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
              "num_hidden_layers": 24, "image_size": 336, "patch_size": 14}
ANYRES_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


@dataclass(frozen=True)
class ModelSpec:
    """What the project needs to know about one model.

    ``architecture`` is the transformers model type of the whole model (``llava``, ``llava_next``,
    ``vipllava``); ``text_model_type`` that of the language model. ``image_tokens`` is 576 for the
    fixed 24x24 grid and ``None`` for LLaVA-NeXT's anyres layout, whose count depends on the image.
    ``revision`` is a hub commit; ``revision_verified`` says whether that commit was checked
    against the hub (no hub is reachable where this registry was written; ``load`` records the
    commit it actually resolved in ``model.config._commit_hash``). ``pad_to_square``: the image is padded
    to a square with the mean colour before the resize (the original LLaVA-1.5 / ViP-LLaVA code,
    ``image_aspect_ratio="pad"``; paper-notes [code]) instead of the llava-hf processors' centre crop;
    :func:`load` applies it by default (:func:`configure_processor`). True for the xtuner stand-ins too: their
    processors ship the crop, but xtuner trained them on padded images (``pad_image_to_square=True``, mean
    colour, in their fine-tune configs). False for LLaVA-NeXT (anyres pads its own way).
    """

    name: str
    hub_id: str
    paper_checkpoint: str
    family: str
    backbone: str
    architecture: str
    text_model_type: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    image_layout: str  # "fixed" or "anyres"
    image_tokens: int | None
    template: str
    revision: str = "main"
    revision_verified: bool = False
    vision_feature_layer: int | tuple[int, ...] = -2
    rope_theta: float = 10000.0
    note: str = ""
    extra: dict = field(default_factory=dict)
    pad_to_square: bool = False

    @property
    def stages(self) -> tuple[range, range, range]:
        """Layer ranges of the early, middle and late stage."""
        a, b = stage_bounds(self.layers)
        return range(0, a), range(a, b), range(b, self.layers)

    @property
    def prompt_template(self) -> str:
        """The chat template string with one ``{prompt}`` slot."""
        return TEMPLATES[self.template]

    def format_prompt(self, prompt: str) -> str:
        """Wrap a user prompt (which starts with ``<image>\\n``) in this model's chat template."""
        return self.prompt_template.format(prompt=prompt)


def _spec(**kw: Any) -> ModelSpec:
    return ModelSpec(**kw)


_VICUNA_7B = {"layers": 32, "heads": 32, "kv_heads": 32, "head_dim": 128, "hidden_size": 4096,
              "intermediate_size": 11008, "text_model_type": "llama"}
_VICUNA_13B = {"layers": 40, "heads": 40, "kv_heads": 40, "head_dim": 128, "hidden_size": 5120,
               "intermediate_size": 13824, "text_model_type": "llama"}

REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        _spec(name="llava-v1.5-7b", hub_id="llava-hf/llava-1.5-7b-hf", paper_checkpoint="liuhaotian/llava-v1.5-7b",
              family="llama2-vicuna", backbone="Vicuna-7B v1.5", architecture="llava", vocab_size=32064,
              image_layout="fixed", image_tokens=576, template="vicuna_v1", pad_to_square=True, **_VICUNA_7B),
        _spec(name="llava-v1.5-13b", hub_id="llava-hf/llava-1.5-13b-hf",
              paper_checkpoint="liuhaotian/llava-v1.5-13b", family="llama2-vicuna", backbone="Vicuna-13B v1.5",
              architecture="llava", vocab_size=32064, image_layout="fixed", image_tokens=576,
              template="vicuna_v1", pad_to_square=True, **_VICUNA_13B),
        _spec(name="llava-v1.6-vicuna-7b", hub_id="llava-hf/llava-v1.6-vicuna-7b-hf",
              paper_checkpoint="liuhaotian/llava-v1.6-vicuna-7b", family="llama2-vicuna",
              backbone="Vicuna-7B v1.5", architecture="llava_next", vocab_size=32064, image_layout="anyres",
              image_tokens=None, template="vicuna_v1_system", **_VICUNA_7B),
        _spec(name="llava-v1.6-vicuna-13b", hub_id="llava-hf/llava-v1.6-vicuna-13b-hf",
              paper_checkpoint="liuhaotian/llava-v1.6-vicuna-13b", family="llama2-vicuna",
              backbone="Vicuna-13B v1.5", architecture="llava_next", vocab_size=32064, image_layout="anyres",
              image_tokens=None, template="vicuna_v1_system", **_VICUNA_13B),
        _spec(name="llava-v1.6-mistral-7b", hub_id="llava-hf/llava-v1.6-mistral-7b-hf",
              paper_checkpoint="liuhaotian/llava-v1.6-mistral-7b", family="mistral",
              backbone="Mistral-7B-Instruct v0.2", architecture="llava_next", text_model_type="mistral",
              layers=32, heads=32, kv_heads=8, head_dim=128, hidden_size=4096, intermediate_size=14336,
              vocab_size=32064, image_layout="anyres", image_tokens=None, template="mistral_instruct",
              rope_theta=1000000.0),
        _spec(name="vip-llava-7b", hub_id="llava-hf/vip-llava-7b-hf", paper_checkpoint="mucai/vip-llava-7b",
              family="llama2-vicuna", backbone="Vicuna-7B v1.5", architecture="vipllava", vocab_size=32064,
              image_layout="fixed", image_tokens=576, template="vip_llava",
              vision_feature_layer=(-2, -5, -8, -11, 6), pad_to_square=True, **_VICUNA_7B),
        _spec(name="vip-llava-13b", hub_id="llava-hf/vip-llava-13b-hf", paper_checkpoint="mucai/vip-llava-13b",
              family="llama2-vicuna", backbone="Vicuna-13B v1.5", architecture="vipllava", vocab_size=32064,
              image_layout="fixed", image_tokens=576, template="vip_llava",
              vision_feature_layer=(-2, -5, -8, -11, 6), pad_to_square=True, **_VICUNA_13B),
        _spec(name="llava-1.5-llama-3-8b", hub_id="xtuner/llava-llama-3-8b-v1_1-transformers",
              paper_checkpoint="mucai/llava-1.5-llama-3-8b", family="llama3", backbone="Llama-3-8B-Instruct",
              architecture="llava", text_model_type="llama", layers=32, heads=32, kv_heads=8, head_dim=128,
              hidden_size=4096, intermediate_size=14336, vocab_size=128320, image_layout="fixed",
              image_tokens=576, template="llama3", rope_theta=500000.0, pad_to_square=True,
              note="closest Hugging Face-format checkpoint; the paper's mucai/ checkpoint is in original "
                   "LLaVA format and was trained on other data (xtuner's is ShareGPT4V-PT + InternVL-SFT)"),
        _spec(name="llava-1.5-phi-3-mini", hub_id="xtuner/llava-phi-3-mini-hf",
              paper_checkpoint="mucai/llava-1.5-phi-3-mini-3.8B", family="phi3", backbone="Phi-3-mini-4k-instruct",
              architecture="llava", text_model_type="llama", layers=32, heads=32, kv_heads=32, head_dim=96,
              hidden_size=3072, intermediate_size=8192, vocab_size=32064, image_layout="fixed",
              image_tokens=576, template="phi3", pad_to_square=True,
              revision="4895eb736a5d05267826a2ad22df9305423399fb",
              note="closest Hugging Face-format checkpoint (xtuner converted Phi-3 to the Llama layout); the "
                   "paper's mucai/ checkpoint is in original LLaVA format. The pinned commit is a README "
                   "update seen in the hub's history, not checked against the weights"),
    ]
}

# ---------------------------------------------------------------------------------------------
# Provenance: each registry value against a public copy of the checkpoint's files (issue 17)

_HF15 = "tung2kg1/AI-Stock-Chart-Analysis/llava-1.5-7b-hf/{}@61f63b568cf2def9b3e13740ee072bf3b48dac8a"
_TF = "huggingface/transformers/src/transformers/models/{}"
_VIP = "WisconsinAIVision/ViP-LLaVA/{}@77079b1e1990472598f1f8a6bb3f7f470100d191"
_XT = "InternLM/xtuner/xtuner/{}@b934f462095c1e750229de35367c50ae36caa786"
_XT_L3 = "configs/llava/llama3_8b_instruct_clip_vit_large_p14_336/"
_XT_P3 = "configs/llava/phi3_mini_4k_instruct_clip_vit_large_p14_336/"

#: Where each recorded value was read: ``owner/repo/path@commit`` of a public GitHub file (the first two path
#: parts are the repository), except ``transformers:defaults``, the installed package's class defaults.
SOURCES: dict[str, str] = {
    # a public mirror of the llava-hf/llava-1.5-7b-hf hub repository (all its small files)
    "llava-hf-1.5-7b:config": _HF15.format("config.json"),
    "llava-hf-1.5-7b:preprocessor": _HF15.format("preprocessor_config.json"),
    "llava-hf-1.5-7b:processor": _HF15.format("processor_config.json"),
    "llava-hf-1.5-7b:chat_template": _HF15.format("chat_template.json"),
    "llava-hf-1.5-7b:readme": _HF15.format("README.md"),
    # a copy of liuhaotian/llava-v1.5-7b's config.json (original LLaVA format; notes appended after the JSON)
    "liuhaotian-1.5-7b:config":
        "FannierPeng/LLaVA-GRL/llava-v1.5-7b/config.json@f02227619056760e9786890139a6a69b1094dc05",
    "llava:finetune-v1.5-13b": "haotian-liu/LLaVA/scripts/v1_5/finetune.sh@5a5bda8f584637c2db9d780ded986f11f40dd06f",
    # the scripts that wrote the llava-hf checkpoints from the original ones
    "transformers:convert-llava":
        _TF.format("llava/convert_llava_weights_to_hf.py@01080c629600d4ff3121446bb4f4a2e240c2cf41"),
    "transformers:convert-llava-next":
        _TF.format("llava_next/convert_llava_next_weights_to_hf.py@063b32f6798ec8ec747dafd5790679fafee38f6f"),
    "transformers:convert-vipllava":
        _TF.format("vipllava/convert_vipllava_weights_to_hf.py@054e83668365b3840ea106ec86479bb1ddd1f2ca"),
    "transformers:doc-vipllava":
        "huggingface/transformers/docs/source/en/model_doc/vipllava.md@020a37d2264e60dc7beb9634c3e87ad870073e2c",
    "transformers:defaults": "transformers==5.24.0 (PyPI) class defaults the converted configs leave out: "
                             "LlamaConfig, LlavaConfig / LlavaNextConfig / VipLlavaConfig, LlavaNextImageProcessor, "
                             "Phi3Config (tests/test_registry_fidelity.py re-reads them)",
    # ViP-LLaVA's own code (also the training scripts of the paper's Llama-3 and Phi-3 checkpoints)
    "vip-llava:clip-4layer-encoder": _VIP.format("llava/model/multimodal_encoder/clip_4layer_encoder.py"),
    "vip-llava:finetune-stage2": _VIP.format("scripts/finetune_stage2.sh"),
    "vip-llava:conversation": _VIP.format("llava/conversation.py"),
    "vip-llava:finetune-llama3": _VIP.format("scripts/finetune_llava_1_5_llama3.sh"),
    "vip-llava:finetune-phi3": _VIP.format("scripts/finetune_llava_1_5_phi3.sh"),
    # base language models
    "mistral-7b-instruct-v0.2:params":
        "edadaltocg/mistral-src-finetune/finetune/config.py@37c8be534ef00e0eef4fcaa53b9d434f2e6179ee",
    # the text config of xtuner/llava-llama-3-8b-v1_1-transformers as HunyuanVideo extracts it (same file names
    # that checkpoint as LLAVA_HUGGINGFACE_MODEL_ID)
    "hunyuan:llava-llama-3-text-config":
        "kohya-ss/musubi-tuner/src/musubi_tuner/hunyuan_model/text_encoder.py@1b21831e731dc7734c2d821b03af6e164d32a58f",
    # xtuner: the code and configs that made the two stand-in checkpoints
    "xtuner:convert-llama3": _XT.format(_XT_L3 + "convert_xtuner_weights_to_hf.py"),
    "xtuner:convert-phi3": _XT.format(_XT_P3 + "convert_xtuner_weights_to_hf.py"),
    "xtuner:phi-to-llama": _XT.format(_XT_P3 + "convert_phi_to_llama.py"),
    "xtuner:finetune-llama3": _XT.format(
        _XT_L3 + "finetune/llava_llama3_8b_instruct_full_clip_vit_large_p14_336_lora_e1_gpu8_internvl_finetune.py"),
    "xtuner:finetune-phi3": _XT.format(
        _XT_P3 + "finetune/llava_phi3_mini_4k_instruct_full_clip_vit_large_p14_336_full_e2_gpu8_internvl_finetune.py"),
    "xtuner:readme-llama3": _XT.format(_XT_L3 + "README.md"),
    "xtuner:readme-phi3": _XT.format(_XT_P3 + "README.md"),
    "xtuner:templates": _XT.format("utils/templates.py"),
    "xtuner:dataset": _XT.format("dataset/llava.py"),
    "xtuner:model": _XT.format("model/llava.py"),
    "none": "no public copy found",
}

#: Fields every model has a record for (found or not). ModelSpec fields by name; ``vision.*`` are
#: :data:`CLIP_L_336`; ``image_grid_pinpoints`` is :data:`ANYRES_PINPOINTS` (None for fixed grids); ``template``
#: is ``TEMPLATES[spec.template]``; ``rms_norm_eps``, ``vision_feature_select_strategy`` and ``processor.*`` are
#: not stated by the registry and are compared with what ``helpers.offline`` builds.
CHECKED_FIELDS: tuple[str, ...] = (
    "hub_id", "architecture", "text_model_type", "layers", "heads", "kv_heads", "head_dim", "hidden_size",
    "intermediate_size", "vocab_size", "rope_theta", "rms_norm_eps",
    "vision.hidden_size", "vision.intermediate_size", "vision.num_attention_heads", "vision.num_hidden_layers",
    "vision.image_size", "vision.patch_size", "vision_feature_layer", "vision_feature_select_strategy",
    "image_layout", "image_grid_pinpoints", "image_tokens",
    "processor.size", "processor.crop_size", "processor.image_mean", "processor.image_std",
    "processor.patch_size", "processor.num_additional_image_tokens",
    "template", "pad_to_square",
)


@dataclass(frozen=True)
class Checked:
    """One registry value as a public file shows it.

    ``field``: a name of :data:`CHECKED_FIELDS`. ``value``: what the source says, written down from it (never
    from the registry); ``None`` when ``how`` is ``"not found"``. ``source``: a key of :data:`SOURCES`.
    ``how``: ``"file"``, the checkpoint's own file (a public copy); ``"derived"``, public code or configuration
    that fixes the value (the script that wrote the checkpoint, the base LM's config, a transformers default the
    checkpoint's config leaves out, the training code); ``"not found"``, no public copy was found (``note``
    says what was searched).
    """

    field: str
    value: Any
    source: str
    how: str = "file"
    note: str = ""


def _c(field: str, value: Any, source: str, how: str = "derived", note: str = "") -> Checked:
    return Checked(field, value, source, how, note)


def _missing(fields: str, note: str) -> tuple[Checked, ...]:
    return tuple(Checked(f, None, "none", "not found", note) for f in fields.split())


_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _clip_vision(source: str, how: str = "derived", note: str = "") -> tuple[Checked, ...]:
    """CLIP ViT-L/14 at 336 px (``vision_config``) as ``source`` shows it."""
    values = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24,
              "image_size": 336, "patch_size": 14}
    return tuple(_c(f"vision.{k}", v, source, how, note) for k, v in values.items())


def _clip_processor(source: str, how: str = "derived", note: str = "") -> tuple[Checked, ...]:
    """The CLIP-336 image processor (resize the short side to 336, centre crop 336, OpenAI mean/std)."""
    return (_c("processor.size", {"shortest_edge": 336}, source, how, note),
            _c("processor.crop_size", {"height": 336, "width": 336}, source, how, note),
            _c("processor.image_mean", _CLIP_MEAN, source, how, note),
            _c("processor.image_std", _CLIP_STD, source, how, note))


def _text(source: str, how: str = "derived", note: str = "", **values: Any) -> tuple[Checked, ...]:
    return tuple(_c(k, v, source, how, note) for k, v in values.items())


_NOTE_PROC_CLIP = ("the conversion loads the image processor of openai/clip-vit-large-patch14-336, as for "
                   "llava-1.5-7b-hf, whose preprocessor_config.json (a public copy) shows these values")
_NOTE_PROC_FILE = ("processor_config.json of this checkpoint not found; patch 14 and one CLS token follow from "
                   "the CLIP-336 vision config, as llava-1.5-7b-hf's processor_config.json states them")
_NOTE_13B = ("searched find_files for llava-1.5-13b-hf/, llava-v1.6-vicuna-13b-hf/, vip-llava-13b-hf/, "
             "llava-v1.5-13b/, vicuna-13b-v1.5/ config.json and find_string for their keys: copies exist only "
             "in files whose repository the index does not name")
_NOTE_NEXT = ("llava-v1.6-*-hf config.json / preprocessor_config.json not found (searched find_files for "
              "llava-v1.6-*-hf/ and llava-v1.6-*/ config.json, find_string for their keys)")
_NOTE_VIP = ("vip-llava-*-hf config.json not found (searched find_files vip-llava-7b-hf/, vip-llava-13b-hf/, "
             "find_string \"vision_feature_layers\": [)")
_ANYRES = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
           "The assistant gives helpful, detailed, and polite answers to the human's questions.")


def _llava_next(name: str, *, text: tuple[Checked, ...], template: tuple[Checked, ...],
                hub: tuple[Checked, ...]) -> tuple[Checked, ...]:
    """Records shared by the three LLaVA-NeXT (1.6) checkpoints."""
    conv, dflt = "transformers:convert-llava-next", "transformers:defaults"
    return (*hub, _c("architecture", "llava_next", conv, note="LlavaNextConfig"), *text,
            _c("vocab_size", 32064, conv, note="32000 + <image> + <pad>, padded to a multiple of 64"),
            *_clip_vision(dflt, note="LlavaNextConfig(text_config=...) keeps the default CLIP-336 vision_config"),
            _c("vision_feature_layer", -2, dflt, note="LlavaNextConfig default, not overridden by the conversion"),
            _c("vision_feature_select_strategy", "default", dflt, note="LlavaNextConfig default"),
            _c("image_layout", "anyres", conv, note="LlavaNextImageProcessor"),
            _c("image_grid_pinpoints", _ANYRES, dflt,
               note="the conversion takes image_processor.image_grid_pinpoints of LlavaNextImageProcessor."
                    "from_pretrained(openai/clip-vit-large-patch14-336), i.e. the class default; " + _NOTE_NEXT),
            _c("image_tokens", None, conv, note="anyres: the count depends on the image size"),
            *_clip_processor("llava-hf-1.5-7b:preprocessor", note=_NOTE_PROC_CLIP),
            _c("processor.patch_size", 14, dflt, note=_NOTE_PROC_FILE),
            _c("processor.num_additional_image_tokens", 1, dflt, note=_NOTE_PROC_FILE),
            *template,
            _c("pad_to_square", False, conv, note="anyres pads its own way; configure_processor refuses the pad"))


def _vip(size: str, *, text: tuple[Checked, ...], hub: tuple[Checked, ...]) -> tuple[Checked, ...]:
    """Records shared by the two ViP-LLaVA checkpoints."""
    conv, dflt, enc = "transformers:convert-vipllava", "transformers:defaults", "vip-llava:clip-4layer-encoder"
    return (*hub, _c("architecture", "vipllava", conv, note="VipLlavaConfig"), *text,
            *_missing("vocab_size", _NOTE_VIP + "; the conversion resizes to 32000 + 2 padded to 64 = 32064 "
                      "embeddings, then adds 64 to config.vocab_size, so the script alone does not settle the "
                      "saved value"),
            *_clip_vision(dflt, note="VipLlavaConfig(text_config=...) keeps the default CLIP-336 vision_config"),
            _c("vision_feature_layer", [-2, -5, -8, -11, 6], enc,
               note="hidden_states[index][:, 1:] for index in [-2, -5, -8, -11, 6]; VipLlavaConfig's default is "
                    "the same list (the conversion does not override it)"),
            _c("vision_feature_select_strategy", "default", enc, note="[:, 1:] drops the CLS token"),
            _c("image_layout", "fixed", conv, note="CLIPImageProcessor"),
            _c("image_grid_pinpoints", None, conv, note="CLIPImageProcessor: no pinpoints"),
            _c("image_tokens", 576, enc, note="(336 / 14)^2 patches per feature layer, CLS dropped"),
            *_clip_processor("llava-hf-1.5-7b:preprocessor", note=_NOTE_PROC_CLIP),
            _c("processor.patch_size", 14, dflt, note=_NOTE_PROC_FILE),
            _c("processor.num_additional_image_tokens", 1, dflt, note=_NOTE_PROC_FILE),
            _c("template", _SYSTEM + "###Human: {prompt}###Assistant:", "transformers:doc-vipllava",
               note="the prompt format the llava-hf ViP-LLaVA checkpoints document; ViP-LLaVA's own training "
                    "scripts use conv 'llava_v1' (system + ' USER: ... ASSISTANT:') instead (vip-llava:"
                    "conversation, vip-llava:finetune-stage2): an open question, see docs/paper-notes.md"),
            _c("pad_to_square", True, "vip-llava:finetune-stage2",
               note=f"--image_aspect_ratio pad (vip-llava-{size}); llava/mm_utils.py expand2square(image_mean)"))


_V7_TEXT = dict(layers=32, heads=32, kv_heads=32, hidden_size=4096, intermediate_size=11008)
_NOTE_V7 = ("the language model is lmsys/vicuna-7b-v1.5 (its config is loaded by the conversion); llava-1.5-7b-hf's "
            "config.json has the same text_config and leaves these at the LlamaConfig defaults, which "
            "liuhaotian/llava-v1.5-7b's config.json states explicitly")

REGISTRY_CHECKS: dict[str, tuple[Checked, ...]] = {
    "llava-v1.5-7b": (
        _c("hub_id", "llava-hf/llava-1.5-7b-hf", "llava-hf-1.5-7b:readme", "file"),
        _c("architecture", "llava", "llava-hf-1.5-7b:config", "file", "model_type"),
        _c("text_model_type", "llama", "llava-hf-1.5-7b:config", "file", "text_config.model_type"),
        *_text("liuhaotian-1.5-7b:config", "file", "the original checkpoint states them; llava-hf's text_config "
               "leaves them to the LlamaConfig defaults (the same values)", **_V7_TEXT),
        _c("head_dim", 128, "liuhaotian-1.5-7b:config", note="hidden_size / num_attention_heads"),
        _c("vocab_size", 32064, "llava-hf-1.5-7b:config", "file"),
        _c("rope_theta", 10000.0, "transformers:defaults",
           note="absent from both config.json files: the LlamaConfig default"),
        _c("rms_norm_eps", 1e-05, "llava-hf-1.5-7b:config", "file"),
        *_clip_vision("llava-hf-1.5-7b:config", "file"),
        _c("vision_feature_layer", -2, "llava-hf-1.5-7b:config", "file"),
        _c("vision_feature_select_strategy", "default", "llava-hf-1.5-7b:config", "file"),
        _c("image_layout", "fixed", "llava-hf-1.5-7b:preprocessor", "file", "CLIPImageProcessor"),
        _c("image_grid_pinpoints", None, "llava-hf-1.5-7b:preprocessor", "file", "none in the file"),
        _c("image_tokens", 576, "llava-hf-1.5-7b:config",
           note="(image_size / patch_size)^2 = 24^2; strategy 'default' drops the CLS token"),
        *_clip_processor("llava-hf-1.5-7b:preprocessor", "file"),
        _c("processor.patch_size", 14, "llava-hf-1.5-7b:processor", "file"),
        _c("processor.num_additional_image_tokens", 1, "llava-hf-1.5-7b:processor", "file"),
        _c("template", "USER: {prompt} ASSISTANT:", "llava-hf-1.5-7b:chat_template", "file",
           "one user turn (image, then text) with add_generation_prompt, rendered by hand: 'USER: ' + "
           "'<image>\\n' + text + ' ' + 'ASSISTANT:'. No system prompt (the original eval's conv 'vicuna_v1' "
           "has one)"),
        _c("pad_to_square", True, "liuhaotian-1.5-7b:config", "file", "image_aspect_ratio: pad"),
    ),
    "llava-v1.5-13b": (
        *_missing("hub_id", "the conversion pushes to a path given on the command line; no public copy of the "
                            "llava-hf/llava-1.5-13b-hf files found"),
        _c("architecture", "llava", "transformers:convert-llava", note="LlavaConfig"),
        _c("text_model_type", "llama", "llava:finetune-v1.5-13b", note="--model_name_or_path lmsys/vicuna-13b-v1.5"),
        *_missing("layers heads kv_heads head_dim hidden_size intermediate_size rope_theta rms_norm_eps", _NOTE_13B),
        _c("vocab_size", 32064, "transformers:convert-llava", note="32000 + <image> + <pad>, padded to 64"),
        *_clip_vision("transformers:defaults",
                      note="the conversion passes vision_config=None for CLIP: LlavaConfig's default"),
        _c("vision_feature_layer", -2, "llava:finetune-v1.5-13b", note="--mm_vision_select_layer -2"),
        _c("vision_feature_select_strategy", "default", "transformers:convert-llava",
           note="LlavaConfig default, kept for non-Qwen text models"),
        _c("image_layout", "fixed", "transformers:convert-llava", note="CLIP image processor"),
        _c("image_grid_pinpoints", None, "transformers:convert-llava", note="CLIP image processor"),
        _c("image_tokens", 576, "transformers:defaults", note="24^2 patches, CLS dropped"),
        *_clip_processor("llava-hf-1.5-7b:preprocessor", note=_NOTE_PROC_CLIP),
        _c("processor.patch_size", 14, "transformers:defaults", note=_NOTE_PROC_FILE),
        _c("processor.num_additional_image_tokens", 1, "transformers:defaults", note=_NOTE_PROC_FILE),
        *_missing("template", "the 13B checkpoint's chat_template.json not found; the 7B's is the registry's"),
        _c("pad_to_square", True, "llava:finetune-v1.5-13b", note="--image_aspect_ratio pad"),
    ),
    "llava-v1.6-vicuna-7b": _llava_next(
        "llava-v1.6-vicuna-7b",
        hub=(_c("hub_id", "llava-hf/llava-v1.6-vicuna-7b-hf", "transformers:convert-llava-next",
                note="push_to_hub(f'llava-hf/{repo_id}-hf') for liuhaotian/llava-v1.6-vicuna-7b"),),
        text=(_c("text_model_type", "llama", "transformers:convert-llava-next",
                 note="text_model_id = lmsys/vicuna-7b-v1.5"),
              *_text("llava-hf-1.5-7b:config", "derived", _NOTE_V7, **_V7_TEXT),
              _c("head_dim", 128, "llava-hf-1.5-7b:config", note=_NOTE_V7),
              _c("rope_theta", 10000.0, "transformers:defaults", note=_NOTE_V7),
              _c("rms_norm_eps", 1e-05, "llava-hf-1.5-7b:config", note=_NOTE_V7)),
        template=(_c("template", _SYSTEM + " USER: {prompt} ASSISTANT:", "transformers:convert-llava-next",
                     note="the prompt the conversion checks liuhaotian/llava-v1.6-vicuna-7b against"),)),
    "llava-v1.6-vicuna-13b": _llava_next(
        "llava-v1.6-vicuna-13b",
        hub=_missing("hub_id", "the conversion script lists only mistral-7b and vicuna-7b; " + _NOTE_NEXT),
        text=(_c("text_model_type", "llama", "transformers:convert-llava-next",
                 note="Vicuna v1.5 is a Llama model; the script's vicuna branch names lmsys/vicuna-7b-v1.5"),
              *_missing("layers heads kv_heads head_dim hidden_size intermediate_size rope_theta rms_norm_eps",
                        _NOTE_13B)),
        template=_missing("template", "the conversion covers vicuna-7b only; " + _NOTE_NEXT)),
    "llava-v1.6-mistral-7b": _llava_next(
        "llava-v1.6-mistral-7b",
        hub=(_c("hub_id", "llava-hf/llava-v1.6-mistral-7b-hf", "transformers:convert-llava-next",
                note="push_to_hub(f'llava-hf/{repo_id}-hf') for liuhaotian/llava-v1.6-mistral-7b"),),
        text=(_c("text_model_type", "mistral", "transformers:convert-llava-next",
                 note="text_model_id = the original config's _name_or_path (Mistral-7B-Instruct-v0.2)"),
              *_text("mistral-7b-instruct-v0.2:params", "derived",
                     "Mistral-7B-v0.2-Instruct params (n_layers, n_heads, n_kv_heads, head_dim, dim, hidden_dim, "
                     "rope_theta, norm_eps)", layers=32, heads=32, kv_heads=8, head_dim=128, hidden_size=4096,
                     intermediate_size=14336, rope_theta=1000000.0, rms_norm_eps=1e-05)),
        template=(_c("template", "[INST] {prompt} [/INST]", "transformers:convert-llava-next",
                     note="the prompt the conversion checks liuhaotian/llava-v1.6-mistral-7b against"),)),
    "vip-llava-7b": _vip(
        "7b",
        hub=(_c("hub_id", "llava-hf/vip-llava-7b-hf", "transformers:doc-vipllava"),),
        text=(_c("text_model_type", "llama", "vip-llava:finetune-stage2",
                 note="base LM lmsys/vicuna-$model_size-v1-5 with model_size=7b"),
              *_text("llava-hf-1.5-7b:config", "derived", _NOTE_V7, **_V7_TEXT),
              _c("head_dim", 128, "llava-hf-1.5-7b:config", note=_NOTE_V7),
              _c("rope_theta", 10000.0, "transformers:defaults", note=_NOTE_V7),
              _c("rms_norm_eps", 1e-05, "llava-hf-1.5-7b:config", note=_NOTE_V7))),
    "vip-llava-13b": _vip(
        "13b",
        hub=_missing("hub_id", _NOTE_VIP),
        text=(_c("text_model_type", "llama", "vip-llava:finetune-stage2",
                 note="base LM lmsys/vicuna-$model_size-v1-5 (the script's MODEL_VERSION), model_size 13b"),
              *_missing("layers heads kv_heads head_dim hidden_size intermediate_size rope_theta rms_norm_eps",
                        _NOTE_13B))),
    "llava-1.5-llama-3-8b": (
        _c("hub_id", "xtuner/llava-llama-3-8b-v1_1-transformers", "xtuner:readme-llama3",
           note="HuggingFace LLaVA format of LLaVA-Llama-3-8B-v1.1, converted from the lora_e1_gpu8_internvl "
                "fine-tune config"),
        _c("architecture", "llava", "xtuner:convert-llama3", note="LlavaConfig"),
        *_text("hunyuan:llava-llama-3-text-config", "file",
               "the checkpoint's language-model config (LLAMA_CONFIG; vocab 128320 is the LLaVA-extended "
               "vocabulary: 128256 + <image> + <pad>, padded to 64)",
               text_model_type="llama", layers=32, heads=32, kv_heads=8, head_dim=128, hidden_size=4096,
               intermediate_size=14336, vocab_size=128320, rope_theta=500000.0, rms_norm_eps=1e-05),
        *_clip_vision("xtuner:finetune-llama3", note="visual encoder openai/clip-vit-large-patch14-336"),
        _c("vision_feature_layer", -2, "xtuner:model",
           note="visual_select_layer=-2; the conversion keeps LlavaConfig's default -2"),
        _c("vision_feature_select_strategy", "default", "xtuner:model", note="hidden_states[-2][:, 1:]"),
        _c("image_layout", "fixed", "xtuner:convert-llama3", note="CLIPImageProcessor"),
        _c("image_grid_pinpoints", None, "xtuner:convert-llama3", note="CLIPImageProcessor"),
        _c("image_tokens", 576, "xtuner:model", note="24^2 patches, CLS dropped"),
        *_clip_processor("llava-hf-1.5-7b:preprocessor", note="CLIPImageProcessor.from_pretrained of the CLIP-336 "
                         "visual encoder (xtuner:convert-llama3); the same file as llava-1.5-7b-hf's"),
        _c("processor.patch_size", 14, "transformers:defaults", note=_NOTE_PROC_FILE),
        _c("processor.num_additional_image_tokens", 1, "transformers:defaults", note=_NOTE_PROC_FILE),
        _c("template", "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
                       "<|start_header_id|>assistant<|end_header_id|>\n\n", "xtuner:templates",
           note="llama3_chat INSTRUCTION; the fine-tune config sets SYSTEM = ''. The paper's checkpoint "
                "(mucai/llava-1.5-llama-3-8b) was trained with ViP-LLaVA's conv 'llava_llama_3', which adds a "
                "system prompt (vip-llava:finetune-llama3, vip-llava:conversation)"),
        _c("pad_to_square", True, "xtuner:finetune-llama3",
           note="pad_image_to_square=True; xtuner:dataset pads with expand2square(image_mean)"),
    ),
    "llava-1.5-phi-3-mini": (
        _c("hub_id", "xtuner/llava-phi-3-mini-hf", "xtuner:readme-phi3",
           note="HuggingFace LLaVA format of LLaVA-Phi-3-mini (full_e2_gpu8_internvl fine-tune config)"),
        _c("architecture", "llava", "xtuner:convert-phi3", note="LlavaConfig"),
        _c("text_model_type", "llama", "xtuner:phi-to-llama",
           note="Phi-3 converted to the Llama layout: model_type 'llama', the Phi-3 config values kept"),
        *_text("transformers:defaults", "derived",
               "Phi3Config defaults, documented as microsoft/Phi-3-mini-4k-instruct (the fine-tune's LLM); "
               "xtuner:phi-to-llama copies that config; the conversion resizes only when the tokenizer outgrows "
               "32064, which <image> (32011) and <pad> do not",
               layers=32, heads=32, kv_heads=32, hidden_size=3072, intermediate_size=8192, vocab_size=32064,
               rope_theta=10000.0, rms_norm_eps=1e-05),
        _c("head_dim", 96, "transformers:defaults", note="3072 / 32"),
        *_clip_vision("xtuner:finetune-phi3", note="visual encoder openai/clip-vit-large-patch14-336"),
        _c("vision_feature_layer", -2, "xtuner:model",
           note="visual_select_layer=-2; the conversion keeps LlavaConfig's default -2"),
        _c("vision_feature_select_strategy", "default", "xtuner:model", note="hidden_states[-2][:, 1:]"),
        _c("image_layout", "fixed", "xtuner:convert-phi3", note="CLIPImageProcessor"),
        _c("image_grid_pinpoints", None, "xtuner:convert-phi3", note="CLIPImageProcessor"),
        _c("image_tokens", 576, "xtuner:model", note="24^2 patches, CLS dropped"),
        *_clip_processor("llava-hf-1.5-7b:preprocessor", note="CLIPImageProcessor.from_pretrained of the CLIP-336 "
                         "visual encoder (xtuner:convert-phi3); the same file as llava-1.5-7b-hf's"),
        _c("processor.patch_size", 14, "transformers:defaults", note=_NOTE_PROC_FILE),
        _c("processor.num_additional_image_tokens", 1, "transformers:defaults", note=_NOTE_PROC_FILE),
        _c("template", "<|user|>\n{prompt}<|end|>\n<|assistant|>\n", "xtuner:templates",
           note="phi3_chat INSTRUCTION; SYSTEM = ''. The paper's checkpoint used ViP-LLaVA's conv 'llava_phi_3' "
                "with a system prompt (vip-llava:finetune-phi3)"),
        _c("pad_to_square", True, "xtuner:finetune-phi3",
           note="pad_image_to_square=True; xtuner:dataset pads with expand2square(image_mean)"),
    ),
}

_UNSTATED = object()  # a field the registry itself does not state (compared with the offline build only)


def registry_value(spec: ModelSpec, field: str) -> Any:
    """The registry's value of a :data:`CHECKED_FIELDS` name for ``spec`` (tuples as lists), or ``_UNSTATED``."""
    if field.startswith("vision."):
        return CLIP_L_336[field.split(".", 1)[1]]
    if field == "image_grid_pinpoints":
        return [list(p) for p in ANYRES_PINPOINTS] if spec.image_layout == "anyres" else None
    if field == "template":
        return TEMPLATES[spec.template]
    if field in {f.name for f in fields(ModelSpec)}:
        return _plain(getattr(spec, field))
    return _UNSTATED


def built_value(config: Any, processor: Any, field: str) -> Any:
    """What a built config / processor (``helpers.offline``) holds for ``field``, or ``_UNSTATED``.

    Depths (``layers``, ``vision.num_hidden_layers``) and ``vocab_size`` are the offline build's own choices
    (one decoder layer, the vision layers the feature layers need, a word-level vocabulary): not compared.
    """
    text, vision = config.text_config, config.vision_config
    image = getattr(processor, "image_processor", None)
    if field in {"heads", "kv_heads", "head_dim", "hidden_size", "intermediate_size", "rms_norm_eps"}:
        key = {"heads": "num_attention_heads", "kv_heads": "num_key_value_heads"}.get(field, field)
        return getattr(text, key)
    if field == "rope_theta":
        rope = getattr(text, "rope_parameters", None) or {}
        return float(rope.get("rope_theta", getattr(text, "rope_theta", 0.0)))
    if field == "architecture":
        return config.model_type
    if field == "text_model_type":
        return text.model_type
    if field.startswith("vision.") and field != "vision.num_hidden_layers":
        return getattr(vision, field.split(".", 1)[1])
    if field == "vision_feature_layer":
        return _plain(getattr(config, "vision_feature_layers", None) or config.vision_feature_layer)
    if field == "vision_feature_select_strategy" and config.model_type != "vipllava":
        return config.vision_feature_select_strategy
    if field == "image_grid_pinpoints":
        return _plain(getattr(config, "image_grid_pinpoints", None) if config.model_type == "llava_next" else None)
    if field.startswith("processor.") and processor is not None:
        key = field.split(".", 1)[1]
        owner = processor if key in ("patch_size", "num_additional_image_tokens") else image
        return _plain(getattr(owner, key))
    return _UNSTATED


def _plain(value: Any) -> Any:
    """Tuples as lists, size dicts (``SizeDict``) as plain dicts of their set keys, recursively."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if is_dataclass(value) and not isinstance(value, type):  # transformers' SizeDict
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict) and isinstance(actual, dict):  # the recorded keys must match; others may exist
        return all(k in actual and _same(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(_same(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, (int, float)) and isinstance(expected, (int, float)) and \
            abs(float(expected) - float(actual)) <= 1e-9 * max(1.0, abs(float(expected)))
    return expected == actual


def registry_mismatches(name: str, *, config: Any = None, processor: Any = None,
                        only: Collection[str] | None = None) -> list[str]:
    """Every disagreement between :data:`REGISTRY_CHECKS` ``[name]`` and the registry (empty: all agree).

    With ``config`` (and ``processor``) from ``helpers.offline``, also every disagreement with what was built.
    ``only`` limits the comparison to those fields (e.g. the geometry a ``tiny=True`` build keeps). Records
    marked ``"not found"`` have nothing to compare.
    """
    spec = REGISTRY[name]
    out = []
    for check in REGISTRY_CHECKS[name]:
        if check.how == "not found" or (only is not None and check.field not in only):
            continue
        sides = [("registry", registry_value(spec, check.field))]
        if config is not None:
            sides.append(("built", built_value(config, processor, check.field)))
        for side, actual in sides:
            if actual is not _UNSTATED and not _same(check.value, actual):
                out.append(f"{name}: {check.field}: {side} has {actual!r}, {SOURCES[check.source]} shows "
                           f"{check.value!r} ({check.how})")
    return out


def unchecked_fields(name: str) -> list[str]:
    """The :data:`CHECKED_FIELDS` of ``name`` that no public copy confirmed (only ``"not found"`` records)."""
    found = {c.field for c in REGISTRY_CHECKS[name] if c.how != "not found"}
    return [f for f in CHECKED_FIELDS if f not in found]

# ---------------------------------------------------------------------------------------------
# Errors


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do."""


class NumericsError(FloatingPointError):
    """NaN or inf in a model's logits; the message says what to change."""


def resolve(name_or_path: str | Path) -> tuple[ModelSpec | None, str]:
    """Map a registry name, a hub id or a local folder to ``(spec or None, source to load from)``.

    Raises :class:`ModelLoadError` for an unknown name or a folder that is not a model.
    """
    key = str(name_or_path)
    if key in REGISTRY:
        return REGISTRY[key], REGISTRY[key].hub_id
    for spec in REGISTRY.values():
        if key in (spec.hub_id, spec.paper_checkpoint):
            if key == spec.paper_checkpoint:
                raise ModelLoadError(
                    f"{key!r} is in the original LLaVA format, which transformers cannot load; "
                    f"use {spec.name!r} (loads {spec.hub_id})")
            return spec, key
    path = Path(key).expanduser()
    if path.is_dir():
        if is_organism(path):
            return None, str(path)
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{str(path)!r} is a folder but not a Hugging Face model: it has no config.json. Point to a folder "
                "made by save_pretrained (e.g. data/toy-a1) or use a registry name: " + ", ".join(REGISTRY))
        return None, str(path)
    if path.exists():
        raise ModelLoadError(f"{str(path)!r} is a file, not a model folder or a registry name")
    known = ", ".join(REGISTRY)
    raise ModelLoadError(
        f"unknown model {key!r}. Known models: {known}. A local Hugging Face folder works too "
        "(path must exist); other hub ids of LLaVA-family models load with their config's geometry.")


def estimate_gib(spec: ModelSpec, quantization: str | None) -> float:
    """Rough memory to hold the weights, in GiB (language model quantized, vision tower 16-bit)."""
    h, i, L = spec.hidden_size, spec.intermediate_size, spec.layers
    attn = h * spec.heads * spec.head_dim * 2 + h * spec.kv_heads * spec.head_dim * 2
    lm = L * (attn + 3 * h * i)
    embed = 2 * spec.vocab_size * h
    bytes_per = {None: 2.0, "8bit": 1.0, "4bit": 0.56}[quantization]
    vision = 0.31e9 * 2
    return (lm * bytes_per + embed * 2 + vision) / 2**30


# ---------------------------------------------------------------------------------------------
# Loading


def compute_dtype(device: str) -> torch.dtype:
    """bf16 where the device supports it (CPU, Ampere+ GPUs), fp16 on older GPUs (T4, V100)."""
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def bitsandbytes_problem(device: str) -> str | None:
    """Why bitsandbytes cannot quantize on ``device``, or ``None`` if a 4-bit round trip works there."""
    try:
        import bitsandbytes.functional as bnbf
    except Exception as err:  # ImportError, or a broken native library
        return f"bitsandbytes does not import ({err.__class__.__name__}: {err}); `pip install bitsandbytes`"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device is visible"
    try:
        x = torch.randn(64, 64, device=device, dtype=torch.bfloat16)
        q, state = bnbf.quantize_4bit(x, quant_type="nf4")
        bnbf.dequantize_4bit(q, state)
    except Exception as err:
        return f"bitsandbytes cannot run 4-bit kernels on {device!r} ({err.__class__.__name__}: {err})"
    return None


def quantization_config(quantization: str, device: str, skip_modules: tuple[str, ...]) -> Any:
    """The ``BitsAndBytesConfig`` for ``"4bit"`` (NF4, double quant) or ``"8bit"`` (LLM.int8)."""
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype(device),
                                  llm_int8_skip_modules=list(skip_modules))
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(skip_modules))
    raise ValueError(f"quantization must be None, '4bit' or '8bit', got {quantization!r}")


DEFAULT_SKIP_MODULES = ("model.vision_tower", "model.multi_modal_projector", "lm_head")


def configure_processor(processor: Any, spec: ModelSpec | None, pad_to_square: bool | None = None) -> Any:
    """The processor with the preprocessing the paper's code used for ``spec``.

    ``pad_to_square``: None (default) = ``spec.pad_to_square`` (on for LLaVA-1.5 and ViP-LLaVA); True / False
    force it (``helpers.layout.pad_to_square``: pad with the mean colour, then resize; the token layout follows).
    Anyres processors (LLaVA-NeXT) have their own padding: True raises ``ValueError`` there.
    """
    pad = (spec.pad_to_square if spec is not None else False) if pad_to_square is None else bool(pad_to_square)
    if getattr(processor.image_processor, "image_grid_pinpoints", None) is not None:
        if pad_to_square:
            raise ValueError("pad_to_square=True: LLaVA-NeXT's anyres processor pads its own way; leave it None")
        return processor
    if pad_to_square is None and not pad:
        return processor  # keep the checkpoint's own processor untouched
    return _pad_to_square(processor, pad)


def load(name_or_path: str | Path, quantization: str | None = None, device: str | None = None,
         dtype: torch.dtype | None = None, attn_implementation: str = "sdpa",
         skip_modules: tuple[str, ...] = DEFAULT_SKIP_MODULES, check: bool = True,
         pad_to_square: bool | None = None) -> tuple[Any, Any]:
    """Load a model and its processor: a registry name, a hub id or a local Hugging Face folder.

    Args:
        name_or_path: a key of :data:`REGISTRY`, a hub id, or a folder made by ``save_pretrained``.
        quantization: ``None``, ``"4bit"`` (bitsandbytes NF4) or ``"8bit"``.
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``; default CUDA when visible, else CPU.
        dtype: weights dtype when not quantized (default fp16/bf16 on CUDA, fp32 on CPU).
        attn_implementation: the kernel the model runs with; capture keeps it (``helpers.capture``).
        skip_modules: modules kept unquantized (see the module docstring).
        check: run a 4-token text forward and raise :class:`NumericsError` on NaN/inf logits.
        pad_to_square: pad images to a square with the mean colour before the resize (:func:`configure_processor`);
            None (default): as the paper's code did, on for LLaVA-1.5 and ViP-LLaVA (``ModelSpec.pad_to_square``).

    Returns ``(model, processor)`` with ``model.eval()`` and ``model.vh_spec`` set.
    """
    from transformers import AutoModelForImageTextToText

    spec, source = resolve(name_or_path)
    device = device or default_device()
    if spec is None and Path(source).is_dir() and not is_organism(source):
        check_folder(Path(source))  # organism folders are checked by helpers.assemble.read_meta
    revision = spec.revision if spec is not None else None
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": False,
                              "attn_implementation": attn_implementation}
    if quantization is not None:
        problem = bitsandbytes_problem(device)
        if problem:
            size = f" (~{estimate_gib(spec, None):.0f} GiB in 16-bit)" if spec else ""
            raise ModelLoadError(
                f"quantization={quantization!r} needs bitsandbytes on {device!r}, but {problem}. Load with "
                f"quantization=None{size}, or run on a CUDA GPU (Colab: Runtime > Change runtime type > GPU).")
        kwargs["quantization_config"] = quantization_config(quantization, device, skip_modules)
        kwargs["dtype"] = compute_dtype(device)
        kwargs["device_map"] = {"": device}
    else:
        kwargs["dtype"] = dtype or (compute_dtype(device) if device.startswith("cuda") else torch.float32)
    check_device(device, source)
    try:
        if is_organism(source):
            model, processor = _load_organism(source, quantization, kwargs["dtype"], attn_implementation)
        else:
            model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
            processor = configure_processor(_load_processor(source, revision), spec, pad_to_square)
    except torch.cuda.OutOfMemoryError as err:
        raise ModelLoadError(_oom_advice(spec, quantization, device)) from err
    except OSError as err:
        raise ModelLoadError(
            f"could not load {source!r} ({err}). Without network, only local folders load: use a toy model in "
            "data/ or one built by helpers.offline.save(...)") from err
    if quantization is None:
        model.to(device)
    model.eval()
    model.vh_spec = spec or spec_from_config(model.config, Path(source))
    processor.tokenizer.padding_side = "left"
    if check:
        check_finite(_probe_logits(model, processor), what=f"{model.vh_spec.name} after loading")
    return model, processor


def _load_organism(folder: str, quantization: str | None, dtype: torch.dtype, attn_implementation: str
                   ) -> tuple[Any, Any]:
    """An organism (``helpers.assemble``): base LM rebuilt from its package plus the shipped trained parts."""
    if quantization is not None:
        raise ModelLoadError(f"{folder} is an organism (a small model rebuilt on CPU); load it with quantization=None")
    try:
        model, processor = load_organism(folder, dtype=dtype)
    except (OrganismError, BaseLMError) as err:
        raise ModelLoadError(f"organism {folder}: {err}") from err
    model.set_attn_implementation(attn_implementation)
    return model, processor


def _load_processor(source: str, revision: str | None) -> Any:
    """``AutoProcessor.from_pretrained``; errors from bad tokenizer or processor files become :class:`ModelLoadError`."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source, revision=revision, trust_remote_code=False)
    except (ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"{source}: the processor (tokenizer and image processor) cannot be loaded "
                             f"({type(err).__name__}: {str(err)[:300]}). Check that the folder holds the files "
                             "processor.save_pretrained writes (tokenizer.json, tokenizer_config.json, "
                             "processor_config.json)") from err


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def check_device(device: str, source: str) -> None:
    """Raise :class:`ModelLoadError` naming ``source`` unless ``device`` is a torch device that is there.

    Checked before anything loads: ``"cuda"`` without a visible CUDA device, a GPU index beyond the
    visible ones and strings torch does not read (``"gpu"``).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelLoadError(f"loading {source}: device {device!r} is not a torch device ({err}); use 'cpu', "
                             "'cuda' or 'cuda:0', or None to pick by hardware") from err
    if dev.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise ModelLoadError(f"loading {source}: device {device!r} asked for, but no CUDA device is visible. Use "
                             "device='cpu' (or None to pick by hardware), or run on a CUDA GPU")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelLoadError(f"loading {source}: device {device!r} asked for, but only {torch.cuda.device_count()} "
                             "CUDA device(s) are visible")


def check_folder(folder: Path) -> None:
    """Cheap checks of a local model folder before its weights load; :class:`ModelLoadError` naming it.

    ``config.json`` must be JSON with a ``model_type`` transformers loads as an image-text-to-text model
    (LLaVA family); every ``*.safetensors`` file must be as long as its header says (a truncated download
    or copy is caught here, not half-way through loading); shards named by an index must exist; a
    tokenizer file (:data:`TOKENIZER_FILES`) must be there.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{folder}: config.json cannot be read ({err}). Re-save the model with "
                             "save_pretrained, or point to another folder") from err
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ModelLoadError(f"{folder}: config.json has model_type {kind!r}, which this transformers does not load "
                             "as a vision-language model (LLaVA family: 'llava', 'llava_next', 'vipllava'). Point to "
                             "a LLaVA-family folder, or upgrade transformers if the model type is new")
    for path in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            raise ModelLoadError(f"{folder}: weights file {path.name} is {problem}. Copy or download it again, or "
                                 "re-save the model with save_pretrained")
    for index in folder.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise ModelLoadError(f"{folder}: {index.name} cannot be read ({err})") from err
        missing = sorted(name for name in shards if not (folder / name).is_file())
        if missing:
            raise ModelLoadError(f"{folder}: {index.name} names weight files that are not there: {missing}")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(f"{folder}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)}). Save the "
                             "processor too: processor.save_pretrained(folder)")


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (from its header, without reading the tensors), or ``None``."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes, shorter than a safetensors header)"
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return f"truncated or corrupt (its header claims {n} bytes of metadata, the file has {size} bytes)"
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "corrupt (its header is not safetensors JSON)"
    if 8 + n + end != size:
        return f"truncated or corrupt (its header describes {8 + n + end} bytes, the file has {size})"
    return None


def _oom_advice(spec: ModelSpec | None, quantization: str | None, device: str) -> str:
    free = torch.cuda.mem_get_info()[0] / 2**30 if torch.cuda.is_available() else float("nan")
    if spec is None:
        return f"out of memory on {device} while loading ({free:.1f} GiB free): try quantization='4bit'"
    need = {q: estimate_gib(spec, q) for q in (None, "8bit", "4bit")}
    fits = [q or "16-bit" for q, gib in need.items() if gib * 1.15 < free]
    return (f"out of memory on {device} loading {spec.name} with quantization={quantization!r}: weights need "
            f"~{need[quantization]:.1f} GiB, {free:.1f} GiB free. 16-bit ~{need[None]:.0f} GiB, 8-bit "
            f"~{need['8bit']:.0f} GiB, 4-bit ~{need['4bit']:.1f} GiB. "
            + (f"Fits here: {', '.join(fits)}." if fits else "Use a GPU with more memory (a 16 GiB T4 fits 4-bit "
                                                              "7B/8B; 13B in 4-bit needs ~9 GiB)."))


def _probe_logits(model: Any, processor: Any) -> torch.Tensor:
    ids = processor.tokenizer("a b c", return_tensors="pt").input_ids.to(model.device)
    with torch.no_grad():
        return model(input_ids=ids).logits


def check_finite(logits: torch.Tensor, what: str = "logits") -> None:
    """Raise :class:`NumericsError` if ``logits`` holds NaN or inf, saying what to change."""
    if torch.isfinite(logits).all():
        return
    bad = (~torch.isfinite(logits)).sum().item()
    raise NumericsError(
        f"{bad} NaN/inf values in {what} (dtype {logits.dtype}). On GPUs without bf16 (T4, V100) fp16 "
        "activations can overflow: load with quantization='8bit', or quantization=None with dtype=torch.float32 "
        "on a larger GPU; on bf16 GPUs, check that the checkpoint is not corrupt.")


def spec_from_config(config: Any, folder: Path | None = None) -> ModelSpec:
    """A :class:`ModelSpec` derived from a loaded config (local folders, other hub ids).

    A ``visual_heads.json`` in the folder can set ``name``, ``family``, ``template`` and ``note``
    (the toy models ship one); otherwise the template follows the architecture's closest registry entry.
    """
    text = config.text_config
    meta = {}
    if folder is not None and (folder / "visual_heads.json").is_file():
        meta = json.loads((folder / "visual_heads.json").read_text())
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    vision = config.vision_config
    fixed = config.model_type != "llava_next"
    grid = (vision.image_size // vision.patch_size) ** 2
    default_template = {"llava_next": "vicuna_v1_system", "vipllava": "vip_llava"}.get(config.model_type,
                                                                                        "vicuna_v1")
    return ModelSpec(
        name=meta.get("name", folder.name if folder else config.model_type), hub_id=str(folder or ""),
        paper_checkpoint=meta.get("paper_checkpoint", ""), family=meta.get("family", "unknown"),
        backbone=meta.get("backbone", text.model_type), architecture=config.model_type,
        text_model_type=text.model_type, layers=text.num_hidden_layers, heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", heads) or heads, head_dim=head_dim,
        hidden_size=text.hidden_size, intermediate_size=text.intermediate_size, vocab_size=text.vocab_size,
        image_layout="fixed" if fixed else "anyres", image_tokens=grid if fixed else None,
        template=meta.get("template", default_template), revision="local", note=meta.get("note", ""),
        vision_feature_layer=tuple(getattr(config, "vision_feature_layers", ())) or config.vision_feature_layer,
    )


def spec_of(model: Any) -> ModelSpec:
    """The :class:`ModelSpec` of a model: the one ``load`` attached, else derived from its config."""
    spec = getattr(model, "vh_spec", None)
    return spec if spec is not None else spec_from_config(model.config)


def decoder_layers(model: Any) -> list[Any]:
    """The language model's decoder layers, ``[layers]`` modules each with ``.self_attn``."""
    return list(model.model.language_model.layers)


def memory_footprint_gib(model: Any) -> float:
    """Bytes held by the model's parameters and buffers, in GiB."""
    return model.get_memory_footprint() / 2**30
