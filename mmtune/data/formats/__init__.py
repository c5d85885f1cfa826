"""Read data files in any supported format into `Conversation`s.

    convs, errors = read_file("data.jsonl")                    # format detected, first error raised
    convs, errors = read_file("data.json", errors="collect")   # bad records skipped and returned

Every problem is a `DataError` located as "file:record N:field" (records count from 0).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mmtune.data.conversation import IMAGE_PLACEHOLDER, Conversation, validate_conversation
from mmtune.data.formats import alpaca, llava, minicpm, msagent, openai  # noqa: F401  (registers the formats)
from mmtune.data.formats.base import FORMATS, field_error, register_format, type_name
from mmtune.errors import DataError, record_location

__all__ = ["FORMATS", "FORMAT_NAMES", "register_format", "load_records", "detect_format",
           "read_records", "read_file", "unused_keys", "describe_unused"]

FORMAT_NAMES: list[str] = sorted(FORMATS)
DETECT_SAMPLE = 50  # records inspected by detect_format


def load_records(path: str | Path) -> list[Any]:
    """The records of a JSON file (a list, or an object holding one list) or a JSONL file.

    Records are returned as parsed; one that is not an object is reported when it is read,
    so that `errors="collect"` can skip it. A `.jsonl` file may also hold one JSON list (a JSON
    file under the other name) or a list of records on some lines; UTF-16/32 files with a byte-order
    mark are read, any other text that is not UTF-8 is an error naming its line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found" if not path.exists() else "not a file", where=str(path))
    text = decode_text(path.read_bytes(), path)
    if not text.strip():
        raise DataError("file is empty", where=str(path))
    if path.suffix == ".jsonl" and not text.lstrip().startswith("["):
        return _load_jsonl(text, path)
    try:
        data = _parse(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith(("{", "[")) and _first_line_parses(text):
            return _load_jsonl(text, path)  # JSONL saved with a .json name, or lists on lines
        raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", where=f"{path}:line {e.lineno}") from None
    except ValueError as e:  # too deep or a number too long: _parse says which
        raise DataError(str(e), where=str(path)) from None
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


BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def decode_text(data: bytes, path: Path) -> str:
    """The file's text: UTF-8 (a BOM from Windows editors tolerated), or UTF-16/32 with a BOM."""
    for bom, codec in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                break  # a BOM-like start that is not: report as not UTF-8 below
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"not UTF-8 text: byte 0x{data[e.start]:02X} at column {column} cannot be decoded",
                        where=f"{path}:line {line}",
                        hint="save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 IN > OUT`)") from None


def _parse(line: str) -> Any:
    """json.loads, with Python's limits (nesting depth, 4300-digit integers) as readable ValueErrors."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # int() digit limit
        raise ValueError(f"a number in the JSON is too long to read ({e})") from None


def _first_line_parses(text: str) -> bool:
    try:
        return isinstance(_parse(text.lstrip().split("\n", 1)[0]), (dict, list))
    except ValueError:
        return False


def _load_jsonl(text: str, path: Path) -> list[Any]:
    records = []
    # Lines end at "\n" only: JSON strings may hold U+2028, U+2029 or U+0085 raw, which splitlines() cuts at.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = _parse(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg} (column {e.colno})", where=f"{path}:line {lineno}",
                            hint="a JSONL file holds one JSON object per line") from None
        except ValueError as e:
            raise DataError(str(e), where=f"{path}:line {lineno}") from None
        if isinstance(value, list):
            records.extend(value)  # a list of records on one line
        else:
            records.append(value)
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
        refuse_unsupported(record, where, tools=getattr(reader, "reads_tools", False))
        conv = reader.read(record, where)
        check_text(conv, where)
    except DataError as e:
        return [e]
    conv.source = where
    problems = validate_conversation(conv)
    if problems:
        return [field_error(where, in_record_terms(field, conv, reader), reason) for field, reason in problems]
    if conv.has_tools:
        from mmtune.data.tool_checks import tool_problems

        problems = tool_problems(conv)  # fields already in the record's terms
        if problems:
            return [field_error(where, field, reason) for field, reason in problems]
    return conv


MESSAGE_FIELD = re.compile(r"^messages\[(\d+)\]\.(role|content)$")


def in_record_terms(field: str, conv: Conversation, reader: type) -> str:
    """A field of the internal conversation ("messages[2].role") named as the record names it
    ("conversations[2].from" for ShareGPT, "output" for Alpaca)."""
    match = MESSAGE_FIELD.match(field)
    if match:
        origin = conv.messages[int(match.group(1))].origin
        return origin[match.group(2)] if origin else field
    if field == "messages" and reader.turns:
        return reader.turns
    return field


MEDIA_KEYS = {"video": "video", "videos": "video", "audio": "audio", "audios": "audio"}
MEDIA_PARTS = {"video": "video", "video_url": "video", "audio": "audio", "audio_url": "audio", "input_audio": "audio"}
MEDIA_MARKS = {"<video>": "video", "<audio>": "audio"}
NO_MEDIA_HINT = {"video": "leave video records out of the data, or give a video's frames as images",
                 "audio": "leave audio records out of the data"}
TOOL_ROLES = ("function_call", "observation", "tool", "function", "ipython")
PREFERENCE_KEYS = ("chosen", "rejected", "kto_tag")


def _present(value: Any) -> bool:
    """A key's value says something (not null, empty, or an empty JSON list written as a string)."""
    if isinstance(value, str):
        return value.strip() not in ("", "[]", "{}")
    return value is not None and value != [] and value != {}


