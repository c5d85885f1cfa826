"""Batches for the Trainer.

`FlatCollator` puts a micro-batch into one row with per-sample position ids and no padding at all
(used for packed data: transformers isolates the samples). `PaddingCollator` right-pads to the
longest sample with an attention mask (unpacked data).
"""

from __future__ import annotations

import torch

from mmtune.data.encode import IGNORE_INDEX
from mmtune.data.packing import concat_samples


def add_pixels(batch: dict, rows: list[dict]) -> dict:
    """Stack the rows' images (one entry per image, in token order) when there are any."""
    pixels = [r["pixel_values"] for r in rows if r.get("pixel_values") is not None]
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
    return batch


class FlatCollator:
    def __call__(self, rows: list[dict]) -> dict:
        flat = {"input_ids": [], "labels": [], "position_ids": []}
        for row in rows:
            ids = row if "position_ids" in row else concat_samples([row])
            for key in flat:
                flat[key].extend(ids[key])
        batch = {key: torch.tensor([values], dtype=torch.long) for key, values in flat.items()}
        return add_pixels(batch, rows)


class PaddingCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict:
        longest = max(len(r["input_ids"]) for r in rows)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for r in rows:
            n = len(r["input_ids"])
            pad = longest - n
            batch["input_ids"].append(list(r["input_ids"]) + [self.pad_token_id] * pad)
            batch["labels"].append(list(r["labels"]) + [IGNORE_INDEX] * pad)
            batch["attention_mask"].append([1] * n + [0] * pad)
        return add_pixels({key: torch.tensor(values, dtype=torch.long) for key, values in batch.items()}, rows)
