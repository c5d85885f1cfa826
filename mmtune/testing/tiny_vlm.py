"""Tiny models of the transformers-native vision-language families, saved as hub checkpoints are.

Each is the family's real config and model class at small sizes (random weights but for patch
embeddings that start as edge filters, mmtune.testing.vision_init), its real image
processor (the PIL backend: no torchvision), a byte-level BPE tokenizer trained here on the tiny
corpus with the family's special tokens, and the family's official chat template
(mmtune/testing/vlm_templates/, provenance in its SOURCES.md). `processor_config.json` names the
family's processor class, so `AutoProcessor` loads it where torchvision is installed and
mmtune.models.processors.load_processor everywhere. They load with `from_pretrained(DIR)`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from mmtune.testing.cache import build_atomically, cache_root
from mmtune.testing.vision_init import init_patch_embeddings

BUILD_VERSION = "v2"  # v2: edge-filter patch embeddings (vision_init)
VOCAB_SIZE = 2048
TEXT = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=4096)
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                 "<|image_pad|>", "<|video_pad|>"]


def chat_template(family: str) -> str:
    return (resources.files("mmtune.testing") / "vlm_templates" / f"{family}.jinja").read_text(encoding="utf-8")


def train_tokenizer(specials: list[str], *, eos: str, pad: str, bos: str | None = None, named: dict | None = None,
                    template: str | None = None):
    """A byte-level BPE trained on the tiny corpus, with `specials` as single special tokens and
    `named` ones as tokenizer attributes (`tokenizer.image_token`, ...), as the families' processors read them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from mmtune.testing.tiny import _corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    named = named or {}
    others = [t for t in specials if t not in (eos, pad, bos, *named.values())]
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, bos_token=bos, unk_token=None,
                                 extra_special_tokens={**named} if named else others)
    if named and others:
        hf.add_special_tokens({"additional_special_tokens": others})
    hf.chat_template = template
    hf.model_max_length = 4096
    return hf


def save_processor_files(out: Path, processor_class: str, image_processor, tokenizer, template: str,
                         **processor_kwargs) -> None:
    """What `ProcessorMixin.save_pretrained` writes, without needing a video processor (torchvision)."""
    image_processor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps({"processor_class": processor_class, **processor_kwargs},
                                                          indent=2) + "\n")
    (out / "chat_template.jinja").write_text(template, encoding="utf-8")


def _ids(tokenizer, **tokens) -> dict:
    return {name: tokenizer.convert_tokens_to_ids(token) for name, token in tokens.items()}


# ---- Qwen2.5-VL / Qwen3-VL ----------------------------------------------------------------------


def build_qwen_vl(out: Path, family: str, seed: int = 0) -> None:
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    template = chat_template(family)
    tok = train_tokenizer(QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>", template=template)
    ids = _ids(tok, image_token_id="<|image_pad|>", video_token_id="<|video_pad|>",
               vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>")
    text = dict(TEXT, vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                bos_token_id=None, tie_word_embeddings=False)
    if family == "qwen2_5_vl":
        patch = 14
        config = Qwen2_5_VLConfig(
            text_config=dict(text, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                    "mrope_section": [4, 6, 6]}),
            vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=patch,
                               spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
                               out_hidden_size=TEXT["hidden_size"]), **ids)
        processor_class = "Qwen2_5_VLProcessor"
    else:
        patch = 16
        config = Qwen3VLConfig(
            text_config=dict(text, head_dim=32, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                 "mrope_section": [8, 4, 4], "mrope_interleaved": True}),
            vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=patch,
                               spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                               deepstack_visual_indexes=[0], out_hidden_size=TEXT["hidden_size"]), **ids)
        processor_class = "Qwen3VLProcessor"
    _save_model(out, config, seed)
    # 1 to 16 merged tokens per image: tiny images stay a few tokens, as the model is tiny
    image_processor = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                               min_pixels=(2 * patch) ** 2, max_pixels=(2 * patch) ** 2 * 16)
    save_processor_files(out, processor_class, image_processor, tok, template)


# ---- MiniCPM-V 4.6 ----------------------------------------------------------------------------------------

