"""What a run tells the person watching it: train.log and console lines (rank 0; other ranks only
warnings, prefixed), the sample chats written to samples.jsonl, and the peak memory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mmtune.train import launch
from mmtune.train.trainer import peak_memory


def setup_logging(work_dir: Path) -> None:
    """Readable log lines to the console and to work_dir/train.log."""
    logger = logging.getLogger("mmtune")
    if quiet_other_ranks(logger):  # rank > 0 of a multi-process run: warnings only, no log file
        return
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    remove_own_handlers(logger)
    for handler in (logging.FileHandler(work_dir / "train.log", encoding="utf-8"), logging.StreamHandler()):
        handler.setFormatter(fmt)
        handler._mmtune = True
        logger.addHandler(handler)
    logger.propagate = False


def remove_own_handlers(logger: logging.Logger) -> None:
    """Detach and close the handlers an earlier run in this process added (its train.log stays
    complete; a handler left open would keep the file and leak a descriptor)."""
    for h in list(logger.handlers):
        if getattr(h, "_mmtune", False):
            logger.removeHandler(h)
            h.close()


def quiet_other_ranks(logger: logging.Logger) -> bool:
    """On ranks other than 0: warnings only, to the console, prefixed with the rank. True if so."""
    if launch.is_main_process():
        return False
    remove_own_handlers(logger)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"[rank {launch.rank()}] %(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler._mmtune = True
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    return True


def describe_peak_memory() -> str:
    """This process's peak memory in words: GPU (allocated by tensors, and reserved by torch's
    caching allocator, which is what nvidia-smi shows less the CUDA context) or host RSS."""
    import torch

    peak = peak_memory()
    if "peak_gpu_mem_gib" in peak:
        return (f"GPU {peak['peak_gpu_mem_gib']:.2f} GiB allocated, "
                f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved (this process)")
    return f"RSS {peak['peak_rss_gib']:.2f} GiB (this process)"


def read_samples(work_dir: Path) -> list[dict]:
    path = work_dir / "samples.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
