"""Packed rows through torch's varlen flash kernel (mmtune/models/varlen_attention.py).

The kernel itself runs on CUDA only. On CPU, the plumbing around it (layouts, sample boundaries,
GQA, the keywords of old and new torch releases, the one-time check and its fallback) is tested
with a stand-in kernel written from the documented semantics of `varlen_attn`; the real kernel is
compared on a GPU (marked `gpu`).
"""

from __future__ import annotations

import logging

import pytest
import torch

from mmtune.data.collate import FlatCollator
from mmtune.data.packing import concat_samples
from mmtune.models import varlen_attention
from mmtune.models.packed_attention import PACKED_SDPA, use_packed_attention
from mmtune.testing.tiny import tiny_lm_dir

LENGTHS = (7, 19, 4, 12)


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, causal, gqa, scale=None):
    """varlen_attn's documented meaning: each [cu[i], cu[i+1]) segment attends only to itself."""
    if k.shape[1] != q.shape[1] and not gqa:
        raise RuntimeError("number of heads in key/value must equal query heads")
    bounds = cu_q.tolist()
    assert bounds == cu_k.tolist() and max_q == max(b - a for a, b in zip(bounds, bounds[1:]))
    outs = []
    for a, b in zip(bounds, bounds[1:]):
        qi, ki, vi = (t[a:b].transpose(0, 1) for t in (q, k, v))
        outs.append(torch.nn.functional.scaled_dot_product_attention(
            qi, ki, vi, is_causal=causal, scale=scale, enable_gqa=k.shape[1] != q.shape[1]).transpose(0, 1))
    return torch.cat(outs)


def new_api(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1),
            enable_gqa=False):
    assert window_size in ((-1, -1), (-1, 0))
    return reference_varlen(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, causal=window_size == (-1, 0),
                            gqa=enable_gqa, scale=scale)


def old_api(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None):
    return reference_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, causal=is_causal, gqa=False)


