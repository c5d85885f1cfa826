"""RMSNorm and SwiGLU that keep only their inputs for the backward pass.

Through autograd, a Llama-style RMSNorm (`weight * (x.float() * rsqrt(mean(x^2) + eps)).to(dtype)`)
keeps its input, the normalised copy (float32) and the output; the SwiGLU MLP
(`down(silu(gate(x)) * up(x))`) keeps gate, silu(gate), up and their product. Both recompute
cheaply: `rms_norm` keeps the input and one float32 scale per token and rebuilds the normalised
values in the backward; `silu_mul` keeps gate and up and recomputes silu. Per decoder layer that is
one hidden-size tensor per norm and one intermediate-size tensor fewer per token (on a 4-layer
Qwen2 with hidden 256 / intermediate 704, ~23% of the activations; in bf16 the norm also stops
keeping a float32 copy). The forward values are computed by the same operations as transformers'
(equal outputs); gradients are the same arithmetic, in float32, so they equal autograd's to
rounding (tests/models/test_fused_layers.py). The same idea as liger-kernel's fused RMSNorm and
SwiGLU, in plain torch, so it runs on CPU and on any GPU.

`use_fused_layers(model)` replaces `forward` on the instances of the allow-listed transformers
classes below, for steps that build a graph (training); evaluation and generation (no grad) run
the classes' own forward. Not used under ZeRO-3 / FSDP, where a norm's weight is whole only while
hooks have gathered it.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from mmtune.models.patching import transformers_forward_class

# transformers classes whose forward is exactly the Llama RMSNorm / `down(act(gate(x)) * up(x))`
# (checked against each class's own forward by the tests); Gemma's (1 + weight) and OLMo 2's
# cast-after-weight norms differ and are not here.
RMS_NORM_CLASSES = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "Phi3RMSNorm"})
GATED_MLP_CLASSES = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "Olmo2MLP"})


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        xf = x.to(torch.float32)
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (xf * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        x_hat = x.to(torch.float32) * rstd
        grad_x = grad_weight = None
        if ctx.needs_input_grad[1]:  # weight broadcasts over every leading dim
            grad_weight = (grad * x_hat.to(x.dtype)).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            g = (grad * weight).to(x.dtype).to(torch.float32)  # the casts autograd's path makes
            grad_x = ((g - x_hat * (g * x_hat).mean(-1, keepdim=True)) * rstd).to(x.dtype)
        return grad_x, grad_weight, None


class _SiluMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return nn.functional.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        grad_gate = grad_up = None
        if ctx.needs_input_grad[1]:
            grad_up = grad * nn.functional.silu(gate)
        if ctx.needs_input_grad[0]:
            grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        return grad_gate, grad_up


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The Llama RMSNorm of `x`, keeping only `x` and a per-token scale for the backward."""
    return _RMSNorm.apply(x, weight, eps)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, keeping only gate and up for the backward."""
    return _SiluMul.apply(gate, up)


def _norm_forward(self, hidden_states):
    if not torch.is_grad_enabled():
        return type(self).forward(self, hidden_states)
    return rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self, x):
    if not torch.is_grad_enabled():
        return type(self).forward(self, x)
    return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))


def _is_silu(act) -> bool:
    return isinstance(act, nn.SiLU) or (type(act).__name__ == "SiLUActivation"
                                        and type(act).__module__.startswith("transformers."))


def use_fused_layers(model) -> tuple[int, int]:
    """Give the allow-listed RMSNorm and SiLU-gated MLP modules of `model` (peft-wrapped or not)
    the fused forward; returns (norms, MLPs) changed."""
    norms = mlps = 0
    for module in model.modules():
        name = transformers_forward_class(module)
        if name in RMS_NORM_CLASSES and isinstance(getattr(module, "weight", None), torch.Tensor) \
                and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(_norm_forward, module)
            norms += 1
        elif name in GATED_MLP_CLASSES and _is_silu(getattr(module, "act_fn", None)) \
                and all(hasattr(module, p) for p in ("gate_proj", "up_proj", "down_proj")):
            module.forward = types.MethodType(_mlp_forward, module)
            mlps += 1
    return norms, mlps