def refuse_unsupported(record: dict, where: str, tools: bool = False) -> None:
    """Data SFT cannot train right is refused by name, never read as if that part were not there:
    video and audio (a key, a content part or a `<video>`/`<audio>` mark), preference pairs
    (chosen/rejected) and KTO labels, and (for formats that do not read them, `tools` False) tool
    definitions and tool-call turns."""
    for key, kind in MEDIA_KEYS.items():
        if _present(record.get(key)):
            raise field_error(where, key, f"{kind} records are not supported (images only)",
                              hint=NO_MEDIA_HINT[kind])
    if "chosen" in record or "rejected" in record:
        key = "chosen" if "chosen" in record else "rejected"
        raise field_error(where, key, "preference data (chosen/rejected) is not supported by SFT",
                          hint="for SFT, make the chosen answer the last assistant turn and drop 'rejected'")
    if "kto_tag" in record or isinstance(record.get("label"), bool):
        key = "kto_tag" if "kto_tag" in record else "label"
        raise field_error(where, key, "preference data (a KTO label) is not supported by SFT",
                          hint="for SFT, keep only the records labelled good and drop the label")
    if _present(record.get("tools")) and not tools:
        raise field_error(where, "tools", "tool definitions are not read in this format",
                          hint="write tool-call data as OpenAI messages or ShareGPT (function_call / observation): "
                               "without the tools in the prompt the model would learn calls to tools it never sees")
    for key in ("conversations", "messages"):
        turns = record.get(key)
        for i, turn in enumerate(turns if isinstance(turns, list) else []):
            if isinstance(turn, dict):
                _refuse_unsupported_turn(turn, where, f"{key}[{i}]", tools)


def _refuse_unsupported_turn(turn: dict, where: str, at: str, tools: bool = False) -> None:
    role_key = "from" if "from" in turn else "role"
    if not tools and (turn.get(role_key) in TOOL_ROLES or _present(turn.get("tool_calls"))):
        field = f"{at}.tool_calls" if _present(turn.get("tool_calls")) else f"{at}.{role_key}"
        raise field_error(where, field, "tool-call turns are not read in this format",
                          hint="write tool-call data as OpenAI messages or ShareGPT (function_call / observation)")
    content_key = "value" if "value" in turn else "content"
    content = turn.get(content_key)
    for part in content if isinstance(content, list) else [content]:
        kind = None
        if isinstance(part, dict):
            kind = MEDIA_PARTS.get(part.get("type"))
        elif isinstance(part, str):
            kind = next((k for mark, k in MEDIA_MARKS.items() if mark in part), None)
        if kind:
            raise field_error(where, f"{at}.{content_key}", f"{kind} records are not supported (images only)",
                              hint=NO_MEDIA_HINT[kind])


EXPANDED_IMAGE_TOKENS = ("<IMG_CONTEXT>",)


def check_text(conv: Conversation, where: str) -> None:
    """Text a tokenizer would choke on or train wrongly: a lone surrogate (JSON allows "\\ud83d" alone;
    UTF-8 cannot encode it), and image tokens already expanded as XTuner's InternVL data writes them
    (`<img><IMG_CONTEXT>...</img>`), which read as text would be trained on as words with no image behind."""
    for i, m in enumerate(conv.messages):
        at = m.origin["content"] if m.origin else f"messages[{i}].content"
        if not m.content.isascii():
            try:
                m.content.encode("utf-8")
            except UnicodeEncodeError as e:
                raise field_error(where, at, f"text holds a lone surrogate U+{ord(m.content[e.start]):04X} at "
                                             f"character {e.start} (half of a character, not valid Unicode)",
                                  hint="fix or drop the record; an export that cut an emoji in two writes these") from None
        for token in EXPANDED_IMAGE_TOKENS:
            if token in m.content:
                raise field_error(where, at, f"text holds expanded image tokens {token} (as XTuner's InternVL "
                                             "data writes them)",
                                  hint=f"write one {IMAGE_PLACEHOLDER} where each image goes; mmtune expands it "
                                       "for the model")


def unused_keys(records: list[Any], format: str) -> dict[str, int]:
    """Keys of the records that the format's reader does not read, with the number of records holding
    each: top-level keys by name, keys inside turns as "conversations[].weight". Keys that
    refuse_unsupported handles and keys whose value is empty are left out."""
    reader = FORMATS[format]
    known = set(reader.keys) | set(MEDIA_KEYS) | set(PREFERENCE_KEYS) | {"tools"}
    turn_known = set(reader.turn_keys) | {"tool_calls"}
    counts: dict[str, int] = {}
    for record in records:
        if not isinstance(record, dict):
            continue
        seen = {k for k, v in record.items() if k not in known and _present(v)}
        if isinstance(record.get("label"), bool):
            seen.discard("label")
        turns = record.get(reader.turns) if reader.turns else None
        for turn in turns if isinstance(turns, list) else []:
            if isinstance(turn, dict) and len(turn) > 2:
                seen.update(f"{reader.turns}[].{k}" for k, v in turn.items() if k not in turn_known and _present(v))
        for key in seen:
            counts[key] = counts.get(key, 0) + 1
    return counts


def describe_unused(path: str | Path, counts: dict[str, int], n_records: int) -> str:
    """One line naming the keys mmtune did not use, and what it did with them."""
    keys = ", ".join(f"'{k}' ({n} of {n_records} records)" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{path}: key(s) mmtune does not read were ignored (nothing in them is trained on): {keys}"


def read_file(path: str | Path, format: str = "auto", *,
              errors: str = "raise") -> tuple[list[Conversation], list[DataError]]:
    """Conversations of a data file, and (with errors="collect") the DataErrors of skipped records."""
    return read_records(load_records(path), path, format, errors=errors)
