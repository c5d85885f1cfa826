"""LLaVA: a vision encoder (CLIP / SigLIP), a projector, an LLM. Both the LLaVA models mmtune assembles
from parts (recipe `model.vision`: mmtune.models.llava, its own image layout with optional slicing)
and transformers' native LLaVA checkpoints (llava-hf, whose processor expands `<image>`)."""

from __future__ import annotations

from mmtune.models.families.registry import Family, Parts, register_family

register_family(Family(
    name="llava",
    model_types=("llava", "llava_resampler"),
    description="LLaVA-1.5 style: CLIP / SigLIP + projector + LLM (assembled by mmtune, or llava-hf checkpoints)",
    parts=Parts(vision="model.vision_tower", projector="model.multi_modal_projector", llm="model.language_model"),
    trainable={"lora": ("projector", "llm.lora"), "full": ("projector", "llm")},  # XTuner's LLaVA finetune
))
