"""Hand the C heap's free pages back to the operating system before training starts.

Reading and tokenizing the data, loading the model and the first sample chats free much more memory
than they keep, and glibc's malloc keeps freed blocks in its heap, resident. The training steps
reuse only part of it (their tensors have other sizes), so the process's peak RSS carries the rest.
`malloc_trim(0)` returns every whole free page, inside the heap too (glibc >= 2.8), at the cost of
one pass over the free lists. Measured on the peer-bench kit: peak RSS 20-50 MiB lower at the same
speed (BENCHMARKS.md). Doing it after every step would lower the peak more (~80 MiB) but costs ~12%
speed there (the steps fault the pages back in), so mmtune does it once.
"""

from __future__ import annotations

import ctypes
import logging
import sys

from transformers import TrainerCallback

log = logging.getLogger(__name__)


def release_free_heap() -> bool:
    """malloc_trim(0) where the C library has it (glibc); True when memory went back to the OS."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # e.g. musl has no malloc_trim
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))


class ReleaseHostMemoryCallback(TrainerCallback):
    """`release_free_heap` once, when training begins (after data, model, optimizer, sample chats)."""

    def on_train_begin(self, args, state, control, **kwargs):
        if release_free_heap():
            log.debug("returned the C heap's free pages to the OS before the first step")
