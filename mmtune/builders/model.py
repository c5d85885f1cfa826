"""The model a recipe trains: a text LM with its method (LoRA / QLoRA / full), or a vision-language
model with its trainable parts; and the same models rebuilt for export.

Vision-language models come two ways, through one interface (`VisionParts`):
- a checkpoint of a family transformers ships (MiniCPM-V, Qwen-VL, InternVL, Gemma 3, SmolVLM,
  LLaVA-OneVision, llava-hf; mmtune.models.families): the model and its processor load as they are;
- a LLaVA mmtune assembles from an LLM, a vision encoder (`model.vision`) and a projector.
Stages are data (`method.stage`, `method.trainable`): `pretrain` trains the projector alone on
caption data; `finetune` trains projector + LLM (LoRA or full), optionally the vision tower.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from mmtune.data.processor_images import ProcessorImages
from mmtune.data.vlm import SLICE_END, SLICE_START, ImageLoader, LlavaImages, image_spec_for
from mmtune.errors import ConfigError
from mmtune.models.families import FAMILIES, Family, check_knobs, family_for_type, family_of
from mmtune.models.internlm2 import config_dict
from mmtune.models.llava import (
    IMAGE_TOKEN, build_llava, image_tokens_per_image, select_strategy, tokens_per_image, vision_encoder_config,
)
from mmtune.models.load import DTYPES, load_causal_lm, load_pretrained, load_tokenizer
from mmtune.models.projectors import get_projector
from mmtune.models.processors import load_processor, with_knobs
from mmtune.models.projector import load_projector
from mmtune.models.remote_code import check_first_forward
from mmtune.models.trainable import apply_trainable, enable_activation_checkpointing, prepare_text_model, trainable_groups

log = logging.getLogger("mmtune.train")


@dataclass
class VisionParts:
    """A vision-language model to train and what its data needs: the processor's tokenizer (with the
    image tokens), how images become tokens and tensors (`images`: LlavaImages or ProcessorImages),
    the family entry."""

    model: object
    processor: object
    tokenizer: object
    images: object
    family: Family


def text_model(recipe, device: str):
    """The recipe's causal LM on `device`, prepared for its method (a PeftModel for LoRA / QLoRA)."""
    model = load_causal_lm(recipe.model, precision=recipe.train.precision,
                           quantize_4bit=recipe.method.type == "qlora", device=device)
    model.config.use_cache = False  # needed for packed rows and gradient checkpointing
    check_first_forward(model)
    return prepare_text_model(model, recipe.method, gradient_checkpointing=recipe.train.gradient_checkpointing)


@functools.lru_cache(maxsize=64)
def _config_facts(path: str, trust_remote_code: bool) -> tuple[str | None, bool]:
    """(model type, whether it has a vision config) of a checkpoint."""
    from transformers import AutoConfig

    config = config_dict(path)
    if config is not None:
        return config.get("model_type"), "vision_config" in config
    config = load_pretrained(AutoConfig, path, "the model config", trust_remote_code=trust_remote_code)
    return config.model_type, getattr(config, "vision_config", None) is not None


def native_family(model_cfg) -> Family | None:
    """The vision-language family of the recipe's checkpoint (None: a text model, or a VLM mmtune lacks)."""
    return family_for_type(_config_facts(model_cfg.path, model_cfg.trust_remote_code)[0])


def is_vision(recipe) -> bool:
    """A vision-language recipe: an assembled LLaVA, or a checkpoint with a vision config (a family
    mmtune trains, or one it refuses by name in `native_vlm`)."""
    m = recipe.model
    return m.vision is not None or native_family(m) is not None or _config_facts(m.path, m.trust_remote_code)[1]


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


def vlm_for_recipe(recipe, dtype: str):
    """(model, processor, family) as the recipe describes them before training, the processor with
    the recipe's processor settings built in (export rebuilds the model this way to merge an adapter)."""
    if recipe.model.vision is not None:
        model, processor = llava_for_recipe(recipe, dtype)
        return model, processor, family_of(model.config)
    model, processor, family = native_vlm(recipe, dtype)
    processor, _ = with_knobs(processor, dict(recipe.data.processor))
    return model, processor, family


