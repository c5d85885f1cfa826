"""Find and validate Trainer checkpoints (`checkpoint-N` directories) for resume and export."""

from __future__ import annotations

import re
from pathlib import Path

from mmtune.errors import MmtuneError

WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "projector.safetensors")


def has_weights(path: Path) -> bool:
    return any((path / f).exists() for f in WEIGHT_FILES) or any(path.glob("global_step*"))


def is_complete(path: Path) -> bool:
    """A checkpoint resume can use: trainer state, weights, optimizer state."""
    optimizer = (path / "optimizer.pt").exists() or any(path.glob("global_step*"))
    return (path / "trainer_state.json").exists() and has_weights(path) and optimizer


def list_checkpoints(work_dir: Path) -> list[Path]:
    found = []
    for p in Path(work_dir).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def resolve_resume(work_dir: Path, resume: str | None) -> str | None:
    """`auto` -> newest complete checkpoint in work_dir (None when there is none); a path -> validated."""
    if resume is None:
        return None
    if resume == "auto":
        for ckpt in reversed(list_checkpoints(work_dir)):
            if is_complete(ckpt):
                return str(ckpt)
        return None
    path = Path(resume)
    if not path.is_dir():
        raise MmtuneError(f"checkpoint {resume!r} does not exist")
    if not is_complete(path):
        raise MmtuneError(
            f"checkpoint {resume!r} is incomplete or corrupt (needs trainer_state.json, weights and optimizer.pt)",
            hint="use --resume auto to pick the newest complete checkpoint",
        )
    return str(path)
