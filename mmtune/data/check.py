"""Check a data file before training: every bad record with its place and reason, in one pass.

    report = check_file("data.jsonl", length_fn=count_tokens, max_length=2048)
    print(format_report(report))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mmtune.data.conversation import Conversation
from mmtune.data.formats import detect_format, load_records, read_records
from mmtune.errors import DataError

RECORD = re.compile(r"^(.*:record \d+)(?::|$)")


@dataclass
class CheckReport:
    file: str
    format: str  # the format read, or "?" when the file could not be read at all
    n_total: int  # records in the file
    n_good: int
    # (where, reason); where is "file:record N:field", or "file[:line N]" for a whole-file problem.
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_bad(self) -> int:
        return self.n_total - self.n_good

    @property
    def ok(self) -> bool:
        return not self.errors


def check_file(path: str | Path, format: str = "auto", *,
               length_fn: Callable[[Conversation], int] | None = None,
               max_length: int | None = None) -> CheckReport:
    """Read every record of `path`; report the bad ones instead of stopping at the first.

    With `length_fn` (conversation -> token count) and `max_length`, longer samples are bad too,
    since training would truncate them (and may cut off the whole answer).
    """
    report = CheckReport(file=str(path), format=format, n_total=0, n_good=0)
    try:
        records = load_records(path)
        report.n_total = len(records)
        report.format = detect_format(records, path) if format == "auto" else format
        convs, problems = read_records(records, path, report.format, errors="collect")
    except DataError as e:  # the file as a whole is unreadable: one error, no records counted good
        report.errors.append(_as_pair(e))
        report.format = "?"
        return report

    bad_sources = {_record_of(e.where or "") for e in problems}
    report.errors.extend(_as_pair(e) for e in problems)
    if length_fn is not None and max_length is not None:
        for conv in convs:
            try:
                n = length_fn(conv)
            except DataError as e:  # e.g. the encoder finds a problem the reader could not
                report.errors.append((e.where or conv.source, _reason(e)))
                bad_sources.add(conv.source)
                continue
            if n > max_length:
                report.errors.append((conv.source, f"sample is {n} tokens, longer than max_length {max_length}"))
                bad_sources.add(conv.source)
    report.n_good = report.n_total - len(bad_sources)
    return report


def _record_of(where: str) -> str:
    """The record part of a place: `file:record 3:messages[1].role` -> `file:record 3`."""
    match = RECORD.match(where)
    return match.group(1) if match else where


def _reason(e: DataError) -> str:
    return f"{e.message} ({e.hint})" if e.hint else e.message


def _as_pair(e: DataError) -> tuple[str, str]:
    return (e.where or "", _reason(e))


def format_report(report: CheckReport, max_errors: int | None = None) -> str:
    """A summary line, then one line per problem (at most `max_errors` of them)."""
    if report.format == "?":
        head = f"{report.file}: could not be read"
    else:
        head = (f"{report.file} ({report.format}): {report.n_total} records, "
                f"{report.n_good} good, {report.n_bad} bad")
    lines = [head]
    shown = report.errors if max_errors is None else report.errors[:max_errors]
    lines += [f"  {where}: {reason}" if where else f"  {reason}" for where, reason in shown]
    if len(shown) < len(report.errors):
        lines.append(f"  ... and {len(report.errors) - len(shown)} more problems")
    return "\n".join(lines)
