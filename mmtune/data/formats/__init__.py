"""Read data files in any supported format into `Conversation`s.

    convs, errors = read_file("data.jsonl")                    # format detected, first error raised
    convs, errors = read_file("data.json", errors="collect")   # bad records skipped and returned

Every problem is a `DataError` located as "file:record N:field" (records count from 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmtune.data.conversation import Conversation, validate_conversation
from mmtune.data.formats import alpaca, llava, minicpm, openai  # noqa: F401  (registers the formats)
from mmtune.data.formats.base import FORMATS, field_error, register_format, type_name
from mmtune.errors import DataError, record_location

__all__ = ["FORMATS", "FORMAT_NAMES", "register_format", "load_records", "detect_format",
           "read_records", "read_file"]

FORMAT_NAMES: list[str] = sorted(FORMATS)
DETECT_SAMPLE = 50  # records inspected by detect_format


def load_records(path: str | Path) -> list[Any]:
    """The records of a JSON file (a list, or an object holding one list) or a JSONL file.

    Records are returned as parsed; one that is not an object is reported when it is read,
    so that `errors="collect"` can skip it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a file", where=str(path))
    text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM from Windows editors
    if not text.strip():
        raise DataError("file is empty", where=str(path))
    if path.suffix == ".jsonl":
        return _load_jsonl(text, path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("{") and _first_line_is_object(text):
            return _load_jsonl(text, path)  # JSONL saved with a .json name
        raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", where=f"{path}:line {e.lineno}") from None
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if any(fmt.detect(data) for fmt in FORMATS.values()):
            return [data]  # a file holding a single record
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]  # {"data": [...]}
    raise DataError(f"top level is {type_name(data)}, expected a list of records or an object holding one list",
                    where=str(path))


def _first_line_is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text.lstrip().splitlines()[0]), dict)
    except json.JSONDecodeError:
        return False


def _load_jsonl(text: str, path: Path) -> list[Any]:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", where=f"{path}:line {lineno}",
                            hint="a JSONL file holds one JSON object per line") from None
    return records


def detect_format(records: list[Any], path: str | Path) -> str:
    """The one format matching the first records; ambiguity, no match or a mix is a DataError."""
    hint = "pass the format explicitly (--format " + "|".join(FORMAT_NAMES) + ")"
    if not records:
        raise DataError("file holds no records", where=str(path))
    seen: dict[str, int] = {}  # format -> first record index that matched it
    for i, record in enumerate(records[:DETECT_SAMPLE]):
        if not isinstance(record, dict):
            continue  # reported when read
        matches = [name for name, fmt in FORMATS.items() if fmt.detect(record)]
        if len(matches) > 1:
            raise DataError(f"record matches several formats ({', '.join(matches)})",
                            where=record_location(str(path), i), hint=hint)
        for name in matches:
            seen.setdefault(name, i)
    if not seen:
        keys = next((sorted(r) for r in records[:DETECT_SAMPLE] if isinstance(r, dict)), [])
        raise DataError(f"records match no known format (keys: {', '.join(keys) or 'none'})",
                        where=str(path), hint=f"supported formats: {', '.join(FORMAT_NAMES)}")
    if len(seen) > 1:
        (a, i), (b, j) = list(seen.items())[:2]
        raise DataError(f"file mixes formats: record {i} is {a}, record {j} is {b}",
                        where=str(path), hint="keep one format per file")
    return next(iter(seen))


def read_records(records: list[Any], path: str | Path, format: str = "auto", *,
                 errors: str = "raise") -> tuple[list[Conversation], list[DataError]]:
    """Read and validate loaded records. With errors="collect", bad records are skipped and returned."""
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
    if format == "auto":
        format = detect_format(records, path)
    if format not in FORMATS:
        raise DataError(f"unknown data format {format!r}", hint=f"choose from auto, {', '.join(FORMAT_NAMES)}")
    reader = FORMATS[format]
    convs: list[Conversation] = []
    problems: list[DataError] = []
    for i, record in enumerate(records):
        where = record_location(str(path), i)
        found = _read_one(reader, record, where)
        if isinstance(found, Conversation):
            convs.append(found)
            continue
        if errors == "raise":
            raise found[0]
        problems.extend(found)
    return convs, problems


def _read_one(reader: type, record: Any, where: str) -> Conversation | list[DataError]:
    """One record as a validated Conversation, or the problems that stop it from being one."""
    if not isinstance(record, dict):
        return [DataError(f"record is {type_name(record)}, expected an object", where=where)]
    try:
        refuse_video(record, where)
        conv = reader.read(record, where)
    except DataError as e:
        return [e]
    conv.source = where
    problems = validate_conversation(conv)
    if problems:
        return [field_error(where, field, reason) for field, reason in problems]
    return conv


VIDEO_KEYS = ("video", "videos")
VIDEO_PARTS = ("video", "video_url")
NO_VIDEO = "video records are not supported yet (images only)"
NO_VIDEO_HINT = "leave video records out of the data, or give a video's frames as images"


def refuse_video(record: dict, where: str) -> None:
    """Video (a `video(s)` key, a video content part, a `<video>` placeholder) is not supported yet:
    a clear error rather than a record read as if the video were not there."""
    for key in VIDEO_KEYS:
        if record.get(key):
            raise field_error(where, key, NO_VIDEO, hint=NO_VIDEO_HINT)
    for key in ("conversations", "messages"):
        turns = record.get(key)
        for i, turn in enumerate(turns if isinstance(turns, list) else []):
            field = "value" if isinstance(turn, dict) and "value" in turn else "content"
            content = turn.get(field) if isinstance(turn, dict) else None
            for part in content if isinstance(content, list) else [content]:
                if (isinstance(part, dict) and part.get("type") in VIDEO_PARTS) or \
                        (isinstance(part, str) and "<video>" in part):
                    raise field_error(where, f"{key}[{i}].{field}", NO_VIDEO, hint=NO_VIDEO_HINT)


def read_file(path: str | Path, format: str = "auto", *,
              errors: str = "raise") -> tuple[list[Conversation], list[DataError]]:
    """Conversations of a data file, and (with errors="collect") the DataErrors of skipped records."""
    return read_records(load_records(path), path, format, errors=errors)
