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

`fused_layers(model)` swaps each module of the allow-listed transformers classes below for an
mmtune module (`FusedRMSNorm`, `FusedGatedMLP`) holding the same parameters and submodules under
the same names, so parameters, state dicts, checkpoints and optimizers see no difference; on
leaving the context the original modules go back. The fused forward runs for steps that build a
graph (training); without grad (evaluation, generation) the original module runs. Not used under
ZeRO-3 / FSDP, where a norm's weight is whole only while hooks have gathered it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from mmtune.models.patching import ModuleSwaps, transformers_forward_class

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


class FusedRMSNorm(nn.Module):
    """An allow-listed RMSNorm (its `weight` parameter, same state-dict key) whose training forward
    keeps only its input and one scale per token for backward."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.weight = original.weight
        self.variance_epsilon = original.variance_epsilon
        object.__setattr__(self, "original", original)  # not a submodule: no second name for the weight

    def forward(self, hidden_states):
        if not torch.is_grad_enabled():
            return self.original(hidden_states)
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)


class FusedGatedMLP(nn.Module):
    """An allow-listed `down(silu(gate(x)) * up(x))` MLP (its projections, same names) whose
    training forward keeps gate and up, not silu(gate) and the product, for backward."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = original.gate_proj, original.up_proj, original.down_proj
        self.act_fn = original.act_fn
        object.__setattr__(self, "original", original)

    def forward(self, x):
        if not torch.is_grad_enabled():
            return self.original(x)
        return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))


def _is_silu(act) -> bool:
    return isinstance(act, nn.SiLU) or (type(act).__name__ == "SiLUActivation"
                                        and type(act).__module__.startswith("transformers."))


def fused_replacement(module: nn.Module) -> nn.Module | None:
    """The fused module for `module`, or None when it is not of an allow-listed class."""
    name = transformers_forward_class(module)
    if name in RMS_NORM_CLASSES and isinstance(getattr(module, "weight", None), torch.Tensor) \
            and hasattr(module, "variance_epsilon"):
        return FusedRMSNorm(module)
    if name in GATED_MLP_CLASSES and _is_silu(getattr(module, "act_fn", None)) \
            and all(hasattr(module, p) for p in ("gate_proj", "up_proj", "down_proj")):
        return FusedGatedMLP(module)
    return None


@contextmanager
def fused_layers(model) -> Iterator[tuple[int, int]]:
    """Within the context, the allow-listed RMSNorm and SiLU-gated MLP modules of `model` (peft-
    wrapped or not) are fused ones; yields (norms, MLPs) swapped. The originals return on exit."""
    swaps = ModuleSwaps(model)
    for name, module in list(model.named_modules()):
        replacement = fused_replacement(module)
        if replacement is not None:
            swaps.replace(name, replacement)
    counts = (sum(isinstance(m, FusedRMSNorm) for m in swaps.new_modules()),
              sum(isinstance(m, FusedGatedMLP) for m in swaps.new_modules()))
    try:
        yield counts
    finally:
        swaps.revert()
