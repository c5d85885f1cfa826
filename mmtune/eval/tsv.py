"""Multiple-choice benchmark TSVs (MMBench, CCBench, SEED-Bench, AI2D, ScienceQA, MMStar...) -> `EvalItem`s.

Columns: `index`, `question`, optional `hint`, option columns `A`, `B`, ... (a row uses the ones
that are not missing, so one file mixes 2- and 6-option questions), `answer` (absent in test
splits), optional `category`, `l2-category`, `g_index` (the rotation group, CircularEval) and
`image` (base64, or the index of the row holding it). Read as VLMEvalKit reads them (table.py):
with `na="pandas"` an option written "None" or "NA" is missing, as in VLMEvalKit.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

from mmtune.data.choices import INSTRUCTION_EN, INSTRUCTION_ZH, build_prompt, has_chinese  # noqa: F401 (re-exported)
from mmtune.errors import DataError
from mmtune.eval.table import Table, decode_image, parse_int, read_table, require_columns, resolve_images, row_key

REQUIRED_COLUMNS = ("index", "question")
COLUMNS_HINT = "a multiple-choice TSV has index, question, hint, A, B, ..., answer, category, image"


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
    options: dict[str, str]  # letter -> text, only the options present, in letter order
    prompt: str
    hint: str | None = None
    answer: str | None = None  # the correct letter; None in a test split
    category: str | None = None
    l2_category: str | None = None
    g_index: int | None = None  # explicit rotation group (`g_index` column)
    image_data: list[str] = field(default_factory=list, repr=False)  # base64 strings
    row: dict[str, str | None] = field(default_factory=dict, repr=False)  # the original columns (minus image)
    where: str = ""  # "file:row N" for error messages

    @property
    def images(self) -> list:
        return [decode_image(data, f"{self.where}:image") for data in self.image_data]

    @property
    def is_chinese(self) -> bool:
        return self.prompt.endswith(INSTRUCTION_ZH)


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


def option_letters(columns: list[str]) -> list[str]:
    """The option columns present (A, B, ... in order, stopping at the first letter absent)."""
    letters = []
    for ch in string.ascii_uppercase:
        if ch not in columns:
            break
        letters.append(ch)
    return letters


def read_mmbench_tsv(path: str | Path, na: str = "pandas") -> MMBenchTable:
    """Read and check a multiple-choice TSV (every problem is a DataError naming file:row:column)."""
    table = read_table(path, na=na)
    require_columns(table, REQUIRED_COLUMNS, COLUMNS_HINT)
    letters = option_letters(table.columns)
    if len(letters) < 2:
        raise DataError("needs option columns A and B at least", where=str(table.path), hint=COLUMNS_HINT)
    indexes = [parse_int(r["index"], table.where(i, "index")) for i, r in enumerate(table.rows)]
    seen: dict[int, int] = {}
    for i, idx in enumerate(indexes):
        if idx in seen:
            raise DataError(f"index {idx} also used by {table.where(seen[idx])}", where=table.where(i, "index"))
        seen[idx] = i
    images = resolve_images(table, [row_key(r["index"]) for r in table.rows])
    items = [_item(table, i, idx, letters, img) for i, (idx, img) in enumerate(zip(indexes, images))]
    return MMBenchTable(table.path, table.columns, items)


def _item(table: Table, i: int, index: int, letters: list[str], images: list[str]) -> EvalItem:
    row = table.rows[i]
    question = row.get("question")
    if question is None:
        raise DataError("empty question", where=table.where(i, "question"))
    options = {ch: row[ch] for ch in letters if row.get(ch) is not None}
    if not options:
        raise DataError("no option present (columns A, B, ... all missing)", where=table.where(i))
    answer = row.get("answer")
    if answer is not None and answer not in options:
        raise DataError(f"answer {answer!r} is not one of the options {', '.join(options)}",
                        where=table.where(i, "answer"), hint="the answer is the upper-case letter of a present option")
    g_index = row.get("g_index")
    hint = row.get("hint")
    return EvalItem(index=index, question=question, options=options, hint=hint, answer=answer,
                    category=row.get("category"), l2_category=row.get("l2-category"),
                    g_index=None if g_index is None else parse_int(g_index, table.where(i, "g_index"), "g_index"),
                    image_data=images, row={k: v for k, v in row.items() if k != "image"}, where=table.where(i),
                    prompt=build_prompt(question, options, hint))
