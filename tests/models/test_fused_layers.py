"""The fused RMSNorm and SwiGLU equal transformers' modules, forward and backward, and keep less.

Function level: outputs equal the modules' own (same operations), gradients equal autograd's to
rounding, in float32 and bfloat16 (and a bf16 input with a float32 weight, as QLoRA's upcast norms
have), a frozen weight gets no gradient, and a backward missing a term would be caught. Model level:
each transformers class of the allow-lists, built from a tiny real config, gives the same loss and
parameter gradients inside `fused_layers` as without, padded and packed; Gemma (different norm) is
left alone; LoRA through peft; no-grad passes run the modules' own forward; fewer bytes are saved
for backward; the swapped modules keep the parameters and state-dict keys, and leaving the context
puts the originals back.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmtune.models.fused_layers import FusedGatedMLP, FusedRMSNorm, fused_layers, rms_norm, silu_mul
from mmtune.testing.classes import assert_same_step, batches, loss_and_grads, tiny_causal_lm


def hf_rms_norm(hidden, weight, eps=1e-6):
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    norm = Qwen2RMSNorm(hidden.shape[-1], eps=eps)
    norm.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
    return norm, norm(hidden)


def inputs(x_dtype, w_dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(3, 5, 48, generator=g) * 3).to(x_dtype).requires_grad_()
    w = (1 + torch.randn(48, generator=g) / 4).to(w_dtype).requires_grad_()
    upstream = torch.randn(3, 5, 48, generator=g)
    return x, w, upstream


@pytest.mark.parametrize("x_dtype,w_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                             (torch.bfloat16, torch.float32)])
def test_rms_norm_equals_the_transformers_module(x_dtype, w_dtype):
    x, w, upstream = inputs(x_dtype, w_dtype)
    norm, ref = hf_rms_norm(x, w)
    ours = rms_norm(x, w, 1e-6)
    assert ours.dtype == ref.dtype
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)  # the same operations
    ref_gx, ref_gw = torch.autograd.grad(ref, (x, norm.weight), upstream.to(ref.dtype))
    gx, gw = torch.autograd.grad(ours, (x, w), upstream.to(ours.dtype))
    assert gx.dtype == x.dtype and gw.dtype == w.dtype
    tol = {"atol": 1e-5, "rtol": 1e-5} if x_dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    torch.testing.assert_close(gx, ref_gx, **tol)
    torch.testing.assert_close(gw, ref_gw, **tol)


def test_rms_norm_frozen_weight_and_a_wrong_backward_would_fail():
    x, w, upstream = inputs(torch.float32, torch.float32)
    w.requires_grad_(False)
    out = rms_norm(x, w, 1e-6)
    (gx,) = torch.autograd.grad(out, (x,), upstream)
    _, ref = hf_rms_norm(x, w)
    (ref_gx,) = torch.autograd.grad(ref, (x,), upstream)
    torch.testing.assert_close(gx, ref_gx, atol=1e-5, rtol=1e-5)
    # without the projection term (the mean of g * x_hat) the gradient is clearly off
    x_hat = x.detach() * torch.rsqrt(x.detach().pow(2).mean(-1, keepdim=True) + 1e-6)
    wrong = upstream * w * (x_hat / x.detach())
    with pytest.raises(AssertionError):
        torch.testing.assert_close(wrong, ref_gx, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_equals_autograd(dtype):
    g = torch.Generator().manual_seed(2)
    gate = (torch.randn(4, 7, 40, generator=g) * 4).to(dtype).requires_grad_()
    up = torch.randn(4, 7, 40, generator=g).to(dtype).requires_grad_()
    upstream = torch.randn(4, 7, 40, generator=g).to(dtype)
    ref = nn.functional.silu(gate) * up
    ours = silu_mul(gate, up)
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    ref_grads = torch.autograd.grad(ref, (gate, up), upstream)
    grads = torch.autograd.grad(ours, (gate, up), upstream)
    tol = {} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
    for a, b in zip(grads, ref_grads, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, **tol)


# --- models ---------------------------------------------------------------------------------------

# class -> (RMSNorms, MLPs) fused_layers swaps on the 2-layer tiny model: 2 per layer + the final
# norm (Qwen3 also normalises q and k per layer); Phi-3's MLP is a fused gate_up projection, OLMo 2's
# and Gemma's norms compute differently, Gemma's MLP is GELU: those stay as they are.
EXPECTED = {
    "LlamaForCausalLM": (5, 2), "MistralForCausalLM": (5, 2), "Qwen2ForCausalLM": (5, 2),
    "Qwen3ForCausalLM": (9, 2), "Phi3ForCausalLM": (5, 0), "Olmo2ForCausalLM": (0, 2), "GemmaForCausalLM": (0, 0),
}


@pytest.mark.parametrize("class_name", sorted(EXPECTED))
def test_each_class_trains_exactly_as_its_own_modules(class_name):
    for name, batch in batches().items():
        ref = loss_and_grads(tiny_causal_lm(class_name).train(), batch)
        model = tiny_causal_lm(class_name).train()
        with fused_layers(model) as counts:
            assert counts == EXPECTED[class_name]
            assert_same_step(loss_and_grads(model, batch), ref, f"{class_name} {name}")


def test_lora_through_peft_matches():
    from peft import LoraConfig, get_peft_model

    def lora():
        torch.manual_seed(0)
        config = LoraConfig(r=4, target_modules=["q_proj", "gate_proj", "up_proj", "down_proj"], init_lora_weights=False)
        return get_peft_model(tiny_causal_lm("LlamaForCausalLM"), config).train()

    batch = batches()["packed"]
    ref = loss_and_grads(lora(), batch)
    model = lora()
    with fused_layers(model) as counts:
        assert counts == (5, 2)
        ours = loss_and_grads(model, batch)
    assert_same_step(ours, ref)
    assert all("lora_" in k for k in ours[1])


def saved_bytes(model, batch) -> int:
    storages = {}

    def keep(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model(**batch).loss
    return sum(storages.values())


def test_fewer_bytes_are_kept_for_backward_and_no_grad_runs_the_modules_own_forward(monkeypatch):
    batch = batches()["padded"]
    plain = saved_bytes(tiny_causal_lm("Qwen2ForCausalLM").train(), batch)
    model = tiny_causal_lm("Qwen2ForCausalLM").train()
    swapped = fused_layers(model)
    swapped.__enter__()
    fused = saved_bytes(model, batch)
    # per token: one hidden-size tensor per norm and one intermediate-size tensor per MLP fewer
    tokens = batch["input_ids"].numel()
    assert plain - fused >= tokens * 4 * (5 * 32 + 2 * 64) * 0.9, (plain, fused)

    calls = []
    monkeypatch.setattr("mmtune.models.fused_layers._RMSNorm.apply", lambda *a: calls.append(a))
    with torch.no_grad():
        out = model(**batch)
    assert out.logits is not None and not calls  # evaluation / generation: the classes' own forward
    swapped.__exit__(None, None, None)


def test_swapped_modules_keep_parameters_and_keys_and_go_back():
    model = tiny_causal_lm("Qwen2ForCausalLM").train()
    before_keys = list(model.state_dict())
    params = dict(model.named_parameters())
    originals = {name: type(m) for name, m in model.named_modules()}
    with fused_layers(model):
        assert list(model.state_dict()) == before_keys
        assert {n: p for n, p in model.named_parameters()}.keys() == params.keys()
        assert all(p is params[n] for n, p in model.named_parameters())  # the very same tensors train
        swapped = [m for m in model.modules() if isinstance(m, (FusedRMSNorm, FusedGatedMLP))]
        assert len(swapped) == 7
        with torch.no_grad():
            model.model.norm.weight.add_(1.0)  # a change made while swapped stays after
    assert {name: type(m) for name, m in model.named_modules()} == originals
    assert not any(isinstance(m, (FusedRMSNorm, FusedGatedMLP)) for m in model.modules())
    assert torch.equal(model.model.norm.weight, params["model.norm.weight"]) and bool((model.model.norm.weight > 0.5).all())


def test_module_swaps_revert_in_reverse_order():
    from mmtune.models.patching import ModuleSwaps

    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU(), nn.Tanh()))
    first, inner = model[0], model[1][0]
    swaps = ModuleSwaps(model)
    swaps.replace("0", nn.Identity())
    swaps.replace("1.0", nn.Sigmoid())
    swaps.replace("1.0", nn.GELU())  # the same place twice: revert still ends at the original
    assert isinstance(model[0], nn.Identity) and isinstance(model[1][0], nn.GELU)
    swaps.revert()
    assert model[0] is first and model[1][0] is inner and not swaps.new_modules()
