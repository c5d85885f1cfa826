"""Merge a LoRA adapter into its base model and save a full model in safetensors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from mmtune.errors import MmtuneError
from mmtune.export.layout import plain_tokenizer_config, save_model
from mmtune.models.load import load_pretrained
from mmtune.rundir import has_tokenizer, is_adapter_dir, read_meta, write_meta

log = logging.getLogger(__name__)


def merge_adapter(base: str, adapter: str | Path, out: str | Path, *, max_shard_size: str = "5GB",
                  dtype: str = "auto", trust_remote_code: bool = False, layout: str = "llama") -> Path:
    """The base model with the adapter merged into its weights, saved in `layout` (export/layout.py)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, out = Path(adapter), Path(out)
    if not is_adapter_dir(adapter):
        raise MmtuneError(f"{str(adapter)!r} is not a peft adapter directory (no adapter_config.json)",
                          hint="export a checkpoint first: mmtune convert to-hf CONFIG CHECKPOINT OUT")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = load_pretrained(AutoModelForCausalLM, base, "the base model", dtype=torch_dtype,
                            trust_remote_code=trust_remote_code)
    model = load_pretrained(PeftModel, adapter, "the adapter", model)
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    save_model(merged, out, layout=layout, base=base, max_shard_size=max_shard_size)
    tokenizer_source = str(adapter) if has_tokenizer(adapter) else base
    load_pretrained(AutoTokenizer, tokenizer_source, "the tokenizer", trust_remote_code=trust_remote_code).save_pretrained(str(out))
    if layout == "llama":
        plain_tokenizer_config(out)
    meta = read_meta(adapter) or {}
    meta.update({"merged_from": {"base": base, "adapter": str(adapter)}})
    write_meta(out, meta)
    log.info("merged %s into %s -> %s", adapter, base, out)
    return out
