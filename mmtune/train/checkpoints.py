"""Pick the checkpoint a run resumes from (`--resume auto|PATH`) and check it fits the run; what a
checkpoint holds is in mmtune.rundir.

`auto` takes the newest checkpoint that is whole (rundir.checkpoint_problem) and names each newer
one it skipped and why; a path that is not whole is a one-line refusal. Resuming compares the
recipe and the data files with what the checkpoint recorded: a change (another lr, another data
file) would silently mix two runs, so it is refused, listing what differs, unless `resume_changed`.
Settings that only say how long to go on, how often to save and log, or how the same global batch
is computed (micro-batch and accumulation, devices, memory savers) may change freely.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mmtune.errors import MmtuneError
from mmtune.rundir import checkpoint_problem, list_checkpoints, read_manifest

log = logging.getLogger("mmtune.train")

# recipe keys a resume may change: how far to go; how often to save, log and sample; how the same
# global batch is laid out (compared as a whole) and which memory savers or devices compute it
FREE_TO_CHANGE = ("name", "work_dir", "train.max_steps", "train.epochs", "train.save_steps", "train.save_total_limit",
                  "train.logging_steps", "eval.", "train.micro_batch_size", "train.gradient_accumulation",
                  "train.device", "train.gradient_checkpointing", "train.chunked_loss", "train.fused_layers",
                  "data.num_proc")


def resolve_resume(work_dir: Path, resume: str | None) -> str | None:
    """`auto` -> newest whole checkpoint in work_dir (None when there is none); a path -> validated."""
    if resume is None:
        return None
    if resume == "auto":
        for ckpt in reversed(list_checkpoints(work_dir)):
            problem = checkpoint_problem(ckpt)
            if problem is None:
                return str(ckpt)
            log.warning("not resuming from %s: %s", ckpt.name, problem)
        return None
    problem = checkpoint_problem(resume)
    if problem is not None:
        raise MmtuneError(f"cannot resume from checkpoint {resume!r}: {problem}",
                          hint="use --resume auto to pick the newest whole checkpoint")
    return str(Path(resume))


def check_resume_fits(checkpoint: str, facts: dict, resume_changed: bool = False) -> None:
    """Refuse (or, with resume_changed, warn) when the recipe or the data differ from what the
    checkpoint recorded. Checkpoints from before manifests recorded them are resumed as they are."""
    recorded = read_manifest(checkpoint) or {}
    changes = []
    if "recipe" in recorded:
        old, new = flatten(recorded["recipe"]), flatten(facts["recipe"])
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key) and not key.startswith(FREE_TO_CHANGE):
                changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    if "global_batch" in recorded and recorded["global_batch"] != facts["global_batch"]:
        changes.append(f"global batch (micro_batch_size x gradient_accumulation x processes): "
                       f"{recorded['global_batch']} -> {facts['global_batch']}")
    for path, digest in (recorded.get("data_files") or {}).items():
        now = facts["data_files"].get(path)
        if now is None:
            changes.append(f"data file {path} is no longer in the recipe")
        elif now != digest:
            changes.append(f"data file {path} changed since the checkpoint")
    for path in facts["data_files"]:
        if "data_files" in recorded and path not in recorded["data_files"]:
            changes.append(f"data file {path} is new")
    if not changes:
        return
    shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    if resume_changed:
        log.warning("resuming %s with a changed recipe (--resume-changed): %s", checkpoint, shown)
        return
    raise MmtuneError(f"the run changed since {checkpoint} was saved: {shown}",
                      hint="resume with the recipe and data it was trained with, add --resume-changed to go on with "
                           "the changes, or start over with --overwrite")


def flatten(value, prefix: str = "") -> dict:
    """{"train.lr": 0.0002, "data.datasets[0].path": ...}: a recipe dict as dotted keys."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}
