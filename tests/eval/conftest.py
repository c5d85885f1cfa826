"""Helpers for the eval tests: small MMBench-format TSVs written by hand (fixture `bench`)."""

from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

import pytest
from PIL import Image

COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]


class Bench:
    columns = COLUMNS

    def __init__(self, folder: Path):
        self.folder = folder

    @staticmethod
    def png(colour=(255, 0, 0), size=(8, 6)) -> str:
        buf = io.BytesIO()
        Image.new("RGB", size, colour).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode("ascii")

    def row(self, index: int, question: str, options: list[str], answer: str | None = "A", category: str = "cat",
            l2: str = "l2", hint: str = "", image: str | None = None) -> dict:
        r = {"index": index, "question": question, "hint": hint, "answer": answer or "", "category": category,
             "l2-category": l2, "image": image if image is not None else self.png()}
        r.update(zip("ABCDEFGH", options))
        return r

    def write(self, rows: list[dict], columns: list[str] | None = None, name: str = "bench.tsv") -> Path:
        path = self.folder / name
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(columns or COLUMNS)
            for r in rows:
                writer.writerow([r.get(c, "") for c in columns or COLUMNS])
        return path


@pytest.fixture
def bench(tmp_path) -> Bench:
    return Bench(tmp_path)
