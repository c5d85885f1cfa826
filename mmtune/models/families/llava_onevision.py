"""LLaVA-OneVision: SigLIP, an MLP projector, Qwen2; any-resolution grids of crops per image
(`image_grid_pinpoints`), with the original image sizes telling the model how to unpad."""

from __future__ import annotations

import torch

from mmtune.models.families.registry import Family, Parts, register_family, square_patches


def combine(images: list[dict]) -> dict:
    """(images, crops, 3, H, W) with crops zero-padded to the most any image has, image_sizes, and
    each sample's image count: a sample with several images has one crop per image (no any-res
    grid), which the model reads off `batch_num_images`."""
    pixels = [im["pixel_values"] for im in images]
    most = max(p.shape[1] for p in pixels)
    padded = [torch.nn.functional.pad(p, (0, 0, 0, 0, 0, 0, 0, most - p.shape[1])) for p in pixels]
    return {"pixel_values": torch.cat(padded), "image_sizes": torch.cat([im["image_sizes"] for im in images]),
            "batch_num_images": torch.cat([im["batch_num_images"] for im in images])}


def onevision_encoder_tokens(config, knobs: dict) -> tuple[int, int]:
    """Crops of the vision config's size: the base image and up to 9 any-resolution crops (anyres_max_9)."""
    return square_patches(config.vision_config), 10


register_family(Family(
    name="llava_onevision",
    model_types=("llava_onevision",),
    description="LLaVA-OneVision: SigLIP + MLP projector + Qwen2; any-resolution crops",
    parts=Parts(vision="model.vision_tower", projector="model.multi_modal_projector", llm="model.language_model"),
    knobs=("image_grid_pinpoints",),
    combine=combine,
    encoder_tokens=onevision_encoder_tokens,
))
