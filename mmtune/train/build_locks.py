"""Stale build locks of torch C++ extensions, found before a DeepSpeed run waits on them forever.

DeepSpeed compiles some of its ops on first use (the CPU Adam of `*_offload` configs, the
shared-memory collectives on CPU) through `torch.utils.cpp_extension`, which guards each build
directory with an empty `lock` file and deletes it when the build ends. A build that is killed
(Ctrl-C at the wrong moment, a job time limit, an out-of-memory kill) leaves the file behind, and
every later run then waits on it with no message and no end. A build takes about a minute even on
two cores, so a lock much older than that has no live owner: it is removed, saying so; a young one
is only reported, with the path to delete if the run does not move on.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("mmtune.train")

STALE_AFTER_S = 600  # ten times the slowest build measured here (cpu_adam, 47 s on 2 cores)


def extensions_root() -> Path:
    """Where torch builds extensions: TORCH_EXTENSIONS_DIR, else its default cache folder."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def build_locks(root: Path) -> list[Path]:
    """The `lock` files of every extension build directory under root (root/<name>/lock, or
    root/<pyXY_device>/<name>/lock when TORCH_EXTENSIONS_DIR is unset)."""
    if not root.is_dir():
        return []
    return sorted(p for p in [*root.glob("*/lock"), *root.glob("*/*/lock")] if p.is_file())


def clear_stale_build_locks(root: Path | None = None, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove build locks older than stale_after_s and warn about younger ones; the removed paths."""
    root = extensions_root() if root is None else root
    removed = []
    for lock in build_locks(root):
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:  # its build just finished
            continue
        if age >= stale_after_s:
            lock.unlink(missing_ok=True)
            removed.append(lock)
            log.warning("removed %s: a torch extension build lock %.0f min old, left by a build that was killed "
                        "(a DeepSpeed op would otherwise wait on it forever)", lock, age / 60)
        else:
            log.warning("a torch extension build holds %s (%.0f s old); if this run stops moving while DeepSpeed "
                        "builds its ops, no build is running: delete that file and start again", lock, age)
    return removed
