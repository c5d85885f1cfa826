"""Batches for the Trainer.

`FlatCollator` puts a micro-batch into one row with per-sample position ids and no padding at all
(used for packed data: the attention keeps the samples apart, see `mmtune.models.packed_attention`).
With `seq_lens=True` it also passes the sample boundaries as `cu_seq_lens_q/k` + `max_length_q/k`
(the kwargs of `DataCollatorWithFlattening`), which flash-attention's varlen path and
`mmtune_packed_sdpa` read instead of re-deriving them from the position ids in every layer; only
for models whose forward takes those kwargs (transformers' own, not every remote-code model).
With `trained_logits_only=True` it adds `logits_to_keep` (a mask of the positions whose next token
is trained) and their `shift_labels`: the model projects only those hidden states onto the
vocabulary and the loss is the same mean over the same tokens, without full-vocab logits for
prompt tokens (~8% more tokens/s on the kit model on CPU with a quarter of the tokens untrained;
bench/packed_attention.py). The output's `logits` then hold only those positions, flattened.
A single row beats rows of `max_length`: no padding, and attention cost depends only on the
samples. `PaddingCollator` right-pads to the longest sample with an attention mask (unpacked data).

Images: the rows' per-sample image tensors are combined by `combine_images` (a VLM family's own
way, e.g. MiniCPM-V's one NaViT-packed row of patches; by default concatenated along the first
dimension) in sample order, which is the order of the image tokens. `token_types` = (name, image
token id) adds the image-token mask a family's forward reads (`mm_token_type_ids`, `token_type_ids`).
Rows whose samples carry several rows of position ids (Qwen-VL's mrope, 4 x 1 x L) are joined along L.
"""

from __future__ import annotations

import torch

from mmtune.constants import IGNORE_INDEX
from mmtune.data.packing import concat_samples


def cat_images(images: list[dict]) -> dict:
    """Per-sample image tensors as one forward takes them: each key concatenated along its first dimension."""
    return {key: torch.cat([im[key] for im in images]) for key in images[0]}


class ImageBatch:
    """The image side of a batch: combined image tensors and the image-token mask (see the module doc)."""

    def __init__(self, combine_images=None, token_types: tuple[str, int] | None = None):
        self.combine_images = combine_images or cat_images
        self.token_types = token_types

    def add(self, batch: dict, rows: list[dict]) -> dict:
        images = [im for row in rows for im in row.get("image_inputs") or []]
        if images:
            batch.update(self.combine_images(images))
        if self.token_types is not None:
            name, image_token_id = self.token_types
            batch[name] = (batch["input_ids"] == image_token_id).int()
        return batch


class FlatCollator:
    def __init__(self, seq_lens: bool = False, trained_logits_only: bool = False, images: ImageBatch | None = None):
        self.seq_lens = seq_lens
        self.trained_logits_only = trained_logits_only
        self.images = images or ImageBatch()

    def __call__(self, rows: list[dict]) -> dict:
        flat = {"input_ids": [], "labels": [], "position_ids": []}
        rope = [row["position_ids"] for row in rows if torch.is_tensor(row.get("position_ids"))]
        for row in rows:
            ids = row if "position_ids" in row else concat_samples([row])
            for key in ("input_ids", "labels") if rope else flat:
                flat[key].extend(ids[key])
        if rope:  # rows of (rows x 1 x L) position ids; the first row holds the text positions
            flat.pop("position_ids")
        batch = {key: torch.tensor([values], dtype=torch.long) for key, values in flat.items()}
        if rope:
            batch["position_ids"] = torch.cat(rope, dim=-1)
            text_positions = batch["position_ids"][0, 0].tolist()
        else:
            text_positions = flat["position_ids"]
        if self.seq_lens:
            batch.update(seq_lens(text_positions))
        if self.trained_logits_only:
            batch.update(trained_positions(batch["labels"]))
        return self.images.add(batch, rows)


def trained_positions(labels: torch.Tensor) -> dict:
    """`logits_to_keep` (bool, labels' shape) marks the positions whose next token is trained;
    `shift_labels` are those next tokens, in order. Nothing when no token is trained."""
    following = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE_INDEX)], dim=1)
    keep = following != IGNORE_INDEX
    if not keep.any():
        return {}
    return {"logits_to_keep": keep, "shift_labels": following[keep]}


def seq_lens(position_ids: list[int]) -> dict:
    """Flash-attention varlen kwargs for one flat row: a sample starts where positions restart."""
    starts = [i for i, p in enumerate(position_ids) if i == 0 or p != position_ids[i - 1] + 1]
    bounds = [*starts, len(position_ids)]
    cu = torch.tensor(bounds, dtype=torch.int32)
    longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:])) if position_ids else 0
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


class PaddingCollator:
    def __init__(self, pad_token_id: int, images: ImageBatch | None = None):
        self.pad_token_id = pad_token_id
        self.images = images or ImageBatch()

    def __call__(self, rows: list[dict]) -> dict:
        longest = max(len(r["input_ids"]) for r in rows)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for r in rows:
            n = len(r["input_ids"])
            pad = longest - n
            batch["input_ids"].append(list(r["input_ids"]) + [self.pad_token_id] * pad)
            batch["labels"].append(list(r["labels"]) + [IGNORE_INDEX] * pad)
            batch["attention_mask"].append([1] * n + [0] * pad)
        return self.images.add({key: torch.tensor(values, dtype=torch.long) for key, values in batch.items()}, rows)
