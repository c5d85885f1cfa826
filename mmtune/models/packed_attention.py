"""Attention for packed rows that does no work across sample boundaries (the sdpa path).

Packed training gives the model one flattened row of several samples, per-sample `position_ids`
(restarting at 0) and no attention mask. With plain `sdpa` transformers then materialises a
block-diagonal mask over the whole row, and SDPA computes every score of the (sum of lengths)^2
matrix only to mask most of them away. `mmtune_packed_sdpa` is registered through transformers'
public interfaces instead:

- `AttentionMaskInterface`: no mask is built for an unpadded single row without a cache (the
  packed-training case); anything else (padding, a cache, sliding windows, bidirectional or
  custom mask functions) gets transformers' own `sdpa_mask`.
- `AttentionInterface`: with no mask and one row, the sample boundaries come from `cu_seq_lens_q`
  (when the collator passes it, as `DataCollatorWithFlattening` does) or from the restarts of
  `position_ids`, and SDPA runs causally inside each sample, over splits of the row: the work is
  sum(len_i^2) instead of (sum len_i)^2, nothing crosses a boundary, and no mask is materialised.
  Everything else (generation with a cache, padded batches) goes to transformers'
  `sdpa_attention_forward`. (Restarting position ids in one row are always separate samples here,
  even when an all-ones 2-D mask comes along, where plain sdpa would let them see each other.)

Samples run one SDPA call each rather than gathered into padded batches of similar lengths: on CPU
the loop's overhead was within the noise and the padded batches only added gather/scatter copies
(bench/packed_attention.py). Splitting long samples into query chunks to skip the masked half did
not pay either (torch's CPU kernel is as fast with is_causal as with the extra masks). On CUDA in
bf16/fp16 the row goes through torch's variable-length flash kernel in one launch instead
(`mmtune/models/varlen_attention.py`, checked against this loop once per process).
`flash_attention_2` / `flash_attention_3` (the flash-attn packages) take the same collator output.

`use_packed_attention(model)` switches a model's language model from `sdpa` to this
implementation; `mmtune train` calls it for packed data (`pack_to_max_length: true`). `eager`
stays eager, flash stays flash, and a vision tower keeps its own attention.
"""

from __future__ import annotations

import logging

import torch

from mmtune.models import varlen_attention

log = logging.getLogger(__name__)

PACKED_SDPA = "mmtune_packed_sdpa"
# (boundary tensor, its in-place version, spans): every layer of a forward sees the same tensor.
# One tuple, replaced whole, so threads (nn.DataParallel replicas) never read a torn entry.
_last_spans: tuple = (None, -1, None)


def packed_sdpa_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, attention_mask=None, **kwargs):
    """No mask for one unpadded row without a cache (attention finds the samples itself);
    transformers' `sdpa_mask` for every other case, so those stay exactly as with `sdpa`."""
    from transformers.masking_utils import sdpa_mask

    plain_causal = (
        attention_mask is None
        and batch_size == 1
        and q_length == kv_length
        and not torch.is_tensor(q_offset) and q_offset == 0
        and not torch.is_tensor(kv_offset) and kv_offset == 0
        and not kwargs.get("use_vmap")  # custom or/and mask functions (e.g. bidirectional image tokens)
        and kwargs.get("local_size") is None  # sliding window / chunked attention
        and "allow_is_bidirectional_skip" not in kwargs  # an encoder's bidirectional mask
    )
    if plain_causal:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, **kwargs)


def sample_spans(length: int, cu_seq_lens: torch.Tensor | None, position_ids: torch.Tensor | None) -> list[tuple[int, int]] | None:
    """[(start, length)] of the samples in a row of `length` tokens, or None when it holds one sample.

    A sample starts where the position id does not follow the previous one (as transformers'
    `find_packed_sequence_indices` decides for the sdpa/eager mask)."""
    global _last_spans
    source = cu_seq_lens if cu_seq_lens is not None else position_ids
    if source is None:
        return None
    cached, version, spans = _last_spans
    if source is cached and source._version == version:
        return spans
    if cu_seq_lens is not None:
        bounds = cu_seq_lens.reshape(-1).tolist()
        if bounds[0] != 0 or bounds[-1] != length:
            raise ValueError(f"cu_seq_lens {bounds[:3]}...{bounds[-1:]} do not cover a row of {length} tokens")
        starts = bounds[:-1]
    else:
        if position_ids.dim() != 2 or position_ids.shape[0] != 1 or position_ids.shape[1] != length:
            return None  # e.g. multimodal rope (3 x positions): not ours to interpret
        pos = position_ids[0]
        starts = [0, *((pos[1:] - pos[:-1]) != 1).nonzero().flatten().add(1).tolist()]
    bounds = [*starts, length]
    spans = [(s, e - s) for s, e in zip(bounds[:-1], bounds[1:]) if e > s]
    spans = spans if len(spans) > 1 else None
    _last_spans = (source, source._version, spans)
    return spans


