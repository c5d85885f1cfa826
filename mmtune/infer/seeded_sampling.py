"""Per-request sampling inside transformers' continuous batching: temperature, top-p and a seed per
request, greedy and sampled requests in one batch.

Continuous batching samples a whole batch with one random stream, so a request's answer would
depend on which others share its batch, and its `seed` would mean nothing. Here the choice of each
row is made by the logits processors instead (the Gumbel-max trick): row scores plus Gumbel noise
drawn from a hash of (request seed, step, token id), then argmax. That is an exact sample from the
tempered, top-p-filtered distribution, the same whatever else is in the batch. A greedy request
(temperature 0) gets no noise: plain argmax, as `generate` does. The chosen token is returned as the
only finite score, so the engine's own sampler (softmax + multinomial) can only pick it.

The noise is pure tensor arithmetic on the per-row key, so it also works inside CUDA graphs.
"""

from __future__ import annotations

import zlib

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
    ContinuousBatchingTemperatureLogitsWarper,
    ContinuousBatchingTopKLogitsWarper,
    ContinuousBatchingTopPLogitsWarper,
)

GREEDY_SEED = -1  # the `seed` a greedy request carries: no noise
NO_TOP_K = 2**30  # top-k off (the engine clips it to the vocabulary)


def noise_key(seed: int, step: int) -> int:
    """A non-zero 31-bit key for (seed, step); 0 (no noise) for a greedy request."""
    if seed == GREEDY_SEED:
        return 0
    return (zlib.crc32(f"{seed}:{step}".encode()) & 0x7FFFFFFF) or 1


_MASK32 = 0xFFFFFFFF


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finalizer on int64 tensors holding 32-bit values (int64 products wrap; the low
    32 bits, all that is kept, are exact)."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _MASK32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _MASK32
    return h ^ (h >> 16)


def gumbel_noise(keys: torch.Tensor, vocab_size: int, dtype=torch.float32) -> torch.Tensor:
    """[rows, vocab] standard Gumbel noise, a fixed function of each row's key and the token id (the key
    is mixed before the id joins it, so no two keys give shifted copies of one another's noise)."""
    ids = torch.arange(vocab_size, device=keys.device, dtype=torch.int64)
    mixed = _fmix32(keys.to(torch.int64) & _MASK32)
    h = _fmix32((mixed[:, None] ^ ((ids[None, :] * 0x9E3779B1) & _MASK32)))
    uniform = (h.to(torch.float64) + 0.5) / 2.0**32  # in (0, 1)
    return (-torch.log(-torch.log(uniform))).to(dtype)


class SeededChoice(ContinuousBatchingLogitsProcessor):
    """The last processor: picks each row's token (noise + argmax) and leaves it the only finite score."""

    supported_kwargs = {"seed": int}
    ignored_kwargs = ()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token) -> torch.Tensor:
        # the step is the token's absolute position (the engine has advanced it for this batch): unlike a
        # count of generated tokens it is right under asynchronous batching and after an offload reset
        keys = [noise_key(r.state.logit_processor_kwargs.get("seed", GREEDY_SEED), r.state.position_offset)
                for r in requests_with_new_token]
        return torch.tensor(keys, dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        keys = tensor_arg[: scores.size(0)]
        noise = gumbel_noise(keys, scores.size(-1), scores.dtype) * (keys != 0).to(scores.dtype)[:, None]
        choice = (scores + noise).argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter_(-1, choice, 0.0)


def request_kwargs(temperature: float, top_p: float, seed: int | None, top_k: int) -> dict:
    """What one request passes to `add_request` for these processors; an unseeded sampled request
    gets a random seed (its answer is then random, as without batching)."""
    if temperature <= 0:
        return {"temperature": 1.0, "top_k": NO_TOP_K, "top_p": 1.0, "seed": GREEDY_SEED}
    if seed is None:
        import secrets

        seed = secrets.randbits(62)
    return {"temperature": float(temperature), "top_k": int(top_k) if top_k > 0 else NO_TOP_K, "top_p": float(top_p),
            "seed": int(seed) & (2**62 - 1)}


def sampling_top_k(model) -> int:
    """The top-k `generate` samples with for this model: its generation config's, else transformers'
    default (50); 0 for none. The batched engine applies the same, so both workers sample alike."""
    value = getattr(getattr(model, "generation_config", None), "top_k", None)
    return 50 if value is None else int(value)


def seeded_processors() -> ContinuousBatchingLogitsProcessorList:
    """Temperature, top-k, top-p (transformers' per-request versions, in `generate`'s order), then the
    seeded choice."""
    processors = LogitsProcessorList([
        ContinuousBatchingTemperatureLogitsWarper(TemperatureLogitsWarper(1.0)),
        ContinuousBatchingTopKLogitsWarper(TopKLogitsWarper(1)),
        ContinuousBatchingTopPLogitsWarper(TopPLogitsWarper(1.0)),
        SeededChoice(),
    ])
    listed = ContinuousBatchingLogitsProcessorList(processors, per_request_processors=False)
    listed.tensors_required = len(processors)  # one argument row each (counted only for converted processors)
    return listed
