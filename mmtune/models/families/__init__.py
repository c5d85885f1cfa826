"""Vision-language model families (registry.py), one module per family registering its entry."""

from mmtune.models.families import gemma3, idefics, internvl, llava, llava_onevision, minicpmv, qwen_vl  # noqa: F401
from mmtune.models.families.registry import (  # noqa: F401
    FAMILIES,
    Family,
    Parts,
    base_model,
    check_knobs,
    encoder_tokens,
    family_for_type,
    family_names,
    family_of,
    image_token_id_of,
)
