"""Text multiple choice (`mmtune eval mcq`): MMLU, C-Eval and CMMLU-style CSV files, per-subject and
overall accuracy, few-shot from a dev split, answered generatively or by log-likelihood.

Files (one subject per file; the subject is the file name without `_dev` / `_val` / `_test`):
  * MMLU (hendrycks/test): no header, `question, A, B, C, D, answer`;
  * C-Eval: header `id, question, A, B, C, D, answer[, explanation]`;
  * CMMLU: header `<unnamed index>, Question, A, B, C, D, Answer`.
A header is recognised by naming `question` and `A` (any case); other columns are ignored. `--data`
and `--dev` are a file or a directory of such files (searched recursively); dev rows of a subject
are its few-shot examples, in file order.

Prompts: English as MMLU's own evaluation writes them ("The following are multiple choice questions
(with answers) about {subject}." then examples ending "Answer: X"), Chinese as C-Eval's ("以下是中国关于
{subject}考试的单项选择题，请选出其中的正确答案。" then "答案：X"); `language="auto"` picks Chinese when the
subject's questions hold a CJK ideograph.

Modes: `generate` asks the prompt through the chat template and matches the reply to an option
(extract.py, VLMEvalKit's rules by default); `loglik` scores the prompt as plain text (no chat
template) and picks the option letter whose continuation has the highest log-probability.
"""

from __future__ import annotations

import csv
import hashlib
import json
import string
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from mmtune.data.choices import has_chinese
from mmtune.errors import DataError, MmtuneError
from mmtune.eval import report
from mmtune.eval.answer import AnswerFn
from mmtune.eval.extract import DEFAULT_MATCHING, match_answer
from mmtune.eval.resumable import PREDICTIONS, check_work_dir, fingerprint, load_predictions, predict

SPLIT_SUFFIXES = ("_dev", "_val", "_test")
HEADER_HINT = "an MMLU file has no header and 6 columns (question, A, B, C, D, answer); C-Eval/CMMLU files have " \
              "a header naming question, A, B, C, D, answer"
EN_INTRO = "The following are multiple choice questions (with answers) about {subject}.\n\n"
ZH_INTRO = "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"
MODES = ("generate", "loglik")


@dataclass
class McqItem:
    """One text question; `prompt` is the whole few-shot prompt, ending where the answer goes."""

    index: str  # "subject:row"
    subject: str
    question: str
    options: dict[str, str]
    answer: str | None
    prompt: str = ""
    answer_prefix: str = " "  # what goes between the prompt and the letter in a worked example
    image_data: list = field(default_factory=list)  # none: the answerers' common interface
    where: str = ""


