"""Asking a model a benchmark's questions so that a crash loses nothing: every raw answer is appended to
WORK_DIR/predictions.jsonl as it comes, a rerun asks only what is not there, and a work dir holding
answers to other questions is refused (run.json keeps a fingerprint of the questions asked)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Sequence

from rich.console import Console

from mmtune.errors import MmtuneError
from mmtune.eval import report
from mmtune.eval.answer import AnswerFn

PREDICTIONS = "predictions.jsonl"
RUN_INFO = "run.json"


def fingerprint(items: Sequence) -> str:
    """Identifies the question set, so predictions of another file or mode are never mixed in."""
    h = hashlib.sha1()
    for it in items:
        h.update(f"{it.index}\x1f{it.prompt}\x1f{it.answer}\x1e".encode())
    return h.hexdigest()


def load_predictions(path: Path) -> dict[int, dict]:
    """Rows already predicted (index -> record). A line cut short by an interruption is dropped
    from the file, so that appending goes on cleanly."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        path.write_bytes(raw)
    done: dict[int, dict] = {}
    for lineno, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done[record["index"]] = record  # an int, or a text index (HallusionBench)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise MmtuneError("unreadable prediction record", where=f"{path}:line {lineno}",
                              hint="delete the file to evaluate from scratch") from None
    return done


def check_work_dir(work_dir: Path, info: dict) -> None:
    """Refuse to resume from predictions made for other questions (another file, --circular or not)."""
    path = work_dir / RUN_INFO
    if (work_dir / PREDICTIONS).exists() and path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("fingerprint") != info["fingerprint"]:
            raise MmtuneError(f"{work_dir} holds predictions for other questions ({old.get('data')}, "
                              f"circular={old.get('circular')})",
                              hint="use another --work-dir, or delete its predictions.jsonl to start over")
    report.write_json(info, path)


def batches(items: Sequence, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def progress_bar(console: Console | None, progress: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console or Console(stderr=True), disable=not progress)


def predict(items: Sequence, answer_fn: AnswerFn, out_path: Path, *, batch_size: int = 1,
            done: dict[int, dict] | None = None, progress: bool = True,
            console: Console | None = None) -> dict[int, str]:
    """Ask every item not in `done`, appending each raw answer to `out_path` as it comes;
    index -> raw answer for all items."""
    replies = {i: str(r["prediction"]) for i, r in (done or {}).items()}
    pending = [it for it in items if it.index not in replies]
    with progress_bar(console, progress) as bar, out_path.open("a", encoding="utf-8") as out:
        task = bar.add_task("answering", total=len(items), completed=len(items) - len(pending))
        for batch in batches(pending, max(1, batch_size)):
            answers = answer_fn(batch)
            if len(answers) != len(batch):
                raise RuntimeError(f"answer function returned {len(answers)} replies for {len(batch)} items")
            for item, reply in zip(batch, answers):
                out.write(json.dumps({"index": item.index, "prediction": reply}, ensure_ascii=False) + "\n")
                replies[item.index] = reply
            out.flush()
            bar.advance(task, len(batch))
    return replies
