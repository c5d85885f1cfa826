"""SmolVLM and Idefics3: SigLIP, a pixel-shuffle connector, a Llama-style language model. The processor
splits large images into tiles plus a global image (`do_image_splitting`, `max_image_size`)."""

from __future__ import annotations

import torch

from mmtune.models.families.registry import Family, Parts, register_family, square_patches


def combine(images: list[dict]) -> dict:
    """All images of the batch as one (1, n, 3, H, W) stack, zero-padded to the largest (the model drops
    all-zero images and reads the pixel mask), in token order."""
    pixels = [im["pixel_values"] for im in images]
    masks = [im["pixel_attention_mask"] for im in images]
    h = max(p.shape[-2] for p in pixels)
    w = max(p.shape[-1] for p in pixels)

    def pad(t):
        return torch.nn.functional.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]))

    return {"pixel_values": torch.cat([pad(p) for p in pixels], dim=1),
            "pixel_attention_mask": torch.cat([pad(m) for m in masks], dim=1)}


def smolvlm_encoder_tokens(config, knobs: dict) -> tuple[int, int]:
    """Tiles of the vision config's size: up to 4 x 4 and the global image when images are split
    (the released processors' setting), else one."""
    return square_patches(config.vision_config), 17 if knobs.get("do_image_splitting", True) else 1


register_family(Family(
    name="smolvlm",
    model_types=("smolvlm", "idefics3"),
    description="SmolVLM / Idefics3: SigLIP + pixel-shuffle connector; tiled images",
    parts=Parts(vision="model.vision_model", projector="model.connector", llm="model.text_model"),
    knobs=("do_image_splitting", "max_image_size"),
    combine=combine,
    video_stub={"num_frames": None, "fps": None},  # read by apply_chat_template, used for videos only
    encoder_tokens=smolvlm_encoder_tokens,
))
