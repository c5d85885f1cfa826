"""InternVL (the transformers-native `-hf` checkpoints, InternVL2.5 / 3): InternViT, a pixel-shuffle MLP
projector, a Qwen2 / InternLM language model. The processor tiles an image into up to `max_patches`
crops (`crop_to_patches`) plus a thumbnail, each `image_seq_length` tokens."""

from __future__ import annotations

from mmtune.models.families.registry import Family, Parts, register_family, square_patches


def internvl_encoder_tokens(config, knobs: dict) -> tuple[int, int]:
    """Tiles of the vision config's size: up to max_patches (12 by default) and a thumbnail."""
    return square_patches(config.vision_config), int(knobs.get("max_patches", 12)) + 1


register_family(Family(
    name="internvl",
    model_types=("internvl",),
    description="InternVL2.5 / 3 (-hf): InternViT + MLP projector; tiled images",
    parts=Parts(vision="model.vision_tower", projector="model.multi_modal_projector", llm="model.language_model",
                vision_blocks="layer"),
    knobs=("crop_to_patches", "min_patches", "max_patches"),
    encoder_tokens=internvl_encoder_tokens,
))