def packed_sdpa_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                                  scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """transformers attention-function signature: (B, H, T, D) tensors in, ((B, T, H, D), None) out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    spans = None
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    one_row = (
        attention_mask is None
        and causal
        and query.shape[0] == 1
        and query.shape[2] == key.shape[2] > 1
        and kwargs.get("position_bias") is None
        and kwargs.get("cache") is None
    )
    groups = getattr(module, "num_key_value_groups", 1)
    cu, longest = kwargs.get("cu_seq_lens_q"), kwargs.get("max_length_q")
    if one_row and varlen_attention.ready(query, dropout, cu, longest):
        # the kernel passed its check: the collator's boundaries go straight to it (no host sync)
        _check_window(kwargs.get("sliding_window"), longest)
        return varlen_attention.varlen_forward(query, key, value, cu, longest, scaling, groups), None
    if one_row:
        spans = sample_spans(query.shape[2], cu, kwargs.get("position_ids"))
    if spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    _check_window(kwargs.get("sliding_window"), max(n for _, n in spans))
    extra = {"enable_gqa": True} if groups > 1 else {}
    # split, not slices: its backward is one cat per tensor instead of a zero-filled full-size
    # gradient per sample and tensor
    lengths = [n for _, n in spans]

    def per_sample(q_row=query, k_row=key, v_row=value):
        outs = [
            torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling, is_causal=True, **extra)
            for q, k, v in zip(q_row.split(lengths, dim=2), k_row.split(lengths, dim=2), v_row.split(lengths, dim=2))
        ]
        return torch.cat(outs, dim=2).transpose(1, 2).contiguous()

    if varlen_attention.usable(query, dropout):  # CUDA: one flash launch for the whole row
        out = varlen_attention.try_varlen(query, key, value, spans, scaling, groups, per_sample)
        if out is not None:
            return out, None
    return per_sample(), None


def _check_window(window: int | None, longest: int) -> None:
    if window is not None and longest > window:
        raise ValueError(f"{PACKED_SDPA} has no sliding window: a packed sample is longer than the "
                         f"model's window of {window} tokens; use attn_implementation: eager or flash_attention_2")


def register() -> str:
    """Register the implementation with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention_forward)
    AttentionMaskInterface.register(PACKED_SDPA, packed_sdpa_mask)
    return PACKED_SDPA


def language_model(model):
    """The transformers model that owns the text config (the LM itself, or a VLM's language model)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    text_config = base.config.get_text_config()
    if text_config is base.config:
        return base
    for module in base.modules():
        if getattr(module, "config", None) is text_config and hasattr(module, "set_attn_implementation"):
            return module
    return None


def reads_seq_lens(model) -> bool:
    """Whether the language model's attention takes the collator's `cu_seq_lens_*` / `max_length_*`
    (flash varlen and mmtune_packed_sdpa do; a remote-code forward may not even accept them)."""
    lm = language_model(model)
    if lm is None or not lm._can_set_attn_implementation():
        return False
    attn = lm.config._attn_implementation or ""
    return attn == PACKED_SDPA or attn.startswith("flash_attention")


def flat_collator_options(model) -> dict:
    """FlatCollator options `model`'s forward can take: sample boundaries for its attention, and
    logits only where labels are trained (transformers' own forward with a tensor
    `logits_to_keep` and `shift_labels` for its loss; not every remote-code model has them)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    ours = type(base).__module__.startswith(("transformers.", "mmtune."))
    takes_keep = ours and "logits_to_keep" in inspect.signature(base.forward).parameters
    return {"seq_lens": reads_seq_lens(model), "trained_logits_only": takes_keep}


def use_packed_attention(model) -> str:
    """Give the language model of `model` the packed attention when it runs `sdpa`; returns the
    attention implementation it uses afterwards. Models that do not go through transformers'
    AttentionInterface (some remote code) keep theirs, so do eager and flash-attention."""
    lm = language_model(model)
    if lm is None:
        return "unknown"
    current = lm.config._attn_implementation
    if current != "sdpa":
        return current
    if not lm._can_set_attn_implementation():
        log.info("%s does not use transformers' attention interface: packed rows keep sdpa's block mask",
                 type(lm).__name__)
        return current
    lm.set_attn_implementation(register())
    return lm.config._attn_implementation
