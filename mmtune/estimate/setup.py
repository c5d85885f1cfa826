"""How a model trains, for the estimate: method, precision, parallelism, batch shape, memory savers;
from a recipe and the command line's strategy flags."""

from __future__ import annotations

from dataclasses import dataclass

from mmtune.config.strategy import load_deepspeed_config, shards_parameters, zero_stage
from mmtune.errors import MmtuneError

STRATEGIES = ("ddp", "zero1", "zero2", "zero3", "fsdp_shard_grad_op", "fsdp_full_shard")


@dataclass(frozen=True)
class Setup:
    """How the model trains: method, precision, parallelism, batch shape."""

    method: str = "lora"  # lora | qlora | full
    precision: str = "bf16"  # bf16 | fp16 | fp32
    gpus: int = 1
    strategy: str = "ddp"  # one of STRATEGIES ("ddp" on one GPU = plain training)
    offload_optimizer: bool = False
    offload_params: bool = False
    micro_batch: int = 1
    seq_len: int = 2048
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_torch_fused"
    attention: str = "sdpa"  # eager keeps the s×s scores
    images_per_sample: int = 1
    stage: str = "finetune"  # VLM: pretrain trains the projector only
    trainable: tuple[str, ...] | None = None  # VLM parts the recipe trains, when it names them
    comm_bucket_elements: int = 0  # DeepSpeed buckets (see deepspeed_setup)
    chunked_loss: bool = False  # train.chunked_loss (activation_bytes ignores it under ZeRO-3 / FSDP)
    fused_layers: bool = False  # train.fused_layers (off under ZeRO-3 / FSDP, as in training)
    lora_rank: int = 16

    @property
    def deepspeed(self) -> bool:
        return self.strategy.startswith("zero")

    @property
    def fsdp(self) -> bool:
        return self.strategy.startswith("fsdp")

    @property
    def params_sharded(self) -> bool:
        """ZeRO-3 / FSDP: training runs without the chunked loss and the fused layers."""
        return shards_parameters(self.strategy)


def deepspeed_setup(name_or_file: str, hidden_size: int) -> dict:
    """Setup fields from a DeepSpeed config: strategy, offloads, communication bucket sizes."""
    config = load_deepspeed_config(name_or_file)
    stage = zero_stage(config)
    zero = config.get("zero_optimization", {})

    def offloaded(key):
        return str((zero.get(key) or {}).get("device", "none")).lower() not in ("none", "")

    def elements(key, default):
        value = zero.get(key, default)
        return default if value == "auto" else int(float(value))

    h2 = hidden_size * hidden_size
    buckets = elements("reduce_bucket_size", 500_000_000) if zero.get("reduce_bucket_size") != "auto" else h2
    if stage == 3:
        prefetch = zero.get("stage3_prefetch_bucket_size", 50_000_000)
        buckets += int(0.9 * h2) if prefetch == "auto" else int(float(prefetch))
    else:
        buckets += elements("allgather_bucket_size", 500_000_000)
    return {"strategy": f"zero{stage}" if stage else "ddp", "offload_optimizer": offloaded("offload_optimizer"),
            "offload_params": offloaded("offload_param"), "comm_bucket_elements": buckets}


def setup_from_recipe(recipe, *, gpus: int = 1, deepspeed: str | None = None, fsdp: str | None = None,
                      fsdp_offload: bool = False, hidden_size: int = 0) -> Setup:
    t = recipe.train
    fields = dict(method=recipe.method.type, precision=t.precision, gpus=gpus, micro_batch=t.micro_batch_size,
                  seq_len=recipe.data.max_length, gradient_checkpointing=t.gradient_checkpointing,
                  optimizer=t.optimizer, attention=recipe.model.attn_implementation or "sdpa",
                  chunked_loss=t.chunked_loss, fused_layers=t.fused_layers, lora_rank=recipe.method.lora.r)
    vision = getattr(recipe.model, "vision", None)
    if vision is not None:
        slicing = getattr(recipe.data, "slice", None)
        fields["images_per_sample"] = slicing.max_slice_nums + 1 if slicing else 1
    # (a native VLM's own image layout is read off its config: ModelSize.images_per_sample)
    fields["stage"] = recipe.method.stage
    fields["trainable"] = tuple(recipe.method.trainable) if recipe.method.trainable is not None else None
    if deepspeed and fsdp:
        raise MmtuneError("--deepspeed and --fsdp are two ways to shard a model: pick one")
    if deepspeed:
        fields.update(deepspeed_setup(deepspeed, hidden_size))
    elif fsdp:
        fields.update(strategy=f"fsdp_{fsdp}", offload_params=fsdp_offload, offload_optimizer=fsdp_offload)
    return Setup(**fields)
