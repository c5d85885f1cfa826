"""One run per work dir: a second `mmtune train` cannot write into a run that is going on, and a
finished or crashed run's checkpoints and `final/` are never overwritten by accident.

A work dir holding checkpoints or `final/` is refused unless the run continues it (`--resume`) or
starts over (`--overwrite`, which deletes the old run's checkpoints, final model and logs first).
A work dir with only the logs of a run that stopped before its first checkpoint (bad data, a typo in
the recipe) is reused as it is: that is the fix-and-rerun loop. While a run trains, global rank 0
holds an exclusive lock on `WORK_DIR/.mmtune.lock`; the other ranks trust it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from mmtune.errors import MmtuneError

LOCK_FILE = ".mmtune.lock"
RUN_FILES = ("config.yaml", "train.log", "loss.json", "loss.png", "samples.jsonl", "eval.jsonl")


def previous_run(work_dir: Path) -> list[str]:
    """What of an earlier run the work dir holds that a new run would overwrite: checkpoints, final/."""
    if not work_dir.is_dir():
        return []
    found = sorted((p.name for p in work_dir.glob("checkpoint-*") if p.is_dir()),
                   key=lambda n: int(n.split("-")[1]) if n.split("-")[1].isdigit() else -1)
    if (work_dir / "final").exists():
        found.append("final/")
    return found


def clear_previous_run(work_dir: Path) -> None:
    """Delete the earlier run's checkpoints, final model and logs; anything else in the dir stays."""
    for path in [*work_dir.glob("checkpoint-*"), work_dir / "final", *(work_dir / n for n in RUN_FILES)]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


@contextmanager
def claim_work_dir(work_dir: Path, *, resume: str | None, overwrite: bool, is_main: bool = True):
    """Hold the work dir for one run (see the module doc). Non-main ranks only wait inside it."""
    if not is_main:
        yield
        return
    if resume and overwrite:
        raise MmtuneError("--resume and --overwrite contradict each other", hint="continue a run or start over, not both")
    work_dir.mkdir(parents=True, exist_ok=True)
    lock = open(work_dir / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise MmtuneError(f"work dir {work_dir} is in use by a running `mmtune train` (pid {holder})",
                              hint="wait for it to finish, or give this run its own --work-dir") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        found = previous_run(work_dir)
        if found and overwrite:
            clear_previous_run(work_dir)
        elif found and not resume:
            shown = ", ".join(found[:3] + (["..."] if len(found) > 3 else []))
            raise MmtuneError(f"work dir {work_dir} already holds a run ({shown})",
                              hint="continue it with --resume auto, start over with --overwrite (deletes its "
                                   "checkpoints and final/), or pass another --work-dir")
        yield
    finally:
        lock.close()  # releases the lock