def vision_model(recipe, device: str) -> VisionParts:
    """The vision-language model to train (trainable parts set, on `device`) and its image handling."""
    check_vision_recipe(recipe)
    m = recipe.model
    dtype = m.dtype if m.dtype != "auto" else ("bfloat16" if recipe.train.precision == "bf16" else "float32")
    if m.vision is not None:
        model, processor = llava_for_recipe(recipe, dtype)
        family = family_of(model.config)
        spec = image_spec_for(processor.tokenizer, model.config.image_token_id, image_tokens_per_image(model.config),
                              recipe.data)
        loader = ImageLoader(processor.image_processor, recipe.data.image_mode, recipe.data.slice)
        images = LlavaImages(spec, loader, processor.tokenizer)
    else:
        model, processor, family = native_vlm(recipe, dtype)
        processor, call_knobs = with_knobs(processor, dict(recipe.data.processor))
        images = ProcessorImages(processor, call_knobs, recipe.data.image_folder)
    model.config.use_cache = False
    model.config.get_text_config().use_cache = False
    if recipe.train.gradient_checkpointing:
        enable_activation_checkpointing(model)
    groups = trainable_groups(recipe.method, vision=True, family=family)
    model = apply_trainable(model, groups, recipe.method.lora, family.parts)
    model.to(device)
    return VisionParts(model, processor, processor.tokenizer, images, family)


def position_fn(vision: VisionParts):
    """How a packed sample of this model gets its position ids, when it needs more than restarting
    1-D ones (Qwen-VL's mrope); None otherwise."""
    if vision.family.positions is None:
        return None
    return functools.partial(vision.family.positions, vision.model)


def native_vlm(recipe, dtype: str):
    """(model, processor, family) of a checkpoint of a family transformers ships, with the recipe's
    processor settings checked against the family and the ones the forward reads put in the config."""
    from transformers import AutoModelForImageTextToText

    m = recipe.model
    family = native_family(m)
    if family is None:
        model_type = _config_facts(m.path, m.trust_remote_code)[0]
        supported = sorted(t for f in FAMILIES.values() for t in f.model_types)
        raise ConfigError(f"{m.path!r} is a vision-language model of type {model_type!r}, which mmtune does not "
                          "train yet", hint=f"supported model types: {', '.join(supported)}")
    knobs = dict(recipe.data.processor)
    check_knobs(family, knobs)
    if recipe.data.template != "auto":
        raise ConfigError(f"data.template {recipe.data.template!r}: a {family.name} model trains on its own chat template",
                          hint="set data.template: auto")
    for field_name in ("slice", "image_mode"):
        if field_name in recipe.data.model_fields_set:
            raise ConfigError(f"data.{field_name} is for the LLaVA models mmtune assembles; {family.name} slices and "
                              "resizes in its processor", hint=f"use data.processor ({', '.join(family.knobs) or 'none'})")
    processor = load_processor(m.path, trust_remote_code=m.trust_remote_code, video_stub=family.video_stub)
    kwargs = {"attn_implementation": m.attn_implementation} if m.attn_implementation else {}
    model = load_pretrained(AutoModelForImageTextToText, m.path, "the model", dtype=DTYPES[dtype],
                            trust_remote_code=m.trust_remote_code, **kwargs)
    for knob in family.config_knobs:  # read in the forward as well as by the processor
        if knob in knobs:
            setattr(model.config, knob, knobs[knob])
    return model, processor, family


def vision_data(recipe, image_folder: str | None = None):
    """(images, tokenizer, template) of a vision-language recipe without loading its weights: how its
    data becomes tokens, as training encodes it (for `mmtune data check --config`). `image_folder`
    replaces the recipe's."""
    from mmtune.data.templates import ProcessorTemplate, get_template

    m, d = recipe.model, recipe.data
    folder = str(image_folder) if image_folder is not None else d.image_folder
    if m.vision is None:
        family = native_family(m)
        knobs = dict(d.processor)
        check_knobs(family, knobs)
        processor = load_processor(m.path, trust_remote_code=m.trust_remote_code, video_stub=family.video_stub)
        processor, call_knobs = with_knobs(processor, knobs)
        template = ProcessorTemplate(processor.tokenizer, processor=processor)
        return ProcessorImages(processor, call_knobs, folder), processor.tokenizer, template
    tokenizer = load_tokenizer(m)
    added = [IMAGE_TOKEN] + ([SLICE_START, SLICE_END] if d.slice is not None else [])
    tokenizer.add_tokens([t for t in added if t not in tokenizer.get_added_vocab()], special_tokens=True)
    vision_config = vision_encoder_config(m.vision.path, m.trust_remote_code)
    projector = get_projector(m.projector.type)
    n = tokens_per_image(vision_config, select_strategy(vision_config, m.vision.feature_select),
                         m.projector.query_nums if projector.fixed_tokens else None)
    spec = image_spec_for(tokenizer, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), n,
                          d.model_copy(update={"image_folder": folder}))
    return LlavaImages(spec, None, tokenizer), tokenizer, get_template(d.template, tokenizer)


def sample_images(recipe) -> list:
    """The recipe's `eval.evaluation_images`, opened (for the sample chats of a VLM run)."""
    from mmtune.data.images import open_image

    return [open_image(p, f"eval.evaluation_images[{k}]") for k, p in enumerate(recipe.eval.evaluation_images)]
