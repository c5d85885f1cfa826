"""Batches for the Trainer.

`FlatCollator` puts a micro-batch into one row with per-sample position ids and no padding at all
(used for packed data: transformers isolates the samples). `PaddingCollator` right-pads to the
longest sample with an attention mask (unpacked data).
"""

from __future__ import annotations

import torch

from mmtune.data.encode import IGNORE_INDEX
from mmtune.data.packing import concat_samples


class FlatCollator:
    def __call__(self, rows: list[dict]) -> dict:
        flat = {"input_ids": [], "labels": [], "position_ids": []}
        for row in rows:
            if "position_ids" not in row:
                row = concat_samples([row])
            for key in flat:
                flat[key].extend(row[key])
        return {key: torch.tensor([values], dtype=torch.long) for key, values in flat.items()}


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
        return {key: torch.tensor(values, dtype=torch.long) for key, values in batch.items()}
