"""Benchmark TSV files (VLMEvalKit's layout) read as VLMEvalKit reads them: `pandas.read_csv(sep="\t")`.

Cells come back as the text VLMEvalKit would put in a prompt (`f"{value}"`: an integer column's 3
stays "3", a float column's 3 reads "3.0") or None where pandas sees a missing value. With
`na="pandas"` (the default, as VLMEvalKit) the strings "", "None", "NA", "N/A", "null", "nan", ...
are missing, so an option called "None" is not offered; `na="literal"` keeps every non-blank text.

Images: an `image` cell is base64, or (64 characters or fewer) the `index` of the row that holds
it; references are followed through chains. Every problem is a DataError naming file:row:column.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path

from mmtune.errors import DataError

IMAGE_REF_MAX = 64  # VLMEvalKit: an `image` value of at most 64 characters names another row
NA_MODES = ("pandas", "literal")


@dataclass
class Table:
    path: Path
    columns: list[str]
    rows: list[dict[str, str | None]]  # column -> text, None when missing

    def where(self, i: int, column: str | None = None) -> str:
        # the line in the file (the header is line 1; a quoted field spanning lines shifts this)
        return f"{self.path}:line {i + 2}" + (f":{column}" if column else "")


def _text(value) -> str | None:
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return f"{value}"


def read_table(path: str | Path, na: str = "pandas") -> Table:
    """Read a tab-separated benchmark file; a DataError (one line, file and row) when it cannot be."""
    import pandas as pd

    if na not in NA_MODES:
        raise ValueError(f"na must be one of {NA_MODES}")
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a file", where=str(path))
    options = {} if na == "pandas" else {"dtype": str, "keep_default_na": False}
    try:
        frame = pd.read_csv(path, sep="\t", **options)
    except pd.errors.EmptyDataError:
        raise DataError("file is empty", where=str(path)) from None
    except pd.errors.ParserError as e:
        raise DataError(f"not a valid TSV: {str(e).strip().splitlines()[-1]}", where=str(path),
                        hint="benchmark files are tab-separated with one header line") from None
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text (byte {e.start})", where=str(path)) from None
    columns = [str(c) for c in frame.columns]
    rows = []
    for record in frame.itertuples(index=False, name=None):
        row = {c: _text(v) for c, v in zip(columns, record)}
        if na == "literal":
            row = {c: (None if v is None or not v.strip() else v) for c, v in row.items()}
        rows.append(row)
    return Table(path, columns, rows)


def require_columns(table: Table, needed: tuple[str, ...], hint: str) -> None:
    absent = [c for c in needed if c not in table.columns]
    if absent:
        raise DataError(f"missing column(s) {', '.join(absent)}", where=str(table.path), hint=hint)


def parse_int(value: str | None, where: str, what: str = "index") -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{what} {value!r} is not a number", where=where) from None
    if number != int(number):
        raise DataError(f"{what} {value!r} is not a whole number", where=where)
    return int(number)


def resolve_images(table: Table, keys: list[str]) -> list[list[str]]:
    """Each row's base64 image(s): a short `image` value names the row (by its `index` text, `keys`)
    whose image it shares, followed through chains; a row without an image gets []."""
    if "image" not in table.columns:
        return [[] for _ in table.rows]
    by_key = {key: row.get("image") or "" for key, row in zip(keys, table.rows)}
    out = []
    for i, (key, row) in enumerate(zip(keys, table.rows)):
        value = (row.get("image") or "").strip()
        seen = [key]
        while 0 < len(value) <= IMAGE_REF_MAX:
            target = _normal_key(value)
            if target not in by_key:
                raise DataError(f"image refers to row index {value}, which is not in the file",
                                where=table.where(i, "image"))
            if target in seen:
                raise DataError(f"image references loop: {' -> '.join(seen + [target])}", where=table.where(i, "image"))
            seen.append(target)
            value = by_key[target].strip()
        out.append([value] if value else [])
    return out


def _normal_key(value: str) -> str:
    """"12", "12.0" name the row with index 12."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number == int(number) else value


def row_key(value: str | None) -> str:
    return _normal_key(value or "")


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
