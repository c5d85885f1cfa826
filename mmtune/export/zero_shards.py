"""Turn a sharded DeepSpeed ZeRO checkpoint into ordinary weights.

With the shipped configs a ZeRO-3 checkpoint already holds gathered 16-bit weights next to its
`global_stepN/` shards (`stage3_gather_16bit_weights_on_model_save: true`), and export reads those.
When a config turns that off (gathering a huge model on one GPU is not always possible), the Trainer
writes only the shards plus `config.json` / `adapter_config.json`; `consolidate_zero_checkpoint`
rebuilds the fp32 weights with DeepSpeed's own `get_fp32_state_dict_from_zero_checkpoint` and saves
a full model (safetensors) or a peft adapter dir. The model is built on the meta device and the
consolidated tensors are assigned into it, so no second copy of the weights is allocated.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mmtune.errors import MmtuneError

log = logging.getLogger(__name__)


def zero_tag(checkpoint: Path) -> str | None:
    """The `global_stepN` folder a checkpoint's `latest` file names (or its only one), else None."""
    checkpoint = Path(checkpoint)
    latest = checkpoint / "latest"
    if latest.is_file():
        tag = latest.read_text().strip()
        if (checkpoint / tag).is_dir():
            return tag
    steps = sorted(p.name for p in checkpoint.glob("global_step*") if p.is_dir())
    return steps[-1] if len(steps) == 1 else None


def _fp32_state_dict(checkpoint: Path, *, trainable_only: bool) -> dict:
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError:
        raise MmtuneError(f"{checkpoint} is a sharded DeepSpeed checkpoint; reading it needs deepspeed",
                          hint="pip install 'mmtune[deepspeed]'") from None
    tag = zero_tag(checkpoint)
    if tag is None:
        raise MmtuneError(f"{checkpoint}: cannot tell which global_step* folder to read (no valid 'latest' file)")
    log.info("consolidating ZeRO shards %s/%s", checkpoint, tag)
    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=tag, exclude_frozen_parameters=trainable_only)


def _meta_model(config, trust_remote_code: bool):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def consolidate_full(checkpoint: Path, out: Path, *, trust_remote_code: bool = False, layout: str = "llama",
                     base: str | None = None) -> Path:
    """Sharded full fine-tune -> `out` with config + model.safetensors, in the checkpoint config's dtype."""
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(checkpoint), trust_remote_code=trust_remote_code)
    state = _fp32_state_dict(checkpoint, trainable_only=False)
    model = _meta_model(config, trust_remote_code)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or [k for k in missing if k not in tied]:
        raise MmtuneError(f"{checkpoint}: ZeRO shards do not match the model in config.json "
                          f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.tie_weights()
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if isinstance(dtype, torch.dtype):
        model.to(dtype)
    model.config.use_cache = True  # training turned it off
    from mmtune.export.layout import save_model

    save_model(model, out, layout=layout, base=base)
    return out


def consolidate_adapter(checkpoint: Path, out: Path, base_model: str, *, trust_remote_code: bool = False) -> Path:
    """Sharded LoRA run -> `out` as a standard peft adapter dir (only the trained tensors are read);
    `base_model` (the recipe's model path) gives the architecture."""
    from peft import PeftConfig, get_peft_model
    from transformers import AutoConfig

    peft_config = PeftConfig.from_pretrained(str(checkpoint))
    peft_config.base_model_name_or_path = base_model
    config = AutoConfig.from_pretrained(base_model, trust_remote_code=trust_remote_code)
    state = _fp32_state_dict(checkpoint, trainable_only=True)
    model = get_peft_model(_meta_model(config, trust_remote_code), peft_config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = trainable - set(state)
    unexpected = set(state) - {n for n, _ in model.named_parameters()}
    if missing or unexpected:
        raise MmtuneError(f"{checkpoint}: ZeRO shards do not match the adapter in adapter_config.json "
                          f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.load_state_dict(state, strict=False, assign=True)
    model.save_pretrained(str(out))
    return out
