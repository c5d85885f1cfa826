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

from mmtune.data.templates import Template, get_template
from mmtune.errors import MmtuneError
from mmtune.train.callbacks import read_meta, write_meta
from mmtune.train.checkpoints import has_weights
from mmtune.train.deepspeed.consolidate import is_unconsolidated_zero_checkpoint

log = logging.getLogger(__name__)
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def has_tokenizer(path: Path) -> bool:
    return (Path(path) / "tokenizer_config.json").exists()


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
    from mmtune.models.load import load_tokenizer

    tokenizer = load_tokenizer(recipe.model, str(checkpoint) if has_tokenizer(checkpoint) else None)
    template = get_template(recipe.data.template, tokenizer)
    if isinstance(template, Template):
        tokenizer.chat_template = template.to_jinja()
    tokenizer.save_pretrained(str(out))


def checkpoint_to_hf(recipe, checkpoint: str | Path, out: str | Path) -> Path:
    checkpoint, out = Path(checkpoint), Path(out)
    check_checkpoint(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    if recipe.model.vision is not None:  # LLaVA: one merged model + processor (or the projector)
        from mmtune.export.llava import export_llava

        kind = export_llava(recipe, checkpoint, out)
    elif is_unconsolidated_zero_checkpoint(checkpoint):  # ZeRO-3 shards only: rebuild with DeepSpeed's zero_to_fp32
        kind = _export_zero_shards(recipe, checkpoint, out)
    elif is_adapter_dir(checkpoint):
        for name in ADAPTER_FILES:
            shutil.copyfile(checkpoint / name, out / name)
        config = json.loads((out / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = recipe.model.path  # where peft finds the base model
        (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
        kind = "LoRA adapter"
    else:
        _export_full_model(recipe, checkpoint, out)
        kind = "full model"
    if recipe.model.vision is None:
        export_tokenizer(recipe, checkpoint, out)
    meta = read_meta(checkpoint) or {}
    meta.update({"base_model": recipe.model.path, "template": recipe.data.template, "exported_from": str(checkpoint)})
    write_meta(out, meta)
    log.info("exported %s to %s", kind, out)
    return out


def _export_zero_shards(recipe, checkpoint: Path, out: Path) -> str:
    from mmtune.train.deepspeed.consolidate import consolidate_adapter, consolidate_full

    trust = recipe.model.trust_remote_code
    if is_adapter_dir(checkpoint):
        consolidate_adapter(checkpoint, out, recipe.model.path, trust_remote_code=trust)
        return "LoRA adapter (from ZeRO shards)"
    consolidate_full(checkpoint, out, trust_remote_code=trust)
    return "full model (from ZeRO shards)"


def _export_full_model(recipe, checkpoint: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(checkpoint), dtype="auto", trust_remote_code=recipe.model.trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise MmtuneError(f"cannot read the model in {str(checkpoint)!r}: {e}".splitlines()[0]) from None
    model.config.use_cache = True  # training turned it off
    model.save_pretrained(str(out))
