"""Generated training data, written in formats our readers load back."""

from __future__ import annotations

import json
from pathlib import Path

from mmtune.data.conversation import Conversation
from mmtune.data.formats import llava, openai
from mmtune.data.synth.self_cognition import make_self_cognition
from mmtune.errors import MmtuneError


def write_conversations(convs: list[Conversation], path: str | Path) -> Path:
    """Write `.jsonl` as OpenAI messages (one per line) or `.json` as a LLaVA/ShareGPT list."""
    path = Path(path)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(openai.to_record(c), ensure_ascii=False) + "\n" for c in convs)
    elif path.suffix == ".json":
        records = [llava.to_record(c, id=str(i)) for i, c in enumerate(convs)]
        text = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    else:
        raise MmtuneError(f"cannot write {path.name}: unknown extension {path.suffix or '(none)'!r}",
                          hint="use .jsonl (OpenAI messages) or .json (LLaVA/ShareGPT)")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path

__all__ = ["make_self_cognition", "write_conversations"]
