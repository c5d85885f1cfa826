"""MMBench-format TSV files -> `EvalItem`s (one multiple-choice question each, with its prompt).

Columns: `index`, `question`, `hint` (may be empty or "nan"), option columns `A`, `B`, ... (a row
uses the non-empty ones, so one file mixes 2- and 6-option questions), `answer` (absent in test
splits), `category`, optional `l2-category`, and `image` as base64; an `image` value shorter than
16 characters is the `index` of another row whose image it shares.

Read with the csv module rather than pandas on purpose: pandas turns option texts such as "None"
or "NA" into NaN, and an option named "None" is a real MMBench answer.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mmtune.data.choices import INSTRUCTION_EN, INSTRUCTION_ZH, build_prompt, is_chinese  # noqa: F401 (re-exported)
from mmtune.errors import DataError

IMAGE_REF_MAX = 16  # an `image` value shorter than this names the row whose image is shared
REQUIRED_COLUMNS = ("index", "question")
_MISSING = ("", "nan", "NaN", "NAN")


@dataclass
class EvalItem:
    """One multiple-choice question, ready for an answerer.

    `prompt` is the text to ask (hint, question, option lines, instruction) without any image
    placeholder: a vision answerer puts its placeholder(s) where its template wants them.
    `images` decodes the base64 image(s) to PIL on each access (not kept, so a whole benchmark
    does not sit decoded in memory).
    """

    index: int
    question: str
    options: dict[str, str]  # letter -> text, only the non-empty options, in letter order
    prompt: str
    hint: str | None = None
    answer: str | None = None  # the correct letter; None in a test split
    category: str | None = None
    l2_category: str | None = None
    image_data: list[str] = field(default_factory=list, repr=False)  # base64 strings
    row: dict[str, str] = field(default_factory=dict, repr=False)  # the original columns (minus image)
    where: str = ""  # "file:row N" for error messages

    @property
    def images(self) -> list:
        return [decode_image(data, f"{self.where}:image") for data in self.image_data]

    @property
    def is_chinese(self) -> bool:
        return is_chinese(f"{self.hint or ''} {self.question}")


@dataclass
class MMBenchTable:
    """A whole TSV: its columns (in file order) and one item per row."""

    path: Path
    columns: list[str]
    items: list[EvalItem]

    @property
    def has_answers(self) -> bool:
        return "answer" in self.columns

    @property
    def split(self) -> str:
        return "dev" if self.has_answers else "test"


def missing(value: str | None) -> bool:
    return value is None or value.strip() in _MISSING


def option_letters(columns: list[str]) -> list[str]:
    """The option columns present (A, B, ... in order, stopping at the first letter absent)."""
    letters = []
    for ch in string.ascii_uppercase:
        if ch not in columns:
            break
        letters.append(ch)
    return letters


def decode_image(data: str, where: str = ""):
    """A base64 image as an RGB PIL image; a DataError naming `where` when it is not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(data, validate=False)
        img = Image.open(io.BytesIO(raw))
        img.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        raise DataError(f"not a base64-encoded image ({type(e).__name__})", where=where or None) from None
    return img.convert("RGB")


def _parse_index(value: str, where: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"index {value!r} is not a number", where=f"{where}:index") from None
    if number != int(number):
        raise DataError(f"index {value!r} is not a whole number", where=f"{where}:index")
    return int(number)


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a file", where=str(path))
    csv.field_size_limit(sys.maxsize if sys.maxsize < 2**63 else 2**31 - 1)  # base64 images are long fields
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        try:
            columns = [c.strip() for c in next(reader)]
        except StopIteration:
            raise DataError("file is empty", where=str(path)) from None
        rows = []
        for lineno, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(columns):
                raise DataError(f"row has {len(values)} fields, the header has {len(columns)}",
                                where=f"{path}:line {lineno}", hint="MMBench files are tab-separated")
            rows.append(dict(zip(columns, values)))
    return columns, rows


def read_mmbench_tsv(path: str | Path) -> MMBenchTable:
    """Read and check a MMBench-format TSV (every problem is a DataError naming file:row:column)."""
    path = Path(path)
    columns, rows = _read_rows(path)
    absent = [c for c in REQUIRED_COLUMNS if c not in columns]
    letters = option_letters(columns)
    if absent:
        raise DataError(f"missing column(s) {', '.join(absent)}", where=str(path),
                        hint="an MMBench TSV has index, question, hint, A, B, ..., answer, category, image")
    if len(letters) < 2:
        raise DataError("needs option columns A and B at least", where=str(path))
    where_of = [f"{path}:row {i}" for i in range(len(rows))]
    indexes = [_parse_index(r["index"], w) for r, w in zip(rows, where_of)]
    seen: dict[int, int] = {}
    for i, idx in enumerate(indexes):
        if idx in seen:
            raise DataError(f"index {idx} also used by row {seen[idx]}", where=f"{where_of[i]}:index")
        seen[idx] = i
    images = _resolve_images(rows, indexes, where_of) if "image" in columns else [[] for _ in rows]
    items = [_item(r, idx, letters, img, w) for r, idx, img, w in zip(rows, indexes, images, where_of)]
    return MMBenchTable(path, columns, items)


def _resolve_images(rows: list[dict], indexes: list[int], where_of: list[str]) -> list[list[str]]:
    """Each row's base64 image, following short values to the row they name."""
    by_index = {idx: r.get("image", "") for idx, r in zip(indexes, rows)}
    out = []
    for r, w in zip(rows, where_of):
        value = r.get("image", "").strip()
        if missing(value):
            out.append([])
            continue
        if len(value) < IMAGE_REF_MAX:  # the index of the row holding the image
            target = by_index.get(_parse_index(value, f"{w}:image"))
            if target is None or len(target.strip()) < IMAGE_REF_MAX:
                raise DataError(f"image refers to row index {value}, which holds no image", where=f"{w}:image")
            value = target.strip()
        out.append([value])
    return out


def _item(row: dict[str, str], index: int, letters: list[str], images: list[str], where: str) -> EvalItem:
    question = row.get("question", "")
    if missing(question):
        raise DataError("empty question", where=f"{where}:question")
    options = {ch: row[ch].strip() for ch in letters if not missing(row.get(ch))}
    if len(options) < 2:
        raise DataError(f"{len(options)} non-empty option(s); a question needs at least 2", where=where)
    hint = None if missing(row.get("hint")) else row["hint"].strip()
    answer = None if missing(row.get("answer")) else row["answer"].strip().upper()
    if answer is not None and answer not in options:
        raise DataError(f"answer {answer!r} is not one of the options {', '.join(options)}", where=f"{where}:answer")
    category = None if missing(row.get("category")) else row["category"].strip()
    l2 = None if missing(row.get("l2-category")) else row["l2-category"].strip()
    original = {k: v for k, v in row.items() if k != "image"}
    return EvalItem(index=index, question=question.strip(), options=options, hint=hint, answer=answer,
                    category=category, l2_category=l2, image_data=images, row=original, where=where,
                    prompt=build_prompt(question, options, hint))
