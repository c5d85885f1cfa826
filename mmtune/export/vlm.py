"""Export a vision-language training checkpoint as one plain transformers model directory.

Finetune with LoRA: the model is rebuilt as in training (a native family's checkpoint; or LLM +
vision encoder + pretrained projector for a LLaVA mmtune assembles), the adapter (LLM LoRA, vision
LoRA, projector, trained vision tower) is loaded and merged, and the full model is saved with its
processor — `AutoModelForImageTextToText` and `AutoProcessor` load it without mmtune, and serving
engines see a checkpoint of the family's own format. Full finetune: the checkpoint holds the model
already. The processor is saved with the recipe's processor settings built in (`data.processor`),
so it preprocesses as training did. Pretrain (LLaVA): the projector alone (projector.safetensors +
projector.json).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mmtune.builders.model import llava_for_recipe, vlm_for_recipe
from mmtune.data.templates import get_template, store_template
from mmtune.export.layout import save_model
from mmtune.models.load import load_pretrained
from mmtune.models.processors import save_processor
from mmtune.rundir import is_adapter_dir

log = logging.getLogger(__name__)


def export_vlm(recipe, checkpoint: Path, out: Path, layout: str = "llama") -> str:
    if recipe.method.stage == "pretrain":
        return _export_projector(recipe, checkpoint, out)
    # a native checkpoint in its own dtype, saved so again; merged in float32
    model, processor, family = vlm_for_recipe(recipe, "float32" if recipe.model.vision is not None else "auto")
    saved_dtype = model.dtype
    model = model.float()
    if is_adapter_dir(checkpoint):
        from peft import PeftModel

        model = load_pretrained(PeftModel, checkpoint, "the adapter", model).merge_and_unload()
        kind = f"{family.name} model (adapter merged)"
    else:
        from transformers import AutoModelForImageTextToText

        model = load_pretrained(AutoModelForImageTextToText, checkpoint, "the trained model", dtype="auto",
                                trust_remote_code=recipe.model.trust_remote_code)
        kind = f"{family.name} model"
    model = model.to(saved_dtype)
    model.config.use_cache = True
    model.config.get_text_config().use_cache = True
    save_model(model, out, layout=layout)
    if recipe.model.vision is not None:  # an assembled LLaVA trains on a named template: store it
        store_template(processor.tokenizer, get_template(recipe.data.template, processor.tokenizer), processor)
    save_processor(processor, out)
    return kind


def _export_projector(recipe, checkpoint: Path, out: Path) -> str:
    """A pretrain checkpoint -> the projector dir a finetune recipe points at."""
    import shutil

    from mmtune.models.projector import INFO_NAME, WEIGHTS_NAME, load_projector_from_state, save_projector

    if (checkpoint / INFO_NAME).exists():  # already a projector dir (the run's final/)
        for name in (WEIGHTS_NAME, INFO_NAME):
            shutil.copyfile(checkpoint / name, out / name)
        return "pretrained projector"
    model, _ = llava_for_recipe(recipe, "float32")
    load_projector_from_state(model, checkpoint)
    save_projector(model, out)
    return "pretrained projector"
