"""Helpers for data tests: fixture files and writing small record files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

# One good record per format, for files that mix a good record with a bad one (detection needs one).
GOOD = {
    "llava": {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
    "openai": {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
    "alpaca": {"instruction": "Hi", "output": "Hello."},
    "minicpm": {"conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]},
}


@pytest.fixture
def good() -> dict:
    return json.loads(json.dumps(GOOD))  # a deep copy: tests may edit it


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def write_records(tmp_path):
    """write_records(records, name="data.json") -> path; .jsonl names get one record per line."""

    def write(records, name: str = "data.json") -> Path:
        path = tmp_path / name
        if name.endswith(".jsonl"):
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        else:
            path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        return path

    return write