def subject_of(path: Path) -> str:
    stem = path.stem
    for suffix in SPLIT_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def read_mcq_csv(path: str | Path) -> list[McqItem]:
    """Questions of one subject file (MMLU, C-Eval or CMMLU layout); DataError naming file:line."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text (byte {e.start})", where=str(path)) from None
    except csv.Error as e:
        raise DataError(f"not a valid CSV: {e}", where=str(path)) from None
    if not rows:
        raise DataError("file is empty", where=str(path))
    names = [c.strip().lower() for c in rows[0]]
    if "question" in names and "a" in names:
        column = {name: i for i, name in enumerate(names)}
        letters = [ch for ch in string.ascii_uppercase if ch.lower() in column]
        letter_at = {ch: column[ch.lower()] for ch in letters}
        q_at, a_at, body, first = column["question"], column.get("answer"), rows[1:], 2
    else:
        if len(rows[0]) < 4:
            raise DataError(f"line 1 has {len(rows[0])} columns and no header", where=str(path), hint=HEADER_HINT)
        letters = list(string.ascii_uppercase[: len(rows[0]) - 2])
        letter_at = {ch: i + 1 for i, ch in enumerate(letters)}
        q_at, a_at, body, first = 0, len(rows[0]) - 1, rows, 1
    subject = subject_of(path)
    width = max(q_at, a_at or 0, *letter_at.values()) + 1
    items = []
    for n, row in enumerate(body):
        where = f"{path}:line {n + first}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < width:
            raise DataError(f"row has {len(row)} columns, needs {width}", where=where, hint=HEADER_HINT)
        options = {ch: row[i] for ch, i in letter_at.items() if row[i].strip()}
        answer = row[a_at].strip() if a_at is not None and row[a_at].strip() else None
        if answer is not None and answer not in options:
            raise DataError(f"answer {answer!r} is not one of the options {', '.join(options)}", where=f"{where}:answer")
        if len(options) < 2:
            raise DataError(f"{len(options)} option(s); a question needs at least 2", where=where)
        items.append(McqItem(index=f"{subject}:{n}", subject=subject, question=row[q_at], options=options,
                             answer=answer, where=where))
    return items


def read_mcq_files(path: str | Path) -> dict[str, list[McqItem]]:
    """subject -> questions, from one file or every .csv under a directory."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", where=str(path))
    files = sorted(path.rglob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise DataError("no .csv files", where=str(path))
    subjects: dict[str, list[McqItem]] = defaultdict(list)
    for file in files:
        for item in read_mcq_csv(file):
            subjects[item.subject].append(item)
    return dict(subjects)


def example(item: McqItem, chinese: bool, with_answer: bool) -> str:
    text = item.question + "".join(f"\n{k}. {v}" for k, v in item.options.items())
    text += "\n答案：" if chinese else "\nAnswer:"
    if with_answer:
        text += ("" if chinese else " ") + f"{item.answer}\n\n"
    return text


def build_prompts(subjects: dict[str, list[McqItem]], dev: dict[str, list[McqItem]], shots: int,
                  language: str = "auto") -> list[McqItem]:
    """Every question with its few-shot prompt."""
    out = []
    for subject, items in subjects.items():
        examples = [d for d in dev.get(subject, []) if d.answer is not None][:shots]
        if shots and len(examples) < shots:
            raise MmtuneError(f"subject {subject!r} has {len(examples)} dev example(s) with answers, --shots {shots} "
                              "asks for more", hint="pass --dev with that subject's file, or fewer --shots")
        chinese = language == "zh" or (language == "auto" and any(has_chinese(it.question) for it in items))
        intro = (ZH_INTRO if chinese else EN_INTRO).format(subject=subject.replace("_", " "))
        shots_text = "".join(example(e, chinese, True) for e in examples)
        for item in items:
            item.prompt = intro + shots_text + example(item, chinese, False)
            item.answer_prefix = "" if chinese else " "
            out.append(item)
    return out


def run_mcq(data: str | Path, answer_fn: AnswerFn, work_dir: str | Path, *, dev: str | Path | None = None,
            shots: int = 0, mode: str = "generate", language: str = "auto", batch_size: int = 8,
            matching: str = DEFAULT_MATCHING, progress: bool = True, console: Console | None = None) -> dict:
    """Ask every question (resumable, as run_mmbench) and score: overall (micro), macro and per subject."""
    if mode not in MODES:
        raise MmtuneError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if shots < 0:
        raise MmtuneError(f"--shots must be 0 or more, got {shots}")
    subjects = read_mcq_files(data)
    items = build_prompts(subjects, read_mcq_files(dev) if dev else {}, shots, language)
    scored = [it for it in items if it.answer is not None]
    if not scored:
        raise MmtuneError(f"{data} has no answers to score against", hint="a test split without answers cannot be scored")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    print_ = hashlib.sha1(f"{fingerprint(scored)}:{mode}".encode()).hexdigest()
    check_work_dir(work_dir, {"data": str(Path(data).resolve()), "rows": len(scored), "mode": mode, "shots": shots,
                              "fingerprint": print_})
    out_path = work_dir / PREDICTIONS
    known = {it.index for it in scored}
    done = {i: r for i, r in load_predictions(out_path).items() if i in known}
    replies = predict(scored, answer_fn, out_path, batch_size=batch_size, done=done, progress=progress,
                      console=console)
    records, per_subject = [], defaultdict(list)
    for it in scored:
        choice = match_answer(replies[it.index], it.options, matching).letter
        records.append({"index": it.index, "subject": it.subject, "prediction": replies[it.index], "option": choice,
                        "answer": it.answer, "hit": choice == it.answer})
        per_subject[it.subject].append(choice == it.answer)
    report.write_jsonl(records, out_path)
    accuracy = {s: sum(h) / len(h) for s, h in sorted(per_subject.items())}
    summary = {"data": str(data), "mode": mode, "shots": shots, "matching": matching if mode == "generate" else None,
               "n": len(scored), "overall": sum(r["hit"] for r in records) / len(records),
               "macro": sum(accuracy.values()) / len(accuracy), "per_subject": accuracy,
               "per_subject_n": {s: len(h) for s, h in sorted(per_subject.items())},
               "unmatched": sum(1 for r in records if r["option"] is None)}
    report.write_json(summary, work_dir / "summary.json")
    report.write_table_files([(s, a, summary["per_subject_n"][s]) for s, a in accuracy.items()]
                             + [("overall", summary["overall"], len(records))], ("subject", "accuracy", "n"),
                             work_dir / "summary")
    (work_dir / "prompts_example.txt").write_text(scored[0].prompt, encoding="utf-8")
    return summary


def load_summary(work_dir: str | Path) -> dict:
    return json.loads((Path(work_dir) / "summary.json").read_text(encoding="utf-8"))