def not_causal(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    return reference_varlen(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, causal=False, gqa=True, scale=scale)


class _NoBackward(torch.autograd.Function):
    """The right forward for q, k, v; a backward that does not exist."""

    @staticmethod
    def forward(ctx, q, k, v, out):
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError("derivative for _varlen_attn is not implemented")


def forward_only(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    with torch.no_grad():
        out = new_api(q, k, v, cu_seq_q, cu_seq_k, max_q, max_k, scale=scale, window_size=window_size,
                      enable_gqa=enable_gqa)
    return _NoBackward.apply(q, k, v, out)


def broken(*args, **kwargs):
    raise RuntimeError("FlashAttention only supports Ampere GPUs or newer.\nmore detail")


@pytest.fixture
def stand_in(monkeypatch):
    """Install `kernel` as torch's varlen_attn and let it run on CPU fp32; count its calls."""
    import inspect

    calls = []

    def install(kernel):
        def counted(*args, **kwargs):
            calls.append(kwargs)
            return kernel(*args, **kwargs)

        counted.__signature__ = inspect.signature(kernel)
        varlen_attention.reset()
        monkeypatch.setattr(varlen_attention, "kernel", lambda: counted)
        monkeypatch.setattr(varlen_attention, "_keywords", frozenset(inspect.signature(kernel).parameters))
        monkeypatch.setattr(varlen_attention, "_kernel", counted)
        monkeypatch.setattr(varlen_attention, "usable",
                            lambda query, dropout: varlen_attention._verified is not False and dropout == 0.0)
        return calls

    yield install
    varlen_attention.reset()


@pytest.fixture(scope="module")
def packed_model():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir("qwen2"), attn_implementation="sdpa", dtype=torch.float32)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA is exercised
    assert use_packed_attention(model) == PACKED_SDPA
    return model


def batch():
    g = torch.Generator().manual_seed(1)
    rows = []
    for n in LENGTHS:
        ids = torch.randint(5, 200, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    return FlatCollator(seq_lens=True)([concat_samples(rows)])


def loss_and_grads(model):
    model.zero_grad()
    out = model(**batch(), use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out.logits.detach(), grads


@pytest.fixture(scope="module")
def per_sample(packed_model):
    varlen_attention.reset()
    return loss_and_grads(packed_model)  # on CPU: one SDPA call per sample


@pytest.mark.parametrize("api", [new_api, old_api], ids=["window_size+enable_gqa", "is_causal"])
def test_varlen_gives_the_per_sample_result(stand_in, packed_model, per_sample, api, caplog):
    calls = stand_in(api)
    with caplog.at_level(logging.INFO, logger="mmtune.models.varlen_attention"):
        logits, grads = loss_and_grads(packed_model)
    layers = packed_model.config.num_hidden_layers
    assert len(calls) == 1 + layers  # the check once, then one launch per layer for the whole row, not one per sample
    assert varlen_attention._verified is True
    assert "varlen flash kernel" in caplog.text
    if api is new_api:
        assert calls[0]["window_size"] == (-1, 0) and calls[0]["enable_gqa"] is True
    else:
        assert calls[0]["is_causal"] is True  # and key/value heads were repeated to the query heads
    ref_logits, ref_grads = per_sample
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert torch.allclose(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6), name


def test_once_checked_the_collator_boundaries_go_to_the_kernel_without_a_host_sync(stand_in, packed_model, per_sample,
                                                                                     monkeypatch):
    from mmtune.models import packed_attention

    calls = stand_in(new_api)
    loss_and_grads(packed_model)  # the first forward checks the kernel (spans read on the host once)
    assert varlen_attention._verified is True
    read_back = []
    real_spans = packed_attention.sample_spans
    monkeypatch.setattr(packed_attention, "sample_spans", lambda *a: read_back.append(a) or real_spans(*a))
    seen = []
    kernel = varlen_attention._kernel
    monkeypatch.setattr(varlen_attention, "kernel", lambda: lambda *a, **kw: seen.append(a[3]) or kernel(*a, **kw))
    b = batch()
    logits = packed_model(**b, use_cache=False).logits.detach()
    assert read_back == []  # no boundaries read back from the device
    assert len(seen) == packed_model.config.num_hidden_layers and all(cu is b["cu_seq_lens_q"] for cu in seen)
    assert torch.allclose(logits, per_sample[0], atol=1e-5)
    assert len(calls) == 1 + packed_model.config.num_hidden_layers * 2


def test_a_wrong_kernel_is_caught_once_and_the_per_sample_path_stays(stand_in, packed_model, per_sample, caplog):
    calls = stand_in(not_causal)  # sees later tokens of its sample: must not be trusted
    with caplog.at_level(logging.WARNING, logger="mmtune.models.varlen_attention"):
        logits, _ = loss_and_grads(packed_model)
        loss_and_grads(packed_model)
    assert len(calls) == 1  # checked once, then never called again in this process
    assert varlen_attention._verified is False
    assert "differs from SDPA" in caplog.text and caplog.text.count("differs") == 1
    assert torch.allclose(logits, per_sample[0], atol=1e-5)


def test_a_failing_kernel_falls_back_with_one_warning(stand_in, packed_model, per_sample, caplog):
    calls = stand_in(broken)
    with caplog.at_level(logging.WARNING, logger="mmtune.models.varlen_attention"):
        logits, _ = loss_and_grads(packed_model)
    assert len(calls) == 1 and varlen_attention._verified is False
    assert "RuntimeError: FlashAttention only supports Ampere GPUs or newer." in caplog.text
    assert "more detail" not in caplog.text  # one line
    assert torch.allclose(logits, per_sample[0], atol=1e-5)


@pytest.mark.parametrize("api", [new_api, old_api], ids=["scale keyword", "no scale keyword"])
@pytest.mark.parametrize("scaling", [None, 0.3])
def test_a_model_scale_reaches_the_kernel(stand_in, api, scaling):
    stand_in(api)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 30, 16, generator=g)
    k, v = torch.randn(2, 1, 2, 30, 16, generator=g)
    spans = [(0, 10), (10, 20)]
    out = varlen_attention.varlen_forward(q, k, v, torch.tensor([0, 10, 30], dtype=torch.int32), 20, scaling, groups=2)
    ref = torch.cat([torch.nn.functional.scaled_dot_product_attention(
        q[:, :, s:s + n], k[:, :, s:s + n], v[:, :, s:s + n], is_causal=True, scale=scaling, enable_gqa=True)
        for s, n in spans], dim=2).transpose(1, 2)
    assert torch.allclose(out, ref, atol=1e-5)


def test_a_kernel_without_a_backward_is_caught_before_training_needs_it(stand_in, packed_model, per_sample, caplog):
    calls = stand_in(forward_only)  # right forward, no backward: training would fail at loss.backward()
    with caplog.at_level(logging.WARNING, logger="mmtune.models.varlen_attention"):
        logits, grads = loss_and_grads(packed_model)
    assert len(calls) == 1 and varlen_attention._verified is False
    assert "NotImplementedError: derivative for _varlen_attn is not implemented" in caplog.text
    assert torch.allclose(logits, per_sample[0], atol=1e-5)
    assert all(torch.allclose(grads[n], per_sample[1][n], rtol=1e-4, atol=1e-6) for n in grads)


def test_cpu_tensors_never_take_the_varlen_path():
    varlen_attention.reset()
    q = torch.randn(1, 4, 16, 32)
    assert not varlen_attention.usable(q, 0.0)
    assert not varlen_attention.usable(q.bfloat16(), 0.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen flash kernel runs on CUDA only")
def test_real_kernel_on_cuda_matches_per_sample_sdpa(caplog):
    from transformers import AutoModelForCausalLM

    varlen_attention.reset()
    assert varlen_attention.kernel() is not None, f"torch {torch.__version__} has no torch.nn.attention.varlen"
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir("qwen2"), attn_implementation="sdpa",
                                                 dtype=torch.bfloat16).cuda()
    use_packed_attention(model)
    cuda_batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch().items()}
    with caplog.at_level(logging.INFO, logger="mmtune.models.varlen_attention"):
        model(**cuda_batch, use_cache=False).loss.backward()
    assert varlen_attention._verified is True, caplog.text
    q = torch.randn(1, 8, 300, 64, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn(2, 1, 2, 300, 64, device="cuda", dtype=torch.bfloat16)
    spans = [(0, 120), (120, 100), (220, 80)]
    cu = torch.tensor([0, 120, 220, 300], dtype=torch.int32, device="cuda")
    out = varlen_attention.varlen_forward(q, k, v, cu, 120, None, groups=4)
    ref = torch.cat([torch.nn.functional.scaled_dot_product_attention(
        q[:, :, s:s + n].float(), k[:, :, s:s + n].float(), v[:, :, s:s + n].float(), is_causal=True, enable_gqa=True)
        for s, n in spans], dim=2).transpose(1, 2)
    assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2

    def per_sample(qq, kk, vv):  # the bf16 path the kernel replaces, with gradients
        return torch.cat([torch.nn.functional.scaled_dot_product_attention(
            qq[:, :, s:s + n], kk[:, :, s:s + n], vv[:, :, s:s + n], is_causal=True, enable_gqa=True)
            for s, n in spans], dim=2).transpose(1, 2)

    error, grad_error = varlen_attention.check_against(per_sample, q, k, v, cu, 120, None, 4)
    assert error < varlen_attention.TOLERANCE and grad_error < varlen_attention.GRAD_TOLERANCE, (error, grad_error)
    varlen_attention.reset()
