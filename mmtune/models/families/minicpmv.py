"""MiniCPM-V 4.6 (and 4.7): SigLIP with a window-attention merger inside the vision tower, a
projector (`model.merger`), Qwen3.5 as the language model.

Images: the processor slices a high-resolution image into up to `max_slice_nums` slices plus a
thumbnail (`scale_resolution`, `slice_mode`), and each slice becomes h*w/16 tokens (`downsample_mode`
16x) or /4 (4x); `use_image_id` numbers the images in the text. `downsample_mode` is needed in the
forward too: it goes into the model's config. All slices of a batch are one NaViT-packed row of
patches (`pixel_values` 1 x 3 x 14 x L) with their `target_sizes`. Packing: Qwen3.5's linear-attention
(Gated DeltaNet) layers carry a state along the row, so samples packed together would see each
other; packing is refused for such a language model."""

from __future__ import annotations

import torch

from mmtune.models.families.registry import Family, Parts, base_model, register_family


def combine(images: list[dict]) -> dict:
    return {"pixel_values": torch.cat([im["pixel_values"] for im in images], dim=-1),
            "target_sizes": torch.cat([im["target_sizes"] for im in images])}


def linear_attention_problem(model) -> str | None:
    text = base_model(model).config.get_text_config()
    layers = getattr(text, "layer_types", None) or []
    if "linear_attention" in layers:
        return (f"its language model has {layers.count('linear_attention')} linear-attention layers, whose state runs "
                "along the whole packed row (samples packed together would see each other)")
    return None


def minicpm_encoder_tokens(config, knobs: dict) -> tuple[int, int]:
    """Each slice is about scale_resolution^2 pixels of 14-px patches; up to max_slice_nums slices and the
    overview image (the processor's defaults 448 and 9)."""
    side = int(knobs.get("scale_resolution", 448))
    return (side // config.vision_config.patch_size) ** 2, int(knobs.get("max_slice_nums", 9)) + 1


register_family(Family(
    name="minicpmv4_6",
    model_types=("minicpmv4_6", "minicpmv4_7"),
    description="MiniCPM-V 4.6 / 4.7: SigLIP + window merger + Qwen3.5; sliced high-resolution images",
    parts=Parts(vision="model.vision_tower", projector="model.merger", llm="model.language_model"),
    knobs=("max_slice_nums", "scale_resolution", "slice_mode", "downsample_mode", "use_image_id"),
    combine=combine,
    packing_problem=linear_attention_problem,
    config_knobs=("downsample_mode",),
    encoder_tokens=minicpm_encoder_tokens,
    video_stub={"slice_mode": True, "downsample_mode": "16x"},
    # MiniCPM-V's finetune_lora.sh (--use_lora true --tune_vision true --tune_llm false) and finetune_ds.sh
    # (--tune_vision true --tune_llm true): the vision tower and the resampler train in full either way
    trainable={"lora": ("vision", "projector", "llm.lora"), "full": ("vision", "projector", "llm")},
))
