"""How a run spreads over processes: one process or DDP, DeepSpeed ZeRO, or FSDP.

DeepSpeed configs ship in config/deepspeed/ (`--deepspeed zero1|zero2|zero2_offload|zero3|zero3_offload`,
or a JSON file); their "auto" fields are filled by the transformers Trainer from the recipe
(`HfTrainerDeepSpeedConfig`).

| name           | shards across GPUs                  | offloaded to CPU RAM          |
|----------------|-------------------------------------|-------------------------------|
| zero1          | optimizer states                    | -                             |
| zero2          | optimizer states, gradients         | -                             |
| zero2_offload  | optimizer states, gradients         | optimizer states + step       |
| zero3          | optimizer states, gradients, params | -                             |
| zero3_offload  | optimizer states, gradients, params | optimizer states, parameters  |

The offload configs name DeepSpeed's AdamW (its fast CPU Adam runs the step on the CPU), so they
ignore `train.optimizer`; lr, betas, eps and weight decay still come from the recipe.

`--fsdp full_shard|shard_grad_op [--fsdp-offload]` is PyTorch FSDP2 through accelerate.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from mmtune.errors import MmtuneError

DEEPSPEED_CONFIGS = Path(__file__).parent / "deepspeed"
FSDP_MODES = ("full_shard", "shard_grad_op")


# ---- DeepSpeed configs ------------------------------------------------------------------------------


def available_deepspeed_configs() -> list[str]:
    return sorted(p.stem for p in DEEPSPEED_CONFIGS.glob("*.json"))


def resolve_deepspeed(name_or_file: str) -> str:
    """Path of a shipped config (zero1, zero2, zero3, ...) or a user JSON file."""
    path = Path(name_or_file)
    if path.suffix == ".json" and path.is_file():
        _require_deepspeed()
        return str(path)
    shipped = DEEPSPEED_CONFIGS / f"{name_or_file.removeprefix('deepspeed_')}.json"
    if shipped.is_file():
        _require_deepspeed()
        return str(shipped)
    if path.suffix == ".json":
        raise MmtuneError(f"DeepSpeed config file {name_or_file!r} does not exist")
    raise MmtuneError(f"unknown DeepSpeed config {name_or_file!r}",
                      hint=f"use one of {', '.join(available_deepspeed_configs())} or a JSON file")


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
        path = DEEPSPEED_CONFIGS / f"{str(name_or_file).removeprefix('deepspeed_')}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MmtuneError(f"unknown DeepSpeed config {str(name_or_file)!r}",
                          hint=f"use one of {', '.join(available_deepspeed_configs())} or a JSON file") from None
    except json.JSONDecodeError as e:
        raise MmtuneError(f"{path}: not valid JSON: {e}") from None


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


# ---- the strategy of a run --------------------------------------------------------------------------


def shards_parameters(name: str) -> bool:
    """Whether strategy `name` ("ddp", "zero0".."zero3", "fsdp_full_shard", "fsdp_shard_grad_op")
    keeps model weights in shards across ranks: then a weight is whole only inside its module's own
    hooks, so training runs without the chunked loss and the fused layers (and estimate-memory
    counts without them)."""
    return name == "zero3" or name.startswith("fsdp")


@dataclass(frozen=True)
class Strategy:
    """`--deepspeed` (a shipped name, a file or a config dict), or `--fsdp MODE [--fsdp-offload]`, or neither."""

    deepspeed: str | dict | None = None
    fsdp: str | None = None
    fsdp_offload: bool = False

    @classmethod
    def from_flags(cls, deepspeed: str | None = None, fsdp: str | None = None, fsdp_offload: bool = False) -> "Strategy":
        """The strategy of the command-line flags, with a shipped DeepSpeed name resolved to its file."""
        strategy = cls(resolve_deepspeed(deepspeed) if deepspeed else None, fsdp, fsdp_offload)
        strategy.check_flags()
        return strategy

    def check_flags(self) -> None:
        if self.deepspeed and self.fsdp:
            raise MmtuneError("--deepspeed and --fsdp are two ways to shard a model: pick one")
        if self.fsdp_offload and not self.fsdp:
            raise MmtuneError("--fsdp-offload needs --fsdp full_shard or shard_grad_op")
        if self.fsdp and self.fsdp not in FSDP_MODES:
            raise MmtuneError(f"unknown --fsdp mode {self.fsdp!r}", hint=f"use one of {', '.join(FSDP_MODES)}")

    @property
    def zero_stage(self) -> int | None:
        return zero_stage(load_deepspeed_config(self.deepspeed)) if self.deepspeed else None

    @property
    def name(self) -> str:
        if self.deepspeed:
            return f"zero{self.zero_stage}"
        return f"fsdp_{self.fsdp}" if self.fsdp else "ddp"

    @property
    def params_sharded(self) -> bool:
        return shards_parameters(self.name)

    def check(self, method: str, device: str | None = None) -> None:
        """Refuse combinations that cannot work, before any weight loads."""
        self.check_flags()
        if self.fsdp and device == "cpu":
            # accelerate (1.15) switches FSDP on only for GPU-like distributed states; on CPU the
            # Trainer would silently train with plain DDP, unsharded.
            raise MmtuneError("--fsdp needs CUDA GPUs (on CPU accelerate would silently fall back to unsharded DDP)",
                              hint="shard on CPU with --deepspeed zero3, or drop --fsdp")
        if method == "qlora" and self.params_sharded:
            raise MmtuneError("QLoRA cannot shard its 4-bit base weights with ZeRO-3 or FSDP in mmtune",
                              hint="use --deepspeed zero2 (or plain data parallel) with QLoRA, or method.type: lora")

    def describe(self, world_size: int) -> str:
        if self.deepspeed:
            source = "dict" if isinstance(self.deepspeed, dict) else Path(self.deepspeed).name
            how = f"DeepSpeed ZeRO-{self.zero_stage} ({source})"
        elif self.fsdp:
            how = f"FSDP {self.fsdp}" + (" + CPU offload" if self.fsdp_offload else "")
        else:
            how = "data parallel (DDP)" if world_size > 1 else "single process"
        return f"{world_size} process(es), {how}"

    def training_arguments(self) -> dict:
        """TrainingArguments fields: `deepspeed`, or FSDP2 with accelerate's transformer-based wrap
        policy and no class list, which wraps every module class named in the model's
        `_no_split_modules` (the LM's decoder layer and, for a VLM, the vision encoder layer).
        Checkpoints are saved as full state dicts (rank 0 gathers), so `checkpoint-N/` holds
        ordinary safetensors that resume and `convert to-hf` read."""
        if self.deepspeed:
            return {"deepspeed": self.deepspeed}
        if not self.fsdp:
            return {}
        return {
            "fsdp": True,
            "fsdp_config": {
                "version": 2,
                "reshard_after_forward": self.fsdp == "full_shard",
                "cpu_offload": bool(self.fsdp_offload),
                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                "state_dict_type": "FULL_STATE_DICT",
            },
        }
