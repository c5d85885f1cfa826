"""Packed rows through torch's variable-length flash kernel (`torch.nn.attention.varlen`), on CUDA.

`mmtune_packed_sdpa` runs one SDPA call per sample of a packed row. On a GPU that is one small kernel
per sample and layer (a 4k row of ~250-token samples: 16 launches per layer and direction);
`varlen_attn` does the whole row in one flash-attention launch from the sample boundaries
(`cu_seq`), with the same result: causal attention inside each sample, none across. Once the
kernel has passed its check, the collator's `cu_seq_lens_q` (already on the GPU) goes to it as is,
so a packed step reads nothing back to the host for attention.

It is used only where it can run: CUDA tensors in bf16/fp16, no dropout, a head size flash takes,
and a torch that has the module (2.9+; the keywords changed between releases, so they are read
from its signature). The first use in a process is checked against the per-sample SDPA result on
that layer's inputs, forward and backward; an error or a mismatch logs one warning and the process
keeps the per-sample path. So a torch build or GPU without the kernel costs one warning, never a wrong result.
"""

from __future__ import annotations

import inspect
import logging

import torch

log = logging.getLogger(__name__)

# None: not tried yet in this process; True / False: the kernel passed / failed its first check
_verified: bool | None = None
_kernel = None  # varlen_attn, once imported
_keywords: frozenset = frozenset()  # its keyword parameters
# (spans, device) -> (cu_seq int32 tensor, longest sample): every layer of a forward shares the spans
_cu_cache: tuple = (None, None, None, 0)
TOLERANCE = 2e-2  # bf16 flash vs bf16 SDPA: both round to bf16; a wrong mask differs by O(1)
GRAD_TOLERANCE = 5e-2  # gradients go through more bf16 roundings


def kernel():
    """torch.nn.attention.varlen.varlen_attn, or None when this torch has no such module."""
    global _kernel, _keywords
    if _kernel is None:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except ImportError:
            return None
        _kernel, _keywords = varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)
    return _kernel


def usable(query: torch.Tensor, dropout: float) -> bool:
    """Whether the varlen kernel may run these inputs (before its one-time check)."""
    return (
        _verified is not False
        and query.is_cuda
        and query.dtype in (torch.bfloat16, torch.float16)
        and dropout == 0.0
        and query.shape[-1] <= 256
        and query.shape[-1] % 8 == 0
        and kernel() is not None
    )


def ready(query: torch.Tensor, dropout: float, cu_seq_lens, max_length) -> bool:
    """Whether the kernel, already checked in this process, can take the collator's own boundaries
    (`cu_seq_lens_q` on the query's device, `max_length_q` an int): then nothing is read back to
    the host for the row."""
    return (
        _verified is True
        and usable(query, dropout)
        and torch.is_tensor(cu_seq_lens)
        and cu_seq_lens.device == query.device
        and cu_seq_lens.dtype == torch.int32
        and isinstance(max_length, int)
    )


def boundaries(spans: list[tuple[int, int]], device) -> tuple[torch.Tensor, int]:
    """(cu_seq as int32 on `device`, longest sample) for the spans of a row, cached per forward."""
    global _cu_cache
    cached_spans, cached_device, cu, longest = _cu_cache
    if cached_spans is spans and cached_device == device:
        return cu, longest
    starts = [start for start, _ in spans] + [spans[-1][0] + spans[-1][1]]
    cu = torch.tensor(starts, dtype=torch.int32).to(device, non_blocking=True)
    longest = max(n for _, n in spans)
    _cu_cache = (spans, device, cu, longest)
    return cu, longest


def varlen_forward(query, key, value, cu: torch.Tensor, longest: int, scaling: float | None, groups: int) -> torch.Tensor:
    """(1, H, T, D) query and (1, Hkv, T, D) key/value in, (1, T, H, D) out (transformers' layout);
    `cu`: int32 sample starts and the row's end on the query's device, `longest`: the longest sample."""
    run = kernel()
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, H, D)
    extra = {}
    if groups > 1:
        if "enable_gqa" in _keywords:
            extra["enable_gqa"] = True
        else:  # older releases want as many key/value heads as query heads
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    if "window_size" in _keywords:
        extra["window_size"] = (-1, 0)  # (-1, 0): causal
    else:
        extra["is_causal"] = True
    if scaling is not None and "scale" in _keywords:
        extra["scale"] = scaling
    elif scaling is not None and abs(scaling * q.shape[-1] ** 0.5 - 1) > 1e-6:  # no `scale` (torch 2.9)
        q = q * (scaling * q.shape[-1] ** 0.5)  # the kernel's own scale is 1/sqrt(D)
    out = run(q, k, v, cu, cu, longest, longest, **extra)
    return out.unsqueeze(0)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-6)).item()


def check_against(reference, query, key, value, cu, longest, scaling, groups) -> tuple[float, float]:
    """(output error, gradient error) of the kernel against `reference(q, k, v)` (the per-sample SDPA
    path) on these inputs, both relative; the backward runs too, so a kernel without one fails here
    rather than in the first training step."""
    with torch.enable_grad():
        ours = [t.detach().requires_grad_(True) for t in (query, key, value)]
        theirs = [t.detach().requires_grad_(True) for t in (query, key, value)]
        out = varlen_forward(*ours, cu, longest, scaling, groups)
        expected = reference(*theirs)
        cotangent = torch.linspace(-1, 1, out.numel(), device=out.device, dtype=out.dtype).view_as(out)
        grads = torch.autograd.grad(out, ours, cotangent)
        expected_grads = torch.autograd.grad(expected, theirs, cotangent)
    return _relative(out, expected), max(_relative(g, e) for g, e in zip(grads, expected_grads))


def try_varlen(query, key, value, spans, scaling, groups, reference) -> torch.Tensor | None:
    """The varlen result, or None where the per-sample path must run. `reference(q, k, v)` computes the
    per-sample SDPA output: used once per process, to check the kernel (forward and backward) before
    trusting it."""
    global _verified
    cu, longest = boundaries(spans, query.device)
    if _verified:
        return varlen_forward(query, key, value, cu, longest, scaling, groups)
    try:
        error, grad_error = check_against(reference, query, key, value, cu, longest, scaling, groups)
    except Exception as exc:  # a torch or GPU without the kernel (or its backward): keep the per-sample path
        _verified = False
        log.warning("packed attention: torch's varlen kernel failed (%s: %s); using one SDPA call per sample",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None
    if not (error < TOLERANCE and grad_error < GRAD_TOLERANCE):
        _verified = False
        log.warning("packed attention: torch's varlen kernel differs from SDPA by %.3g (output) and %.3g "
                    "(gradients, relative); using one SDPA call per sample", error, grad_error)
        return None
    _verified = True
    log.info("packed attention: torch's varlen flash kernel (checked against SDPA: relative difference %.2g, "
             "gradients %.2g)", error, grad_error)
    return varlen_forward(query, key, value, cu, longest, scaling, groups)


def reset() -> None:
    """Forget the check (tests)."""
    global _verified, _kernel, _keywords, _cu_cache
    _verified, _kernel, _keywords, _cu_cache = None, None, frozenset(), (None, None, None, 0)