MINICPM_NAMED = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "image_start_token": "<image>",
                 "image_end_token": "</image>", "slice_start_token": "<slice>", "slice_end_token": "</slice>",
                 "image_id_start_token": "<image_id>", "image_id_end_token": "</image_id>"}


def build_minicpmv(out: Path, seed: int = 0) -> None:
    from transformers import MiniCPMV4_6Config
    from transformers.models.minicpmv4_6.image_processing_pil_minicpmv4_6 import MiniCPMV4_6ImageProcessorPil

    template = chat_template("minicpmv4_6")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *MINICPM_NAMED.values(), "<think>", "</think>"]
    tok = train_tokenizer(specials, eos="<|im_end|>", pad="<|endoftext|>", named=MINICPM_NAMED, template=template)
    text = dict(TEXT, model_type="qwen3_5_text", vocab_size=len(tok), head_dim=32,
                # full attention only: Qwen3.5's linear-attention layers cannot be packed (see the family entry)
                layer_types=["full_attention"] * TEXT["num_hidden_layers"],
                linear_conv_kernel_dim=2, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                linear_num_value_heads=4, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                bos_token_id=None, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                 "mrope_section": [2, 1, 1], "mrope_interleaved": True})
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=112,
                  patch_size=14)
    # insert_layer_id below the vision layer count: at its default (6) a 2-layer tower never runs its merger
    config = MiniCPMV4_6Config(text_config=text, vision_config=vision, insert_layer_id=0, downsample_mode="16x",
                               image_token_id=tok.image_token_id, video_token_id=tok.video_token_id)
    _save_model(out, config, seed)
    image_processor = MiniCPMV4_6ImageProcessorPil(scale_resolution=56, max_slice_nums=4, patch_size=14,
                                                   downsample_mode="16x")
    save_processor_files(out, "MiniCPMV4_6Processor", image_processor, tok, template)


# ---- InternVL (-hf) --------------------------------------------------------------------------------------

INTERNVL_NAMED = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                  "video_token": "<video>"}


def build_internvl(out: Path, seed: int = 0) -> None:
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig

    template = chat_template("internvl")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *INTERNVL_NAMED.values()]
    tok = train_tokenizer(specials, eos="<|im_end|>", pad="<|endoftext|>", named=INTERNVL_NAMED, template=template)
    text = dict(TEXT, model_type="qwen2", vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, bos_token_id=None, tie_word_embeddings=False)
    # 56-px tiles of 14-px patches, pixel-shuffled by 0.5: 4 tokens a tile
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=56,
                  patch_size=14)
    config = InternVLConfig(text_config=text, vision_config=vision, image_token_id=tok.context_image_token_id,
                            image_seq_length=4, downsample_ratio=0.5)
    _save_model(out, config, seed)
    image_processor = GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=True, min_patches=1,
                                               max_patches=4)
    save_processor_files(out, "InternVLProcessor", image_processor, tok, template, image_seq_length=4)


# ---- Gemma 3 ----------------------------------------------------------------------------------------------

GEMMA_NAMED = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}


def build_gemma3(out: Path, seed: int = 0) -> None:
    from transformers import Gemma3Config, Gemma3ImageProcessorPil

    template = chat_template("gemma3")
    specials = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", *GEMMA_NAMED.values()]
    tok = train_tokenizer(specials, eos="<eos>", pad="<pad>", bos="<bos>", named=GEMMA_NAMED, template=template)
    text = dict(TEXT, vocab_size=len(tok), head_dim=32, sliding_window=512, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    # SigLIP on 56 px (16 patches) pooled to 4 tokens an image
    vision = dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, image_size=56, patch_size=14)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                          eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                          image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"), tie_word_embeddings=True)
    _save_model(out, config, seed, eos=["<eos>", "<end_of_turn>"], tokenizer=tok)
    image_processor = Gemma3ImageProcessorPil(size={"height": 56, "width": 56})
    save_processor_files(out, "Gemma3Processor", image_processor, tok, template, image_seq_length=4)


# ---- SmolVLM ----------------------------------------------------------------------------------------------

