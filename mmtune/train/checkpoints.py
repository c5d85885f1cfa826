"""Pick the checkpoint a run resumes from (`--resume auto|PATH`); what a checkpoint holds is in mmtune.rundir."""

from __future__ import annotations

from pathlib import Path

from mmtune.errors import MmtuneError
from mmtune.rundir import is_complete_checkpoint, list_checkpoints


def resolve_resume(work_dir: Path, resume: str | None) -> str | None:
    """`auto` -> newest complete checkpoint in work_dir (None when there is none); a path -> validated."""
    if resume is None:
        return None
    if resume == "auto":
        for ckpt in reversed(list_checkpoints(work_dir)):
            if is_complete_checkpoint(ckpt):
                return str(ckpt)
        return None
    path = Path(resume)
    if not path.is_dir():
        raise MmtuneError(f"checkpoint {resume!r} does not exist")
    if not is_complete_checkpoint(path):
        raise MmtuneError(
            f"checkpoint {resume!r} is incomplete or corrupt (needs trainer_state.json, weights and optimizer.pt)",
            hint="use --resume auto to pick the newest complete checkpoint",
        )
    return str(path)
