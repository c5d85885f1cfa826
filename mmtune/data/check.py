"""Check a data file before training: every bad record with its place and reason, in one pass.

    report = check_file("data.jsonl", length_fn=count_tokens, max_length=2048)
    report = check_file("llava.json", image_folder="data/images")   # also open every image
    print(format_report(report))

Image checks: an `<image>` placeholder (or `<image_XX>` reference, or image part) in an assistant
answer is reported as such, whatever the format. With `image_folder`, every image of a readable
record must lie inside the folder and decode; its place is "file:record N:images[k]" (k counts the
record's images in the order their placeholders appear).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mmtune.data.conversation import Conversation
from mmtune.data.formats import describe_unused, detect_format, load_records, read_records, unused_keys
from mmtune.data.images import open_image, resolve_image_path
from mmtune.data.placeholders import fill_and_report
from mmtune.errors import DataError, record_location

RECORD = re.compile(r"^(.*:record \d+)(?::|$)")
IMAGE_MARK = re.compile(r"<image>|<image_\d+>")  # our placeholder, MiniCPM-V's numbered references
ASSISTANT_ROLES = ("assistant", "gpt")


@dataclass
class CheckReport:
    file: str
    format: str  # the format read, or "?" when the file could not be read at all
    n_total: int  # records in the file
    n_good: int
    # (where, reason); where is "file:record N:field", or "file[:line N]" for a whole-file problem.
    errors: list[tuple[str, str]] = field(default_factory=list)
    n_images: int = 0  # images referenced by readable records
    images_checked: bool = False  # whether they were opened (an image folder was given)
    lengths: list[int] = field(default_factory=list)  # tokens of each measured sample (with length_fn)
    image_tokens: list[int] = field(default_factory=list)  # image tokens of each measured sample (VLM recipes)
    # Warnings that do not make a record bad: keys no reader uses, template placeholders left unfilled.
    notes: list[str] = field(default_factory=list)

    @property
    def n_bad(self) -> int:
        return self.n_total - self.n_good

    @property
    def ok(self) -> bool:
        return not self.errors


def check_file(path: str | Path, format: str = "auto", *,
               length_fn: Callable[[Conversation], int] | None = None,
               max_length: int | None = None,
               image_folder: str | Path | None = None,
               replace: dict[str, str] | None = None) -> CheckReport:
    """Read every record of `path`; report the bad ones instead of stopping at the first.

    With `image_folder`, each record's images must stay inside it and decode. With `length_fn`
    (conversation -> token count, image tokens included; or (token count, image tokens)) and
    `max_length`, longer samples are bad too,
    since training would truncate them (and may cut off the whole answer). `length_fn` sees only
    records whose images are good, and, when `image_folder` is given, with `images` resolved to
    paths it can open. Placeholders such as `{{name}}` are filled from `replace` (a recipe's
    data.replace); the ones left, and record keys no reader uses, are listed in `notes`.
    """
    if image_folder is not None and not Path(image_folder).is_dir():
        raise DataError(f"image folder {str(image_folder)!r} " + ("is not a folder" if Path(image_folder).exists()
                                                                 else "not found"),
                        hint="pass the folder the records' image paths are relative to")
    report = CheckReport(file=str(path), format=format, n_total=0, n_good=0)
    try:
        records = load_records(path)
        report.n_total = len(records)
        report.format = detect_format(records, path) if format == "auto" else format
        convs, problems = read_records(records, path, report.format, errors="collect")
        unused = unused_keys(records, report.format)
    except DataError as e:  # the file as a whole is unreadable: one error, no records counted good
        report.errors.append(_as_pair(e))
        report.format = "?"
        return report

    if unused:
        report.notes.append(describe_unused(path, unused, len(records)))
    left = fill_and_report(convs, replace or {})
    if left:
        report.notes.append(left)
    bad_sources = {_record_of(e.where or "") for e in problems}
    report.errors.extend(_as_pair(e) for e in problems)
    for i, record in enumerate(records):
        for field_name, what in assistant_image_fields(record):
            report.errors.append((record_location(str(path), i, field_name),
                                  f"assistant answer contains {what}; images belong in user messages "
                                  "(remove it from the answer, or write it without angle brackets)"))
            bad_sources.add(record_location(str(path), i))

    report.n_images = sum(len(c.images) for c in convs)
    report.images_checked = image_folder is not None
    if image_folder is not None:
        convs = [_check_images(conv, image_folder, report, bad_sources) for conv in convs]
    if length_fn is not None and max_length is not None:
        for conv in convs:
            if conv.source in bad_sources:
                continue  # its images cannot be measured, or it is bad already
            try:
                n = length_fn(conv)
                if isinstance(n, tuple):  # (tokens, of which image tokens)
                    n, n_image = n
                    report.image_tokens.append(n_image)
                report.lengths.append(n)
            except DataError as e:  # e.g. the encoder finds a problem the reader could not
                report.errors.append((e.where or conv.source, _reason(e)))
                bad_sources.add(conv.source)
                continue
            if n > max_length:
                report.errors.append((conv.source, f"sample is {n} tokens, longer than max_length {max_length}"))
                bad_sources.add(conv.source)
    report.errors.sort(key=lambda pair: _record_number(pair[0]))  # stable: a record's problems keep their order
    report.n_good = report.n_total - len(bad_sources)
    return report


def _check_images(conv: Conversation, image_folder: str | Path, report: CheckReport,
                  bad_sources: set[str]) -> Conversation:
    """The conversation with its images resolved under the folder; each image that is outside it,
    missing or undecodable is reported and makes the record bad."""
    resolved = []
    for k, image in enumerate(conv.images):
        where = f"{conv.source}:images[{k}]"
        try:
            full = resolve_image_path(image, image_folder, where)
            open_image(full, where).close()
        except DataError as e:
            report.errors.append(_as_pair(e))
            bad_sources.add(conv.source)
            continue
        resolved.append(str(Path(full).resolve()))  # absolute: a length_fn resolves it again under the folder
    return dataclasses.replace(conv, images=resolved) if conv.images else conv


def assistant_image_fields(record: Any) -> list[tuple[str, str]]:
    """(field, what) for each place in a raw record where an assistant answer holds an image
    placeholder (what: "an image placeholder '<image>'") or an image part.

    Works on every format's layout (conversations/messages turns with from/role and value/content,
    content parts, alpaca's output/history), before any reader has moved placeholders around.
    """
    if not isinstance(record, dict):
        return []
    found = []
    for key in ("conversations", "messages"):
        turns = record.get(key)
        if not isinstance(turns, list):
            continue
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict) or (turn.get("from", turn.get("role")) not in ASSISTANT_ROLES):
                continue
            text_key = "value" if "value" in turn else "content"
            content = turn.get(text_key)
            if isinstance(content, str) and _mark(content):
                found.append((f"{key}[{i}].{text_key}", _mark(content)))
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if not isinstance(part, dict):
                        continue
                    if part.get("type") in ("image", "image_url"):
                        found.append((f"{key}[{i}].{text_key}[{j}]", "an image part"))
                    elif isinstance(part.get("text"), str) and _mark(part["text"]):
                        found.append((f"{key}[{i}].{text_key}[{j}].text", _mark(part["text"])))
    if isinstance(record.get("output"), str) and _mark(record["output"]):
        found.append(("output", _mark(record["output"])))
    history = record.get("history")
    if isinstance(history, list):
        for k, pair in enumerate(history):
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str) and _mark(pair[1]):
                found.append((f"history[{k}][1]", _mark(pair[1])))
    return found


def _mark(text: str) -> str:
    """"an image placeholder '<image>'" for the first image mark in `text`, or ""."""
    match = IMAGE_MARK.search(text)
    return f"an image placeholder {match.group(0)!r}" if match else ""


def _record_number(where: str) -> int:
    match = re.search(r":record (\d+)", where)
    return int(match.group(1)) if match else -1


def _record_of(where: str) -> str:
    """The record part of a place: `file:record 3:messages[1].role` -> `file:record 3`."""
    match = RECORD.match(where)
    return match.group(1) if match else where


def _reason(e: DataError) -> str:
    return f"{e.message} ({e.hint})" if e.hint else e.message


def _as_pair(e: DataError) -> tuple[str, str]:
    return (e.where or "", _reason(e))


def _median(values: list[int]) -> int:
    return sorted(values)[len(values) // 2]


def format_report(report: CheckReport, max_errors: int | None = None) -> str:
    """A summary line, then one line per problem (at most `max_errors` of them)."""
    if report.format == "?":
        head = f"{report.file}: could not be read"
    else:
        head = (f"{report.file} ({report.format}): {report.n_total} records, "
                f"{report.n_good} good, {report.n_bad} bad")
    lines = [head]
    if report.lengths:
        lines.append(f"  tokens per sample: median {_median(report.lengths)}, longest {max(report.lengths)}")
    if report.image_tokens:
        lines.append(f"  image tokens per sample: median {_median(report.image_tokens)}, most "
                     f"{max(report.image_tokens)}")
    shown = report.errors if max_errors is None else report.errors[:max_errors]
    lines += [f"  {where}: {reason}" if where else f"  {reason}" for where, reason in shown]
    if len(shown) < len(report.errors):
        lines.append(f"  ... and {len(report.errors) - len(shown)} more problems")
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)
