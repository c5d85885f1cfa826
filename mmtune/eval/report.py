"""Writing and printing evaluation results: summary.json / .csv / .xlsx, a rich table, the
MMBench submission workbook."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table


def write_json(data: dict, path: Path) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def write_jsonl(records: Iterable[dict], path: Path) -> Path:
    """One JSON object per line, written to a temporary file first so `path` is never half written."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def summary_rows(summary: dict) -> list[tuple[str, str, float | None, int]]:
    """(level, name, accuracy 0-1, count) rows: overall, then each category, then each l2-category."""
    rows = [("overall", "overall", summary.get("overall"), summary.get("n", 0))]
    for level, key in (("category", "per_category"), ("l2-category", "per_l2_category")):
        counts = summary.get(f"{key}_n", {})
        rows += [(level, name, acc, counts.get(name, 0)) for name, acc in summary.get(key, {}).items()]
    return rows


def write_table_files(rows: Sequence[Sequence], header: Sequence[str], stem: Path) -> list[Path]:
    """`stem`.csv and `stem`.xlsx holding the same table."""
    from openpyxl import Workbook

    csv_path, xlsx_path = stem.with_suffix(".csv"), stem.with_suffix(".xlsx")
    with csv_path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    book = Workbook()
    sheet = book.active
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    book.save(xlsx_path)
    return [csv_path, xlsx_path]


def write_summary(summary: dict, work_dir: Path) -> list[Path]:
    """summary.json, plus summary.csv and summary.xlsx (level, name, accuracy, n)."""
    paths = [write_json(summary, work_dir / "summary.json")]
    paths += write_table_files(summary_rows(summary), ("level", "name", "accuracy", "n"), work_dir / "summary")
    return paths


def write_workbook(columns: Sequence[str], rows: Iterable[dict], path: Path) -> Path:
    """An .xlsx with `columns` as header, one line per row dict (missing values empty)."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(list(columns))
    for row in rows:
        sheet.append([_cell(row.get(c)) for c in columns])
    book.save(path)
    return path


def _cell(value):
    if value is None:
        return None
    return value if isinstance(value, (int, float, bool)) else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def print_summary(summary: dict, console: Console | None = None, title: str = "MMBench") -> None:
    console = console or Console()
    mode = "CircularEval" if summary.get("circular") else "accuracy"
    table = Table(title=f"{title} ({summary.get('split', '')}, {mode})")
    table.add_column("Category", justify="left")
    table.add_column("Accuracy (%)", justify="right")
    table.add_column("N", justify="right")
    for level, key in (("category", "per_category"), ("l2-category", "per_l2_category")):
        values = summary.get(key) or {}
        if not values:
            continue
        counts = summary.get(f"{key}_n", {})
        for name, acc in values.items():
            table.add_row(name if level == "category" else f"[dim]{level}:[/dim] {name}", _pct(acc),
                          str(counts.get(name, "")))
        table.add_section()
    table.add_row("[bold]Overall[/bold]", f"[bold]{_pct(summary.get('overall'))}[/bold]", str(summary.get("n", "")))
    console.print(table)
    if summary.get("row_accuracy") is not None:
        console.print(f"per-answer accuracy over all {summary.get('n_rows')} rotations: {_pct(summary['row_accuracy'])}%")
    console.print(f"unmatched answers: {summary.get('unmatched', 0)} of {summary.get('n_rows', summary.get('n', 0))} "
                  f"({_pct(summary.get('unmatched_rate'))}%)"
                  + (f"; refusals: {summary['refused']}" if summary.get("refused") else "")
                  + (f"; matching: {summary['matching']}" if summary.get("matching") else ""))


def print_scores(summary: dict, title: str, console: Console | None = None) -> None:
    """A yes/no benchmark's scores: one row per split (or category) and a column per measure."""
    console = console or Console()
    scores = summary["scores"]
    table = Table(title=f"{title} (VLMEvalKit scoring)")
    if title == "MME":
        table.add_column("Category")
        for name in ("score", "acc", "acc+"):
            table.add_column(name, justify="right")
        for name in scores["score"]:
            table.add_row(name, f"{scores['score'][name]:.2f}", f"{scores['acc'][name]:.2f}",
                          f"{scores['acc_plus'][name]:.2f}")
        table.add_section()
        table.add_row("[bold]perception[/bold]", f"[bold]{scores['perception']:.2f}[/bold]", "", "")
        table.add_row("[bold]cognition[/bold]", f"[bold]{scores['cognition']:.2f}[/bold]", "", "")
    elif all(isinstance(v, dict) for v in scores.values()):
        measures = list(next(iter(scores.values())))
        table.add_column("Split")
        for m in measures:
            table.add_column(m, justify="right")
        for split, values in scores.items():
            table.add_row(split, *(f"{values[m]:.2f}" for m in measures))
    else:
        table.add_column("Split")
        table.add_column("Accuracy (%)", justify="right")
        for split, value in scores.items():
            table.add_row(split, f"{value:.2f}")
    console.print(table)
    console.print(f"answers that are neither yes nor no: {summary['unknown']} of {summary['n']}")
