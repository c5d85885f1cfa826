"""Merge a LoRA adapter into its base model and save a full model in safetensors."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from mmtune.errors import MmtuneError
from mmtune.export.checks import prepare_out_dir, same_model, verify_weights
from mmtune.export.layout import plain_tokenizer_config, save_model
from mmtune.models.load import load_pretrained
from mmtune.rundir import has_tokenizer, is_adapter_dir, read_meta, write_meta

log = logging.getLogger(__name__)


def merge_adapter(base: str, adapter: str | Path, out: str | Path, *, max_shard_size: str = "5GB",
                  dtype: str = "auto", trust_remote_code: bool = False, layout: str = "llama",
                  force: bool = False, overwrite: bool = False) -> Path:
    """The base model with the adapter merged into its weights, saved in `layout` (export/layout.py).
    A base other than the one the adapter was trained on is refused unless `force` (the same model
    under another name or path); `out` must be new or empty (`overwrite` clears it)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, out = Path(adapter), Path(out)
    if not is_adapter_dir(adapter):
        raise MmtuneError(f"{str(adapter)!r} is not a peft adapter directory (no adapter_config.json)",
                          hint="export a checkpoint first: mmtune convert to-hf CONFIG CHECKPOINT OUT")
    check_adapter_base(adapter, base, force)
    verify_weights(adapter)
    prepare_out_dir(out, adapter, overwrite=overwrite)
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
    verify_weights(out)
    log.info("merged %s into %s -> %s", adapter, base, out)
    return out


def check_adapter_base(adapter: Path, base: str, force: bool) -> None:
    """The adapter's recorded base (adapter_config.json) is `base`, or `force` says it is the same model."""
    trained = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not trained or same_model(trained, base):
        return
    if not force:
        raise MmtuneError(f"the adapter was trained on {trained!r}, not {base!r}",
                          hint="merge into the adapter's own base, or add --force if this is the same model under "
                               "another name or path")
    log.warning("merging an adapter trained on %r into %r (--force)", trained, base)
