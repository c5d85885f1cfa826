"""Image inputs for generation, built exactly as in training: a loaded vision-language model's
`LlavaImages` (the LLaVA models mmtune assembles: the recorded image mode and slicing) or
`ProcessorImages` (a native family: its processor, with the processor settings training recorded)."""

from __future__ import annotations

from mmtune.data.collate import ImageBatch
from mmtune.data.processor_images import ProcessorImages
from mmtune.data.vlm import SLICE_END, SLICE_START, ImageLoader, ImageSpec, LlavaImages
from mmtune.models.families.registry import base_model, family_for_type, image_token_id_of
from mmtune.models.processors import with_knobs


def vision_inputs_for(model, processor, meta: dict | None):
    """How `model` takes images at inference. `meta` is what its training recorded (mmtune_meta.json):
    an assembled LLaVA's image mode and slicing, or a native family's processor settings."""
    meta = meta or {}
    if "vision" not in meta:  # a native family (or a checkpoint mmtune did not train): its own processor
        processor, call_knobs = with_knobs(processor, dict(meta.get("processor") or {}))
        return ProcessorImages(processor, call_knobs)
    from mmtune.config.schema import SliceConfig
    from mmtune.models.llava import image_tokens_per_image

    tokenizer = processor.tokenizer
    slice_cfg = SliceConfig(**meta["slice"]) if meta.get("slice") else None
    config = model.config
    spec = ImageSpec(
        image_token_id=config.image_token_id,
        tokens_per_image=image_tokens_per_image(config),
        image_folder="",
        newline_ids=tuple(tokenizer("\n", add_special_tokens=False).input_ids),
        slice_start_id=tokenizer.convert_tokens_to_ids(SLICE_START) if slice_cfg else None,
        slice_end_id=tokenizer.convert_tokens_to_ids(SLICE_END) if slice_cfg else None,
        max_slice_nums=slice_cfg.max_slice_nums if slice_cfg else None,
        scale_resolution=slice_cfg.scale_resolution if slice_cfg else 448,
    )
    loader = ImageLoader(processor.image_processor, meta.get("image_mode", "pad"), slice_cfg)
    return LlavaImages(spec, loader, tokenizer)


def image_batch_for(model) -> ImageBatch:
    """How the images of several prompts go into one generate call: the family's way of combining
    them (as in training) and its image-token mask."""
    config = base_model(model).config
    family = family_for_type(getattr(config, "model_type", None))
    if family is None:
        return ImageBatch()
    token_types = (family.token_types, image_token_id_of(config)) if family.token_types else None
    return ImageBatch(family.combine, token_types)
