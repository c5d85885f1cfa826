"""DeepSpeed ZeRO configs shipped with mmtune; "auto" fields are filled from the recipe.

`--deepspeed zero1|zero2|zero2_offload|zero3|zero3_offload|FILE`. The transformers Trainer
resolves every "auto" field itself (`HfTrainerDeepSpeedConfig`); `resolve_auto` computes the same
values from a recipe, so a run can log the config it will really use and tests can check it.

| name           | shards across GPUs                  | offloaded to CPU RAM          |
|----------------|-------------------------------------|-------------------------------|
| zero1          | optimizer states                    | -                             |
| zero2          | optimizer states, gradients         | -                             |
| zero2_offload  | optimizer states, gradients         | optimizer states + step       |
| zero3          | optimizer states, gradients, params | -                             |
| zero3_offload  | optimizer states, gradients, params | optimizer states, parameters  |

The offload configs name DeepSpeed's AdamW (its fast CPU Adam runs the step on the CPU), so they
ignore `train.optimizer`; lr, betas, eps and weight decay still come from the recipe.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from mmtune.errors import MmtuneError

HERE = Path(__file__).parent
ADAM_BETAS = [0.9, 0.999]  # TrainingArguments' defaults; recipes do not change them
ADAM_EPS = 1e-8


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.json"))


def resolve_deepspeed(name_or_file: str) -> str:
    """Path of a shipped config (zero1, zero2, zero3, ...) or a user JSON file."""
    path = Path(name_or_file)
    if path.suffix == ".json" and path.is_file():
        _require_deepspeed()
        return str(path)
    name = name_or_file.removeprefix("deepspeed_")
    shipped = HERE / f"{name}.json"
    if shipped.is_file():
        _require_deepspeed()
        return str(shipped)
    if path.suffix == ".json":
        raise MmtuneError(f"DeepSpeed config file {name_or_file!r} does not exist")
    raise MmtuneError(f"unknown DeepSpeed config {name_or_file!r}", hint=f"use one of {', '.join(available())} or a JSON file")


def _require_deepspeed() -> None:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise MmtuneError("--deepspeed needs the deepspeed package", hint="pip install 'mmtune[deepspeed]'") from None


def load_deepspeed_config(name_or_file: str | dict) -> dict:
    if isinstance(name_or_file, dict):
        return copy.deepcopy(name_or_file)
    path = Path(name_or_file)
    if not (path.suffix == ".json" and path.is_file()):
        path = HERE / f"{str(name_or_file).removeprefix('deepspeed_')}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MmtuneError(f"unknown DeepSpeed config {str(name_or_file)!r}", hint=f"use one of {', '.join(available())} or a JSON file") from None
    except json.JSONDecodeError as e:
        raise MmtuneError(f"{path}: not valid JSON: {e}") from None


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def resolve_auto(ds_config: str | dict, recipe, world_size: int = 1, *, hidden_size: int | None = None,
                 num_training_steps: int | None = None) -> dict:
    """The config with its "auto" fields filled as the Trainer fills them for this recipe.

    Batch sizes and accumulation, gradient clipping, precision, optimizer hyper-parameters come
    from the recipe; the ZeRO bucket sizes from `hidden_size` and the scheduler's step counts from
    `num_training_steps` (left "auto" when not given). An explicit value that contradicts the recipe
    is an error here, as it would be in the Trainer."""
    config = load_deepspeed_config(ds_config)
    t = recipe.train
    values = {
        "train_micro_batch_size_per_gpu": (t.micro_batch_size, "train.micro_batch_size"),
        "gradient_accumulation_steps": (t.gradient_accumulation, "train.gradient_accumulation"),
        "train_batch_size": (world_size * t.micro_batch_size * t.gradient_accumulation,
                             f"{world_size} processes x train.micro_batch_size x train.gradient_accumulation"),
        "gradient_clipping": (t.max_grad_norm, "train.max_grad_norm"),
        "optimizer.params.lr": (t.lr, "train.lr"),
        "optimizer.params.betas": (ADAM_BETAS, "Adam betas"),
        "optimizer.params.eps": (ADAM_EPS, "Adam epsilon"),
        "optimizer.params.weight_decay": (t.weight_decay, "train.weight_decay"),
        "scheduler.params.warmup_min_lr": (0, None),
        "scheduler.params.warmup_max_lr": (t.lr, "train.lr"),
        "fp16.enabled": (t.precision == "fp16", "train.precision"),
        "bf16.enabled": (t.precision == "bf16", "train.precision"),
    }
    if hidden_size:
        values["zero_optimization.reduce_bucket_size"] = (hidden_size * hidden_size, None)
        if zero_stage(config) == 3:
            values["zero_optimization.stage3_prefetch_bucket_size"] = (int(0.9 * hidden_size * hidden_size), None)
            values["zero_optimization.stage3_param_persistence_threshold"] = (10 * hidden_size, None)
    if num_training_steps:
        values["scheduler.params.total_num_steps"] = (num_training_steps, "training steps")
        values["scheduler.params.warmup_num_steps"] = (max(1, math.ceil(t.warmup_ratio * num_training_steps)), "train.warmup_ratio")
    mismatches = []
    for dotted, (value, source) in values.items():
        *parents, leaf = dotted.split(".")
        node = config
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        if node[leaf] == "auto":
            node[leaf] = value
        elif source is not None and node[leaf] != value:
            mismatches.append(f"{dotted}={node[leaf]!r} but {source} gives {value!r}")
    if mismatches:
        raise MmtuneError("the DeepSpeed config contradicts the recipe: " + "; ".join(mismatches),
                          hint='set those fields to "auto" or change the recipe')
    return config


def unresolved(config: dict, prefix: str = "") -> list[str]:
    """Dotted names of fields still "auto" in a config."""
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += unresolved(value, f"{prefix}{key}.")
        elif value == "auto":
            out.append(prefix + key)
    return out
