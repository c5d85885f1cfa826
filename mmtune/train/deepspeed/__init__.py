"""DeepSpeed ZeRO configs shipped with mmtune; "auto" fields are filled by the Trainer from the recipe."""

from __future__ import annotations

from pathlib import Path

from mmtune.errors import MmtuneError

HERE = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.json"))


def resolve_deepspeed(name_or_file: str) -> str:
    """Path of a shipped config (zero1, zero2, zero3, ...) or a user JSON file."""
    path = Path(name_or_file)
    if path.suffix == ".json" and path.is_file():
        return str(path)
    name = name_or_file.removeprefix("deepspeed_")
    shipped = HERE / f"{name}.json"
    if shipped.is_file():
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            raise MmtuneError("--deepspeed needs the deepspeed package", hint="pip install deepspeed") from None
        return str(shipped)
    raise MmtuneError(f"unknown DeepSpeed config {name_or_file!r}", hint=f"use one of {', '.join(available())} or a JSON file")