SMOLVLM_NAMED = {"fake_image_token": "<fake_token_around_image>", "image_token": "<image>",
                 "end_of_utterance_token": "<end_of_utterance>", "global_image_token": "<global-img>"}


def build_smolvlm(out: Path, seed: int = 0) -> None:
    from transformers import SmolVLMConfig, SmolVLMImageProcessorPil

    template = chat_template("smolvlm")
    tiles = [f"<row_{r}_col_{c}>" for r in range(1, 5) for c in range(1, 5)]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *SMOLVLM_NAMED.values(), *tiles]
    tok = train_tokenizer(specials, eos="<end_of_utterance>", pad="<|im_end|>", bos="<|im_start|>",
                          named=SMOLVLM_NAMED, template=template)
    text = dict(TEXT, model_type="llama", vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=False)
    # 56-px tiles (16 patches), pixel-shuffled by 2: 4 tokens a tile; images up to 112 px: 2 x 2 tiles + global
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=56,
                  patch_size=14)
    config = SmolVLMConfig(text_config=text, vision_config=vision, scale_factor=2,
                           image_token_id=tok.convert_tokens_to_ids("<image>"))
    _save_model(out, config, seed)
    image_processor = SmolVLMImageProcessorPil(size={"longest_edge": 112}, max_image_size={"longest_edge": 56},
                                               do_image_splitting=True)
    save_processor_files(out, "SmolVLMProcessor", image_processor, tok, template, image_seq_len=4)


# ---- LLaVA-OneVision --------------------------------------------------------------------------------------


def build_llava_onevision(out: Path, seed: int = 0) -> None:
    from transformers import LlavaOnevisionConfig, LlavaOnevisionImageProcessorPil

    template = chat_template("llava_onevision")
    tok = train_tokenizer([*QWEN_SPECIALS[:3], "<image>", "<video>"], eos="<|im_end|>", pad="<|endoftext|>",
                          named={"image_token": "<image>", "video_token": "<video>"}, template=template)
    text = dict(TEXT, model_type="qwen2", vocab_size=len(tok), eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, bos_token_id=None, tie_word_embeddings=False)
    # SigLIP on 28-px crops (4 tokens each); any-resolution grids of up to 2 x 2 crops + the base image
    vision = dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, image_size=28, patch_size=14)
    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
    config = LlavaOnevisionConfig(text_config=text, vision_config=vision, image_token_index=tok.image_token_id,
                                  video_token_index=tok.video_token_id, image_grid_pinpoints=pinpoints,
                                  vision_feature_select_strategy="full", vision_feature_layer=-1)
    _save_model(out, config, seed)
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints)
    save_processor_files(out, "LlavaOnevisionProcessor", image_processor, tok, template, num_image_tokens=4,
                         vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")


def _save_model(out: Path, config, seed: int, eos: list[str] | None = None, tokenizer=None) -> None:
    """The model of `config` with random weights; `eos`: the generation config's stop tokens (Gemma 3
    ends a turn with `<end_of_turn>`, not its eos)."""
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    _big_embeddings(model)
    init_patch_embeddings(model)
    if eos:
        model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in eos]
    model.save_pretrained(out)


def _big_embeddings(model) -> None:
    """Trained LMs have embeddings far larger than a 0.02 init; tiny ones would stay near-uniform."""
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 0.2)
        model.get_output_embeddings().weight.normal_(0.0, 0.2)


BUILDERS = {
    "qwen2_5_vl": lambda out: build_qwen_vl(out, "qwen2_5_vl"),
    "qwen3_vl": lambda out: build_qwen_vl(out, "qwen3_vl"),
    "minicpmv4_6": build_minicpmv,
    "internvl": build_internvl,
    "gemma3": build_gemma3,
    "smolvlm": build_smolvlm,
    "llava_onevision": build_llava_onevision,
}


def tiny_vlm_dir(family: str) -> Path:
    """A saved tiny model of a native VLM family (see BUILDERS)."""
    if family not in BUILDERS:
        raise ValueError(f"no tiny {family!r}; families: {', '.join(BUILDERS)}")
    return build_atomically(cache_root() / f"vlm-{family}-{BUILD_VERSION}", BUILDERS[family])
