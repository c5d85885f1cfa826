"""LLaVA with a MiniCPM-V style resampler projector, as transformers remote code.

SELF-CONTAINED ON PURPOSE: this file imports only torch and transformers. mmtune uses it in memory,
and export copies it into the model directory (`auto_map` in config.json and processor_config.json),
so the exported model loads with `trust_remote_code=True` and no mmtune installed.

The model is transformers' `LlavaForConditionalGeneration` with `multi_modal_projector` swapped for a
`Resampler`: `query_nums` learned queries cross-attend to the vision patch features (keys carry a 2-D
sin-cos position), so every image becomes exactly `query_nums` tokens whatever the patch grid.
"""

from __future__ import annotations

import math

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor


def sincos_2d(embed_dim: int, grid: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(grid*grid, embed_dim) fixed 2-D sin-cos positions (half the channels for rows, half for columns)."""
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1))
    coords = torch.arange(grid, device=device, dtype=torch.float32)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    parts = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        angles = pos[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    emb = torch.cat(parts, dim=1)
    if emb.shape[1] < embed_dim:  # embed_dim not divisible by 4
        emb = torch.nn.functional.pad(emb, (0, embed_dim - emb.shape[1]))
    return emb.to(dtype)


class Resampler(nn.Module):
    """(batch, patches, kv_dim) -> (batch, num_queries, embed_dim) by one cross-attention."""

    def __init__(self, num_queries: int, embed_dim: int, num_heads: int, kv_dim: int):
        super().__init__()
        self.num_queries, self.embed_dim, self.num_heads, self.kv_dim = num_queries, embed_dim, num_heads, kv_dim
        self.query = nn.Parameter(torch.empty(num_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Parameter(torch.empty(embed_dim, embed_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        if self.query.is_meta:
            return
        nn.init.trunc_normal_(self.query, std=0.02)
        nn.init.trunc_normal_(self.kv_proj.weight, std=0.02)
        self.attn._reset_parameters()
        self.proj.copy_(torch.randn_like(self.proj) * self.embed_dim**-0.5)
        for ln in (self.ln_q, self.ln_kv, self.ln_post):
            nn.init.ones_(ln.weight)
            nn.init.zeros_(ln.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, n, _ = features.shape
        grid = math.isqrt(n)
        if grid * grid != n:
            raise ValueError(f"resampler needs a square patch grid (no CLS token); got {n} positions")
        kv = self.ln_kv(self.kv_proj(features))
        pos = sincos_2d(self.embed_dim, grid, device=kv.device, dtype=kv.dtype)
        q = self.ln_q(self.query).unsqueeze(0).expand(batch, -1, -1)
        out, _ = self.attn(q, kv + pos, kv, need_weights=False)
        return self.ln_post(out) @ self.proj


@strict
class LlavaResamplerConfig(LlavaConfig):
    model_type = "llava_resampler"

    query_nums: int = 64
    resampler_num_heads: int | None = None


def build_resampler(config) -> Resampler:
    embed_dim = config.text_config.hidden_size
    heads = config.resampler_num_heads or max(1, embed_dim // 128)
    n_layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
    return Resampler(config.query_nums, embed_dim, heads, config.vision_config.hidden_size * n_layers)


class LlavaResamplerForConditionalGeneration(LlavaForConditionalGeneration):
    config_class = LlavaResamplerConfig

    def __init__(self, config: LlavaResamplerConfig):
        super().__init__(config)
        # LlavaModel.get_image_features calls the projector on (images, patches, dim) and splits
        # its output per image, so any (images, query_nums, hidden) module drops in.
        self.model.multi_modal_projector = build_resampler(config)

    def _init_weights(self, module):
        if isinstance(module, Resampler):
            module.reset_parameters()
        elif not isinstance(module, nn.MultiheadAttention):
            super()._init_weights(module)


class LlavaResamplerProcessor(LlavaProcessor):
    """LlavaProcessor that expands each `<image>` to `query_nums` tokens."""

    def __init__(
        self, image_processor=None, tokenizer=None, query_nums=64, chat_template=None, image_token="<image>", **kwargs
    ):
        kwargs.pop("patch_size", None)
        kwargs.pop("vision_feature_select_strategy", None)
        self.query_nums = query_nums
        super().__init__(
            image_processor, tokenizer, patch_size=1, vision_feature_select_strategy="full",
            chat_template=chat_template, image_token=image_token, **kwargs,
        )

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.query_nums

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs):
        from transformers.processing_utils import MultiModalData

        if image_sizes is None:
            return MultiModalData()
        n = len(image_sizes)
        return MultiModalData(num_image_tokens=[self.query_nums] * n, num_image_patches=[1] * n)


LlavaResamplerConfig.register_for_auto_class("AutoConfig")
LlavaResamplerForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
LlavaResamplerProcessor.register_for_auto_class("AutoProcessor")
