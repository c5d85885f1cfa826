"""Pack encoded samples into rows of at most `max_length` tokens.

A packed row keeps each sample's boundaries: position ids restart at 0 for every sample, and the
first label of every sample is ignored so no token learns to predict the next sample. The model
sees `position_ids` and no attention mask (collate.FlatCollator) and attends within each sample
only: flash-attention varlen on GPU, one SDPA call per sample with `mmtune_packed_sdpa` (what
`sdpa` becomes for packed training, see mmtune.models.packed_attention), transformers'
block-diagonal mask for eager — no attention across samples.
"""

from __future__ import annotations

import bisect

from mmtune.constants import IGNORE_INDEX


def pack_lengths(lengths: list[int], max_length: int) -> list[list[int]]:
    """Best-fit decreasing bin packing: lists of sample indices whose lengths sum to <= max_length."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # (remaining capacity, bin id) kept sorted, so the tightest bin that fits is one bisect away.
    free: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        if n > max_length:
            raise ValueError(f"sample {i} has {n} tokens, more than max_length {max_length}")
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            remaining, b = free.pop(at)
            bins[b].append(i)
            bisect.insort(free, (remaining - n, b))
        else:
            bins.append([i])
            bisect.insort(free, (max_length - n, len(bins) - 1))
    return bins


def concat_samples(samples: list[dict]) -> dict:
    """One packed row from encoded samples (dicts with input_ids and labels)."""
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for s in samples:
        n = len(s["input_ids"])
        input_ids.extend(s["input_ids"])
        labels.append(IGNORE_INDEX)
        labels.extend(s["labels"][1:])
        position_ids.extend(range(n))
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
