"""The vision-language parts of a training run (LLaVA-style: vision encoder + projector + LLM).

Stages are data (`method.stage`, `method.trainable`): `pretrain` trains the projector alone on
caption data and its output is the projector (projector.safetensors + projector.json, like XTuner's
iter_xxx.pth); `finetune` starts from `model.pretrained_projector` and trains projector + LLM (LoRA
or full), optionally LoRA on the vision encoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mmtune.errors import ConfigError

log = logging.getLogger("mmtune.train")


@dataclass
class VlmParts:
    model: object
    processor: object
    tokenizer: object
    image_spec: object
    image_loader: object


def check_vlm_recipe(recipe) -> None:
    if recipe.method.type == "qlora":
        raise ConfigError("QLoRA is not supported for vision-language models yet", hint="use method.type: lora or full")
    if recipe.method.stage == "finetune" and not recipe.model.pretrained_projector:
        log.warning("finetune stage without model.pretrained_projector: the projector starts untrained")
    if recipe.data.image_folder is None:
        raise ConfigError("a vision-language recipe needs data.image_folder (image paths are relative to it)")


def build_llava_for_recipe(recipe, dtype: str):
    """(model, processor) as the recipe describes them, before training: LLM + vision encoder + new or
    pretrained projector, slice-marker tokens added when the recipe slices images. Export rebuilds
    the same model before loading the trained weights."""
    from mmtune.data.vlm import SLICE_END, SLICE_START
    from mmtune.models.llava import build_llava
    from mmtune.models.projector import load_projector

    m = recipe.model
    model, processor = build_llava(
        m.path, m.vision.path, projector=m.projector.type, vision_feature_layer=m.vision.feature_layer,
        vision_feature_select=m.vision.feature_select, dtype=dtype, trust_remote_code=m.trust_remote_code,
        attn_implementation=m.attn_implementation, tokenizer_path=m.tokenizer, resampler_query_nums=m.projector.query_nums,
    )
    tokenizer = processor.tokenizer
    if recipe.data.slice is not None:  # slice markers must be single tokens
        tokenizer.add_tokens([SLICE_START, SLICE_END], special_tokens=True)
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if m.pretrained_projector:
        load_projector(model, m.pretrained_projector)
        log.info("projector loaded from %s", m.pretrained_projector)
    return model, processor


def build_vlm(recipe, device: str) -> VlmParts:
    """Model (with trainable parts set), processor, tokenizer and the image encoding/loading specs."""
    from mmtune.data.vlm import ImageLoader, image_spec_for
    from mmtune.models.adapters import enable_activation_checkpointing
    from mmtune.models.freeze import apply_trainable
    from mmtune.models.llava import image_tokens_per_image

    check_vlm_recipe(recipe)
    m = recipe.model
    dtype = m.dtype if m.dtype != "auto" else ("bfloat16" if recipe.train.precision == "bf16" else "float32")
    model, processor = build_llava_for_recipe(recipe, dtype)
    tokenizer = processor.tokenizer
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    if recipe.train.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model = apply_trainable(model, recipe.method.vlm_trainable(), recipe.method.lora)
    model.to(device)
    spec = image_spec_for(tokenizer, model.config.image_token_id, image_tokens_per_image(model.config), recipe.data)
    loader = ImageLoader(processor.image_processor, recipe.data.image_mode, recipe.data.slice)
    return VlmParts(model, processor, tokenizer, spec, loader)


def vlm_meta(recipe) -> dict:
    m = recipe.model
    return {
        "vision": m.vision.model_dump(),
        "projector": m.projector.model_dump(),
        "pretrained_projector": m.pretrained_projector,
        "stage": recipe.method.stage,
        "trainable": recipe.method.vlm_trainable(),
        "image_mode": recipe.data.image_mode,
        "slice": recipe.data.slice.model_dump() if recipe.data.slice else None,
    }


def save_final(trainer, parts: VlmParts, recipe, final_dir: Path) -> None:
    """Pretrain: the projector alone. Finetune: the trained weights (adapter or full model) + processor."""
    from mmtune.models.projector import save_projector

    if recipe.method.stage == "pretrain":
        save_projector(trainer.model, final_dir)
        log.info("pretrained projector saved to %s (use it as model.pretrained_projector)", final_dir)
        return
    trainer.save_model(str(final_dir))
    parts.processor.save_pretrained(str(final_dir))
