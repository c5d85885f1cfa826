"""InternLM2 checkpoints (internlm2-chat-1_8b / 7b / 20b) loaded natively, as transformers' Llama.

transformers 5 has no `internlm2`, and the checkpoints' own remote code no longer runs correctly
under it (uninitialised rotary tables, no sdpa, no KV cache, save_pretrained fails). InternLM2 is
Llama with three differences of layout, which this module undoes on load:
- q, k and v are one fused `wqkv`, its rows grouped per key-value head: for each of the
  `num_key_value_heads` groups, its `num_heads / num_key_value_heads` query heads, then its key
  head, then its value head (head_dim rows each), as the remote code's
  `rearrange('b q (h gs d) -> b q h gs d', gs=2 + groups)` reads them;
- other names: tok_embeddings, attention.wo, feed_forward.w1 / w3 / w2 (gate / up / down),
  attention_norm / ffn_norm, output (the head);
- one `bias` switch for the attention's Linear layers.
Its rotary embedding (plain, or dynamic NTK scaling as the released checkpoints use) is Llama's.

`register()` (run on import) teaches transformers the `internlm2` model type: a config class,
model classes (Llama's modules), and a checkpoint conversion (transformers' own weight-conversion
mechanism, `register_checkpoint_conversion_mapping`), so `AutoModelForCausalLM.from_pretrained` of
an InternLM2 directory or hub id gives a Llama-module model, with no remote code, in any dtype, with
bitsandbytes quantization. `save_pretrained` reverses the conversion: the model is written back in
InternLM2's own layout and config. `to_llama_layout` gives the same weights as a plain LlamaForCausalLM
(or a VLM with a Llama text config), the layout every tool loads (the default export).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.core_model_loading import ConversionOps, WeightConverter, WeightRenaming

from mmtune.errors import MmtuneError

log = logging.getLogger(__name__)

MODEL_TYPE = "internlm2"


@strict
class InternLM2Config(LlamaConfig):
    """InternLM2's config.json read as a Llama config (same field names, rope_scaling included)."""

    model_type = MODEL_TYPE
    bias: bool = False  # InternLM2's switch for the biases of wqkv and wo

    def __post_init__(self, **kwargs):
        self.attention_bias = bool(self.bias)
        # the checkpoints say "eager" because their own code knew no other; the Llama modules take any
        kwargs.pop("attn_implementation", None)
        super().__post_init__(**kwargs)


class InternLM2Model(LlamaModel):
    config_class = InternLM2Config


class InternLM2ForCausalLM(LlamaForCausalLM):
    config_class = InternLM2Config


def _qkv_sizes(config) -> tuple[int, int, int]:
    """(key-value heads, query heads per key-value head, head_dim) of a text config."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    kv = config.num_key_value_heads or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return kv, heads // kv, head_dim


def split_wqkv(wqkv: torch.Tensor, kv_heads: int, groups: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    """InternLM2's fused wqkv (weight or bias) -> (q, k, v) as Llama's q_proj / k_proj / v_proj hold them."""
    rows = kv_heads * (groups + 2) * head_dim
    if wqkv.shape[0] != rows:
        raise ValueError(f"wqkv has {wqkv.shape[0]} rows, but {kv_heads} key-value heads x ({groups} query heads "
                         f"+ key + value) x head_dim {head_dim} = {rows}")
    grouped = wqkv.reshape(kv_heads, groups + 2, head_dim, *wqkv.shape[1:])
    rest = wqkv.shape[1:]
    q = grouped[:, :groups].reshape(kv_heads * groups * head_dim, *rest)
    k = grouped[:, groups].reshape(kv_heads * head_dim, *rest)
    v = grouped[:, groups + 1].reshape(kv_heads * head_dim, *rest)
    return q.contiguous(), k.contiguous(), v.contiguous()


def fuse_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_heads: int, groups: int,
              head_dim: int) -> torch.Tensor:
    """The inverse of `split_wqkv`."""
    rest = q.shape[1:]
    grouped = torch.cat([q.reshape(kv_heads, groups, head_dim, *rest), k.reshape(kv_heads, 1, head_dim, *rest),
                         v.reshape(kv_heads, 1, head_dim, *rest)], dim=1)
    return grouped.reshape(kv_heads * (groups + 2) * head_dim, *rest).contiguous()


def _only_tensor(input_dict: dict):
    tensors = next(iter(input_dict.values()))
    return tensors[0] if isinstance(tensors, list) else tensors


class SplitGroupedQKV(ConversionOps):
    """Load: wqkv -> q_proj, k_proj, v_proj (see `split_wqkv`)."""

    @torch.no_grad
    def convert(self, input_dict, source_patterns, target_patterns, config=None, **kwargs):
        return dict(zip(target_patterns, split_wqkv(_only_tensor(input_dict), *_qkv_sizes(config))))

    @property
    def reverse_op(self) -> ConversionOps:
        return FuseGroupedQKV()


class FuseGroupedQKV(ConversionOps):
    """Save in InternLM2's layout: q_proj, k_proj, v_proj -> wqkv."""

    @torch.no_grad
    def convert(self, input_dict, source_patterns, target_patterns, config=None, **kwargs):
        parts = []
        for pattern in source_patterns:  # q, k, v in that order
            key = next(k for k in input_dict if pattern in k)
            tensors = input_dict[key]
            parts.append(tensors[0] if isinstance(tensors, list) else tensors)
        return {target_patterns[0]: fuse_wqkv(*parts, *_qkv_sizes(config))}

    @property
    def reverse_op(self) -> ConversionOps:
        return SplitGroupedQKV()


