"""The transformers Trainer with the few things mmtune changes.

Only the training sampler for now: a shuffle whose order is a pure function of (seed, epoch), so a
run resumed from a checkpoint sees exactly the batches the uninterrupted run would have seen
(torch's RandomSampler draws from the global RNG, whose state at an epoch start is not restored);
with `shuffle=False` (the recipe's `data.shuffle: false`) rows come in order, every epoch.
"""

from __future__ import annotations

import torch
from transformers import Trainer


class EpochShuffleSampler(torch.utils.data.Sampler):
    def __init__(self, length: int, seed: int = 0):
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by accelerate's dataloader every epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


class MmtuneTrainer(Trainer):
    def __init__(self, *args, shuffle: bool = True, **kwargs):
        self.shuffle = shuffle
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.shuffle:
            return torch.utils.data.SequentialSampler(dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochShuffleSampler(len(dataset), seed)
