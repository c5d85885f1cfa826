"""The transformers Trainer with the few things mmtune changes.

- The training sampler: a shuffle whose order is a pure function of (seed, epoch), so a run resumed
  from a checkpoint sees exactly the batches the uninterrupted run would have seen (torch's
  RandomSampler draws from the global RNG, whose state at an epoch start is not restored); with
  `shuffle=False` (the recipe's `data.shuffle: false`) rows come in order, every epoch.
- The chunked loss (`train.chunked_loss`, mmtune.models.chunked_loss): when the trainer is given
  one, a training step's loss comes from the decoder's output and the head's weight a chunk of
  tokens at a time, in `compute_loss`, the Trainer's own overridable; evaluation steps and models
  without one take the Trainer's path. The loss is scaled across devices as the Trainer scales a
  loss a model normalised by `num_items_in_batch`.
- Learning rates by part (`train.vision_lr`, `train.projector_lr`, as ms-swift's `vit_lr` /
  `aligner_lr`): the Trainer's parameter groups (with and without weight decay) are split by the
  module path each parameter sits under, each part with its own rate; the scheduler scales every
  group's rate alike.
- Peak memory in every training log entry (as XTuner's logs show it): `peak_gpu_mem_gib`, the
  most CUDA memory this process's tensors took so far (`torch.cuda.max_memory_allocated`), or on
  CPU `peak_rss_gib`, the process's peak resident memory. It reaches train.log, TensorBoard and
  trainer_state.json with the loss.
"""

from __future__ import annotations

import contextlib
import errno
import math
import resource
import shutil
import sys
from pathlib import Path

import torch
from transformers import Trainer

from mmtune.errors import MmtuneError


def peak_memory() -> dict[str, float]:
    """{"peak_gpu_mem_gib": ...} once CUDA is in use in this process, else {"peak_rss_gib": ...}."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return {"peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_rss_gib": round(maxrss / (2**30 if sys.platform == "darwin" else 2**20), 3)}


def split_param_groups(optimizer, model, part_lrs: list[tuple[str, float]]) -> None:
    """Split `optimizer`'s parameter groups (before its first step) so that the parameters under each
    module path of `part_lrs` get that learning rate."""
    names = {id(p): f".{n}." for n, p in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        buckets: dict[float, list] = {}
        for p in group["params"]:
            lr = next((lr for path, lr in part_lrs if f".{path}." in names.get(id(p), "")), group["lr"])
            buckets.setdefault(lr, []).append(p)
        groups += [{**group, "params": params, "lr": lr} for lr, params in buckets.items()]
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)


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


class Diverged(MmtuneError):
    """Training produced a NaN or infinite loss or gradient: every rank stops, nothing more is saved."""

    def __init__(self, what: str, step: int, args):
        super().__init__(f"training diverged at step {step}: {what}",
                         hint=f"lower train.lr (now {args.learning_rate:g})"
                              + ("" if args.max_grad_norm > 0 else ", set train.max_grad_norm (clipping is off)")
                              + ", or check the data; resume from a checkpoint before the step")


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# torch.save's zip writer reports a full disk as a failed write rather than an OSError
DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "unexpected pos", "PytorchStreamWriter failed writing")


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    return isinstance(exc, (OSError, RuntimeError)) and any(text in str(exc) for text in DISK_FULL_TEXT)


class DiskFull(MmtuneError):
    def __init__(self, folder: Path):
        super().__init__(f"no space left on the device while saving {folder}; the partial save was removed, earlier "
                         "checkpoints are intact",
                         hint="free some space (or give --work-dir on a larger disk), then continue with --resume auto")


@contextlib.contextmanager
def removed_if_disk_full(folder: Path):
    """Saving into `folder`: on a full disk, delete what was written and say so in one line."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if not is_disk_full(e):
            raise
        shutil.rmtree(folder, ignore_errors=True)
        raise DiskFull(folder) from None


class MmtuneTrainer(Trainer):
    def __init__(self, *args, shuffle: bool = True, chunked_loss=None, part_lrs=(), **kwargs):
        self.shuffle = shuffle
        self.chunked_loss = chunked_loss  # a ChunkedLoss, or None for the model's own loss
        self.part_lrs = list(part_lrs)  # [(module path, lr)], the first that holds a parameter wins
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.part_lrs and not getattr(self, "_split_by_part", False):
            self._split_by_part = True
            split_param_groups(optimizer, self.model if model is None else model, self.part_lrs)
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.chunked_loss is None or "labels" not in inputs or not (model.training and torch.is_grad_enabled()):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        divisor = num_items_in_batch if self.model_accepts_loss_kwargs else None
        loss, outputs = self.chunked_loss(model, inputs, divisor)
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            # as Trainer.compute_loss scales a loss the model divided by the global token count
            scale = self.accelerator.num_processes // self.get_tp_size()
            loss = loss * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss

    def _save_checkpoint(self, model, trial):
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        with removed_if_disk_full(folder):  # before rotation: the older checkpoints stay
            super()._save_checkpoint(model, trial)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():  # before the optimizer step: no NaN reaches the weights
            raise Diverged(f"the loss is {loss.float().mean().item()}", self.state.global_step + 1, self.args)
        return loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        grad_norm = logs.get("grad_norm")
        # fp16 AMP: an inf/NaN norm is the loss scaler skipping a step, as it should
        if grad_norm is not None and not math.isfinite(grad_norm) and not self.args.fp16:
            raise Diverged(f"the gradient norm is {grad_norm}", self.state.global_step, self.args)
        if "loss" in logs or "train_runtime" in logs:  # training entries, not eval ones
            logs = {**logs, **peak_memory()}
        super().log(logs, *args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.shuffle:
            return torch.utils.data.SequentialSampler(dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochShuffleSampler(len(dataset), seed)