def conversion_mapping() -> list:
    return [
        WeightRenaming(r"\.tok_embeddings\.", ".embed_tokens."),
        WeightRenaming(r"^output\.", "lm_head."),
        WeightRenaming(r"\.attention\.wo\.", ".self_attn.o_proj."),
        WeightRenaming(r"\.feed_forward\.w1\.", ".mlp.gate_proj."),
        WeightRenaming(r"\.feed_forward\.w3\.", ".mlp.up_proj."),
        WeightRenaming(r"\.feed_forward\.w2\.", ".mlp.down_proj."),
        WeightRenaming(r"\.attention_norm\.", ".input_layernorm."),
        WeightRenaming(r"\.ffn_norm\.", ".post_attention_layernorm."),
        WeightConverter(
            source_patterns=r"attention\.wqkv",
            target_patterns=["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            operations=[SplitGroupedQKV()],
        ),
    ]


def register() -> None:
    """Make `internlm2` a model type transformers loads with the classes above (idempotent)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping

    AutoConfig.register(MODEL_TYPE, InternLM2Config, exist_ok=True)
    AutoModel.register(InternLM2Config, InternLM2Model, exist_ok=True)
    AutoModelForCausalLM.register(InternLM2Config, InternLM2ForCausalLM, exist_ok=True)
    register_checkpoint_conversion_mapping(MODEL_TYPE, conversion_mapping(), overwrite=True)


register()


# ---- checking a checkpoint, and the Llama layout ----------------------------------------------------


def config_dict(source: str | Path) -> dict | None:
    """The config.json of a local checkpoint directory, or None."""
    path = Path(source).expanduser() / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def is_internlm2(source: str | Path) -> bool:
    config = config_dict(source)
    return bool(config) and config.get("model_type") == MODEL_TYPE


def check_checkpoint(source: str | Path) -> None:
    """Before loading: every `wqkv` of a local InternLM2 checkpoint has the rows its config says
    (else transformers would skip the tensor and leave q/k/v at random values)."""
    from safetensors import safe_open

    source = Path(source).expanduser()
    config = InternLM2Config(**{k: v for k, v in (config_dict(source) or {}).items()
                                if k not in ("model_type", "auto_map", "architectures", "transformers_version")})
    kv, groups, head_dim = _qkv_sizes(config)
    want = kv * (groups + 2) * head_dim
    for shard in sorted(source.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                if ".attention.wqkv." in key:
                    rows = f.get_slice(key).get_shape()[0]
                    if rows != want:
                        raise MmtuneError(
                            f"{key} has {rows} rows but the config's {config.num_attention_heads} attention heads, "
                            f"{kv} key-value heads and head_dim {head_dim} need {want}",
                            where=str(shard), hint="the weights and config.json come from different checkpoints")


def llama_config(config) -> LlamaConfig:
    """The same architecture as a plain LlamaConfig (model_type llama, no remote code)."""
    data = config.to_dict()
    for key in ("model_type", "auto_map", "architectures", "bias", "transformers_version", "_name_or_path"):
        data.pop(key, None)
    data["attention_bias"] = bool(config.attention_bias)
    llama = LlamaConfig(**data)
    llama.architectures = ["LlamaForCausalLM"]
    return llama


def to_llama_layout(model):
    """The same weights with the InternLM2 config replaced by Llama's: a LlamaForCausalLM, or the
    VLM's own class with a Llama text config. The tensors are shared, not copied (the new model is
    built on the meta device and given the old one's parameters and buffers)."""
    config = model.config
    if isinstance(config, InternLM2Config):
        new_config, cls = llama_config(config), LlamaForCausalLM
    else:
        new_config, cls = copy.deepcopy(config), type(model)
        new_config.text_config = llama_config(config.text_config)
    with torch.device("meta"):
        new = cls(new_config)
    new.load_state_dict(model.state_dict(), assign=True, strict=True)
    old_buffers = dict(model.named_buffers())
    for name, buffer in list(new.named_buffers()):  # non-persistent ones (rotary tables) are not in the state dict
        if buffer.is_meta:
            parent, _, leaf = name.rpartition(".")
            new.get_submodule(parent)._buffers[leaf] = old_buffers[name]
    new.generation_config = model.generation_config
    return new
