"""Export a LLaVA training checkpoint as one plain transformers model directory.

Finetune with LoRA: the LLaVA model is rebuilt as in training (LLM + vision encoder + pretrained
projector), the adapter (LLM LoRA, vision LoRA, projector) is loaded and merged, and the full model
is saved with its processor — `LlavaForConditionalGeneration` / `AutoModelForImageTextToText` and
`AutoProcessor` load it without mmtune. Full finetune: the checkpoint holds the model already.
Pretrain: the projector alone (projector.safetensors + projector.json).
"""

from __future__ import annotations

import logging
from pathlib import Path

from mmtune.builders.model import llava_for_recipe
from mmtune.data.templates import get_template, store_template
from mmtune.export.layout import save_model
from mmtune.models.load import load_pretrained
from mmtune.rundir import is_adapter_dir

log = logging.getLogger(__name__)


def export_llava(recipe, checkpoint: Path, out: Path, layout: str = "llama") -> str:
    if recipe.method.stage == "pretrain":
        return _export_projector(recipe, checkpoint, out)
    model, processor = llava_for_recipe(recipe, "float32")
    if is_adapter_dir(checkpoint):
        from peft import PeftModel

        model = load_pretrained(PeftModel, checkpoint, "the adapter", model).merge_and_unload()
        kind = "LLaVA model (adapter merged)"
    else:
        from transformers import AutoModelForImageTextToText

        model = load_pretrained(AutoModelForImageTextToText, checkpoint, "the trained model", dtype="auto",
                                trust_remote_code=recipe.model.trust_remote_code)
        kind = "LLaVA model"
    model.config.use_cache = True
    model.config.text_config.use_cache = True
    save_model(model, out, layout=layout)
    store_template(processor.tokenizer, get_template(recipe.data.template, processor.tokenizer), processor)
    processor.save_pretrained(str(out))
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
