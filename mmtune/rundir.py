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


def is_complete_checkpoint(path: str | Path) -> bool:
    """A checkpoint resume can use: trainer state, weights, optimizer state."""
    path = Path(path)
    optimizer = (path / "optimizer.pt").exists() or any(path.glob("global_step*"))
    return (path / "trainer_state.json").exists() and has_weights(path) and optimizer


def list_checkpoints(work_dir: str | Path) -> list[Path]:
    """The `checkpoint-N` directories of a work dir, oldest (lowest N) first."""
    found = []
    for p in Path(work_dir).glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]
