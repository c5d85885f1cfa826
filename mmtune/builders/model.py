"""The model a recipe trains: a text LM with its method (LoRA / QLoRA / full), or a LLaVA model
(LLM + vision encoder + projector) with its trainable parts; and the same LLaVA rebuilt for export.

VLM stages are data (`method.stage`, `method.trainable`): `pretrain` trains the projector alone on
caption data; `finetune` starts from `model.pretrained_projector` and trains projector + LLM (LoRA
or full), optionally LoRA on the vision encoder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mmtune.data.vlm import SLICE_END, SLICE_START, ImageLoader, ImageSpec, image_spec_for
from mmtune.errors import ConfigError
from mmtune.models.llava import build_llava, image_tokens_per_image
from mmtune.models.load import load_causal_lm
from mmtune.models.projector import load_projector
from mmtune.models.remote_code import check_first_forward
from mmtune.models.trainable import apply_trainable, enable_activation_checkpointing, prepare_text_model, trainable_groups

log = logging.getLogger("mmtune.train")


@dataclass
class VisionParts:
    """A LLaVA model to train and what its data needs: the processor's tokenizer (with the image
    token), how images become tokens (`image_spec`) and pixels (`image_loader`)."""

    model: object
    processor: object
    tokenizer: object
    image_spec: ImageSpec
    image_loader: ImageLoader


def text_model(recipe, device: str):
    """The recipe's causal LM on `device`, prepared for its method (a PeftModel for LoRA / QLoRA)."""
    model = load_causal_lm(recipe.model, precision=recipe.train.precision,
                           quantize_4bit=recipe.method.type == "qlora", device=device)
    model.config.use_cache = False  # needed for packed rows and gradient checkpointing
    check_first_forward(model)
    return prepare_text_model(model, recipe.method, gradient_checkpointing=recipe.train.gradient_checkpointing)


def check_vision_recipe(recipe) -> None:
    if recipe.method.type == "qlora":
        raise ConfigError("QLoRA is not supported for vision-language models yet", hint="use method.type: lora or full")
    if recipe.method.stage == "finetune" and not recipe.model.pretrained_projector:
        log.warning("finetune stage without model.pretrained_projector: the projector starts untrained")
    if recipe.data.image_folder is None:
        raise ConfigError("a vision-language recipe needs data.image_folder (image paths are relative to it)")


def llava_for_recipe(recipe, dtype: str):
    """(model, processor) as the recipe describes them, before training: LLM + vision encoder + new or
    pretrained projector, slice-marker tokens added when the recipe slices images. Export rebuilds
    the same model before loading the trained weights."""
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


def vision_model(recipe, device: str) -> VisionParts:
    """The LLaVA model to train (trainable parts set, on `device`) and its image handling."""
    check_vision_recipe(recipe)
    m = recipe.model
    dtype = m.dtype if m.dtype != "auto" else ("bfloat16" if recipe.train.precision == "bf16" else "float32")
    model, processor = llava_for_recipe(recipe, dtype)
    tokenizer = processor.tokenizer
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    if recipe.train.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model = apply_trainable(model, trainable_groups(recipe.method, vision=True), recipe.method.lora)
    model.to(device)
    spec = image_spec_for(tokenizer, model.config.image_token_id, image_tokens_per_image(model.config), recipe.data)
    loader = ImageLoader(processor.image_processor, recipe.data.image_mode, recipe.data.slice)
    return VisionParts(model, processor, tokenizer, spec, loader)


def sample_images(recipe) -> list:
    """The recipe's `eval.evaluation_images`, opened (for the sample chats of a VLM run)."""
    from mmtune.data.images import open_image

    return [open_image(p, f"eval.evaluation_images[{k}]") for k, p in enumerate(recipe.eval.evaluation_images)]
