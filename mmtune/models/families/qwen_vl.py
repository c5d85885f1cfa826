"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: a ViT with a patch merger (`model.visual.merger`), 3-D rotary
positions (mrope) for the language model.

Images: the processor resizes each image to a multiple of patch x merge size within
`min_pixels` / `max_pixels` and expands `<|image_pad|>` to (grid t*h*w) / merge^2 tokens. Packing:
each sample of a packed row gets its own mrope positions (`get_rope_index` on the sample alone),
restarting at 0, with a first row of plain text positions that tells transformers where samples
start (4 x 1 x L), and no attention mask: the attention keeps the samples apart."""

from __future__ import annotations

from dataclasses import replace

import torch

from mmtune.models.families.registry import Family, Parts, base_model, register_family


def mrope_positions(model, input_ids: torch.Tensor, images: dict) -> torch.Tensor:
    """(4, 1, L): text positions, then the 3 mrope rows, of one sample alone."""
    core = base_model(model).model
    ids = input_ids[None]
    types = (ids == base_model(model).config.image_token_id).int()
    rope, _ = core.get_rope_index(ids, types, image_grid_thw=images.get("image_grid_thw"))
    return torch.cat([torch.arange(ids.shape[1], device=rope.device)[None, None], rope], dim=0)


def qwen_encoder_tokens(config, knobs: dict) -> tuple[int, int]:
    """Patches of the largest image the processor lets through (`max_pixels`; 12845056 = 1280 x 28 x 28,
    the released checkpoints' preprocessor setting, when the recipe sets none)."""
    patch = config.vision_config.patch_size
    return int(knobs.get("max_pixels", 12845056)) // patch**2, 1


QWEN2_5_VL = register_family(Family(
    name="qwen2_5_vl",
    model_types=("qwen2_5_vl", "qwen2_vl"),
    description="Qwen2-VL / Qwen2.5-VL: ViT + patch merger, mrope; images at their own aspect ratio",
    parts=Parts(vision="model.visual", projector="model.visual.merger", llm="model.language_model",
                vision_blocks="blocks"),
    knobs=("min_pixels", "max_pixels"),
    token_types="mm_token_type_ids",
    positions=mrope_positions,
    encoder_tokens=qwen_encoder_tokens,
))

# Qwen3-VL: the same, but the vision tower also feeds features of inner layers to the LLM through
# their own mergers (deepstack), which belong to the projector
register_family(replace(
    QWEN2_5_VL,
    name="qwen3_vl",
    model_types=("qwen3_vl",),
    description="Qwen3-VL: ViT + patch merger (deepstack), interleaved mrope",
    parts=replace(QWEN2_5_VL.parts, projector=("model.visual.merger", "model.visual.deepstack_merger_list")),
))
