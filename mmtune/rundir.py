"""Facts about the directories training and export write: what a checkpoint, an adapter dir or an
exported model holds. The ground floor: train writes these directories, export and infer read them,
and none of them needs another to know what is inside.

    checkpoint-N/   Trainer checkpoint: weights (adapter or full model, or DeepSpeed `global_stepN/`
                    shards), trainer_state.json, optimizer state, mmtune_meta.json
    final/          the run's result: weights, tokenizer (or processor), mmtune_meta.json
    exported dirs   plain Hugging Face directories, with mmtune_meta.json (what training recorded)
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

META_FILE = "mmtune_meta.json"  # what export, chat and serve need to know about the run
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "projector.safetensors")


def write_meta(directory: str | Path, meta: dict) -> None:
    (Path(directory) / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False))


def read_meta(directory: str | Path) -> dict | None:
    path = Path(directory) / META_FILE
    return json.loads(path.read_text()) if path.exists() else None


def is_adapter_dir(path: str | Path) -> bool:
    """A peft adapter directory (LoRA / QLoRA output)."""
    return (Path(path) / "adapter_config.json").exists()


def has_tokenizer(path: str | Path) -> bool:
    return (Path(path) / "tokenizer_config.json").exists()


def has_weights(path: str | Path) -> bool:
    """Model, adapter or projector weights, consolidated or as DeepSpeed shards."""
    path = Path(path)
    return any((path / f).exists() for f in WEIGHT_FILES) or any(path.glob("global_step*"))


def is_unconsolidated_zero_checkpoint(path: str | Path) -> bool:
    """A DeepSpeed ZeRO checkpoint whose weights exist only as per-rank `global_stepN/` shards."""
    path = Path(path)
    return not any((path / f).exists() for f in WEIGHT_FILES) and any(path.glob("global_step*"))


MANIFEST_FILE = "mmtune_manifest.json"  # written last into a checkpoint: every file and its size


def write_manifest(checkpoint: str | Path, extra: dict | None = None) -> None:
    """Record every file of a just-saved checkpoint with its size (atomically, as the last write), so a
    file truncated or lost later is found before resuming from it."""
    checkpoint = Path(checkpoint)
    files = {p.relative_to(checkpoint).as_posix(): p.stat().st_size
             for p in sorted(checkpoint.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}
    tmp = checkpoint / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps({"files": files, **(extra or {})}, indent=1))
    tmp.replace(checkpoint / MANIFEST_FILE)


def read_manifest(checkpoint: str | Path) -> dict | None:
    path = Path(checkpoint) / MANIFEST_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        return {"files": None}  # unreadable: checkpoint_problem says so


def checkpoint_problem(path: str | Path) -> str | None:
    """Why resuming from `path` would fail or be inexact, or None when it is whole: every file its
    manifest lists, at its size; trainer state that reads; weights whole; the optimizer, scheduler
    and RNG states an exact resume needs."""
    path = Path(path)
    if not path.is_dir():
        return "it does not exist"
    manifest = read_manifest(path)
    if manifest is not None:
        if not isinstance(manifest.get("files"), dict):
            return f"its {MANIFEST_FILE} cannot be read"
        for name, size in manifest["files"].items():
            f = path / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != size:
                return f"{name} is {f.stat().st_size} bytes, {size} when it was saved (truncated or replaced)"
    try:
        json.loads((path / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "trainer_state.json is missing"
    except (OSError, ValueError):
        return "trainer_state.json cannot be read"
    if not has_weights(path):
        return "it holds no model or adapter weights"
    for weights in sorted(path.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            return f"{weights.name} {problem}"
    if not ((path / "optimizer.pt").exists() or any(path.glob("global_step*"))):
        return "optimizer.pt is missing (the optimizer state would start over)"
    if not (path / "scheduler.pt").exists():
        return "scheduler.pt is missing (the learning-rate schedule would start over)"
    if not any(path.glob("rng_state*.pth")):
        return "rng_state.pth is missing (data order and dropout would differ from an unbroken run)"
    return None


def missing_shards(directory: str | Path) -> list[tuple[str, str]]:
    """(index file name, shard name) for each shard a `*.safetensors.index.json` in `directory` names
    that is not there."""
    directory = Path(directory)
    missing = []
    for index in sorted(directory.glob("*.safetensors.index.json")):
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            if not (directory / shard).is_file():
                missing.append((index.name, shard))
    return missing


def safetensors_problem(path: str | Path) -> str | None:
    """Why a safetensors file is not whole ("is truncated: ..."), or None: its header reads and the
    file is as long as the header says (no tensor is read)."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError) as e:
        return f"is not a readable safetensors file ({e})"
    if 8 + header_len + end != size:
        return f"is truncated: {size} bytes, its header describes {8 + header_len + end}"
    return None


def list_checkpoints(work_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` directories of a work dir, oldest (lowest N) first."""
    found = []
    for p in Path(work_dir).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]
