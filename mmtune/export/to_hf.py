"""Turn a training checkpoint into a plain Hugging Face directory.

LoRA/QLoRA -> a standard peft adapter dir; full fine-tune -> a full model in safetensors. Either
way the tokenizer goes along with the chat template used in training stored in it, so plain
`transformers` (`apply_chat_template`) reproduces the training format and mmtune is not needed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from mmtune.builders.model import is_vision
from mmtune.builders.tokenizer import tokenizer_and_template
from mmtune.errors import MmtuneError
from mmtune.export.checks import check_same_run, prepare_out_dir, run_recipe, verify_weights
from mmtune.export.layout import LAYOUTS, plain_tokenizer_config, save_model
from mmtune.models.load import load_pretrained, load_tokenizer
from mmtune.rundir import has_tokenizer, has_weights, is_adapter_dir, is_unconsolidated_zero_checkpoint, read_meta, write_meta

log = logging.getLogger(__name__)
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def check_checkpoint(checkpoint: Path) -> None:
    if not checkpoint.is_dir():
        raise MmtuneError(f"checkpoint {str(checkpoint)!r} does not exist")
    if not has_weights(checkpoint):
        raise MmtuneError(f"checkpoint {str(checkpoint)!r} holds no model or adapter weights",
                          hint="point at a checkpoint-N or final directory of a training run")
    if is_adapter_dir(checkpoint) and not (checkpoint / "adapter_model.safetensors").exists() \
            and not is_unconsolidated_zero_checkpoint(checkpoint):
        raise MmtuneError(f"checkpoint {str(checkpoint)!r} has adapter_config.json but no adapter_model.safetensors")


def export_tokenizer(recipe, checkpoint: Path, out: Path) -> None:
    """Tokenizer of the run (from the checkpoint, else the base model) with the training template."""
    tokenizer = load_tokenizer(recipe.model, str(checkpoint) if has_tokenizer(checkpoint) else None)
    tokenizer_and_template(recipe, tokenizer)
    tokenizer.save_pretrained(str(out))


def checkpoint_to_hf(recipe, checkpoint: str | Path, out: str | Path, *, layout: str = "llama",
                     overwrite: bool = False) -> Path:
    """`checkpoint` as a plain Hugging Face directory, in `layout` (export/layout.py: `llama`, what
    every tool loads; `internlm2`, InternLM2's own layout, for a model trained from an InternLM2
    checkpoint). `recipe` None: the run's own (its work dir's config.yaml); a recipe for another base
    model or method is refused. `out` must be new or empty (`overwrite` clears it), and every weights
    file, read and written, is checked whole before the export is reported."""
    checkpoint, out = Path(checkpoint), Path(out)
    check_checkpoint(checkpoint)
    if recipe is None:
        recipe = run_recipe(checkpoint)
    else:
        check_same_run(recipe, checkpoint)
    verify_weights(checkpoint)
    if layout not in LAYOUTS:
        raise MmtuneError(f"unknown layout {layout!r}", hint=f"one of {', '.join(LAYOUTS)}")
    vision = is_vision(recipe)
    if layout != "llama" and is_adapter_dir(checkpoint) and not vision:
        raise MmtuneError(f"a LoRA adapter cannot be written in the {layout} layout (its q/k/v adapters have no "
                          "place in a fused wqkv)",
                          hint=f"export the adapter, then merge it: mmtune convert merge BASE ADAPTER OUT --layout {layout}")
    prepare_out_dir(out, checkpoint, overwrite=overwrite)
    if vision:  # one merged model + processor (or a LLaVA's pretrained projector)
        from mmtune.export.vlm import export_vlm

        kind = export_vlm(recipe, checkpoint, out, layout)
    elif is_unconsolidated_zero_checkpoint(checkpoint):  # ZeRO-3 shards only: rebuild with DeepSpeed's zero_to_fp32
        kind = _export_zero_shards(recipe, checkpoint, out, layout)
    elif is_adapter_dir(checkpoint):
        for name in ADAPTER_FILES:
            shutil.copyfile(checkpoint / name, out / name)
        config = json.loads((out / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = recipe.model.path  # where peft finds the base model
        (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
        kind = "LoRA adapter"
    else:
        _export_full_model(recipe, checkpoint, out, layout)
        kind = "full model"
    if not vision:
        export_tokenizer(recipe, checkpoint, out)
        if layout == "llama":
            plain_tokenizer_config(out)
    meta = read_meta(checkpoint) or {}
    meta.update({"base_model": recipe.model.path, "template": recipe.data.template, "exported_from": str(checkpoint)})
    write_meta(out, meta)
    verify_weights(out)
    log.info("exported %s to %s", kind, out)
    return out


def _export_zero_shards(recipe, checkpoint: Path, out: Path, layout: str) -> str:
    from mmtune.export.zero_shards import consolidate_adapter, consolidate_full

    trust = recipe.model.trust_remote_code
    if is_adapter_dir(checkpoint):
        consolidate_adapter(checkpoint, out, recipe.model.path, trust_remote_code=trust)
        return "LoRA adapter (from ZeRO shards)"
    consolidate_full(checkpoint, out, trust_remote_code=trust, layout=layout, base=recipe.model.path)
    return "full model (from ZeRO shards)"


def _export_full_model(recipe, checkpoint: Path, out: Path, layout: str) -> None:
    from transformers import AutoModelForCausalLM

    model = load_pretrained(AutoModelForCausalLM, checkpoint, "the trained model", dtype="auto",
                            trust_remote_code=recipe.model.trust_remote_code)
    model.config.use_cache = True  # training turned it off
    save_model(model, out, layout=layout, base=recipe.model.path)
