"""MMBench-style multiple-choice evaluation: TSV -> answers -> options -> accuracy tables.

    from mmtune.eval import make_answerer, run_mmbench
    result = run_mmbench("MMBench_DEV_EN.tsv", make_answerer("merged_model"), "work_dirs/mmbench")
    result.summary["overall"]   # fraction right (CircularEval with circular=True)

Each raw answer is appended to WORK_DIR/predictions.jsonl as soon as it is produced; a second run
with the same data and work dir skips the rows already there, so an interrupted evaluation goes on
where it stopped. Answers are then matched to options (`matching`, VLMEvalKit's rules by default),
unmatched ones optionally judged (judge.py; judge replies are kept in judge.jsonl, so a rerun asks
again only what it has not asked), and scored. Then predictions.jsonl is rewritten with the match of
each answer, summary.json/.csv/.xlsx (overall, per category, per l2-category, unmatched count and
rate), unmatched.jsonl and mmbench_result.xlsx (VLMEvalKit's prediction file: the original columns
minus `image`, plus `prediction`, the raw answer; for a test split, the file MMBench's server grades).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console

from mmtune.eval import report
from mmtune.eval.answer import AnswerFn
from mmtune.eval.circular import add_rotations, circular_groups, group_of, has_rotations
from mmtune.eval.extract import DEFAULT_MATCHING, Extraction, check_matching, match_answer
from mmtune.eval.resumable import PREDICTIONS, check_work_dir, fingerprint, load_predictions, predict, progress_bar
from mmtune.eval.tsv import EvalItem, MMBenchTable, read_mmbench_tsv

log = logging.getLogger(__name__)
JUDGED = "judge.jsonl"

Judge = Callable[[EvalItem, str], Extraction]


@dataclass
class MMBenchResult:
    summary: dict
    work_dir: Path
    records: list[dict]
    files: dict[str, Path] = field(default_factory=dict)


def prepare_items(table: MMBenchTable, circular: bool, build_rotations: bool = True) -> tuple[list[EvalItem], bool]:
    """The rows to ask, and whether rotations were built here (CircularEval on a file without them)."""
    if circular and build_rotations and not has_rotations(table.items):
        return add_rotations(table.items), True
    return list(table.items), False


def make_record(item: EvalItem, reply: str, extraction: Extraction) -> dict:
    hit = None if item.answer is None else extraction.letter == item.answer
    return {"index": item.index, "prediction": reply, "option": extraction.letter, "method": extraction.method,
            "answer": item.answer, "hit": hit, "category": item.category, "l2_category": item.l2_category}


def lost_groups(items: Sequence[EvalItem], matched: dict[int, Extraction]) -> set[int]:
    """CircularEval groups already wrong before any judging: a rotation answered with a wrong
    letter, or refused (VLMEvalKit's prefetch stops there and asks no judge)."""
    return {group_of(it) for it in items
            if matched[it.index].refused or (matched[it.index].matched and matched[it.index].letter != it.answer)}


def judge_unmatched(items: Sequence[EvalItem], replies: dict[int, str], matched: dict[int, Extraction], judge: Judge,
                    path: Path, *, circular: bool, progress: bool = True,
                    console: Console | None = None) -> dict[int, Extraction]:
    """`matched` with the judge's verdict on each unmatched answer that can still change a score.
    Verdicts are appended to `path` (index, prediction, option, method) and reused by a rerun."""
    cache: dict[tuple[int, str], Extraction] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
                cache[(int(r["index"]), r["prediction"])] = Extraction(r["option"], r["method"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut by an interruption: asked again
    lost = lost_groups(items, matched) if circular else set()
    todo = [it for it in items if matched[it.index].needs_judge and not (circular and group_of(it) in lost)]
    out = dict(matched)
    with progress_bar(console, progress) as bar, path.open("a", encoding="utf-8") as log_file:
        task = bar.add_task("judging", total=len(todo))
        for item in todo:
            key = (item.index, replies[item.index])
            if key not in cache:
                cache[key] = judge(item, replies[item.index])
                log_file.write(json.dumps({"index": item.index, "prediction": replies[item.index],
                                           "option": cache[key].letter, "method": cache[key].method},
                                          ensure_ascii=False) + "\n")
                log_file.flush()
            out[item.index] = cache[key]
            bar.advance(task)
    return out


def _accuracy(groups: dict[str, list[bool]]) -> tuple[dict[str, float], dict[str, int]]:
    names = sorted(groups)
    return {n: sum(groups[n]) / len(groups[n]) for n in names}, {n: len(groups[n]) for n in names}


def summarize(items: Sequence[EvalItem], records: dict[int, dict], *, circular: bool, data: str = "") -> dict:
    """Accuracy overall / per category / per l2-category (per question group under CircularEval),
    the unmatched count and rate (per answer), and how the options were found.

    Accuracies are fractions (0-1); `n` counts what they are taken over (questions, or groups of
    rotations), `n_rows` the answers. A test split (no answers) gets `overall: None`."""
    rows = [records[it.index] for it in items]
    by_index = {it.index: it for it in items}
    unmatched = sum(1 for r in rows if r["option"] is None and r["method"] != "refusal")
    refused = sum(1 for r in rows if r["method"] == "refusal")
    split = "dev" if items and all(it.answer is not None for it in items) else "test"
    scored: list[tuple[EvalItem, bool]] = []
    extra: dict = {}
    if split == "dev":
        hits = {r["index"]: bool(r["hit"]) for r in rows}
        if circular:
            groups, dropped = circular_groups(items, hits)
            scored = [(by_index[g.main], g.hit) for g in groups]
            extra["row_accuracy"] = sum(hits.values()) / len(hits)
            extra["dropped_rows"] = len(dropped)
            if dropped:
                log.warning("%d row(s) dropped from CircularEval: their group's main row (index == g_index) is not "
                            "in the file, e.g. index %d (as VLMEvalKit does)", len(dropped), dropped[0])
        else:
            scored = [(by_index[i], h) for i, h in hits.items()]
    per_cat: dict[str, list[bool]] = defaultdict(list)
    per_l2: dict[str, list[bool]] = defaultdict(list)
    for item, hit in scored:
        if item.category:
            per_cat[item.category].append(hit)
        if item.l2_category:
            per_l2[item.l2_category].append(hit)
    acc_cat, n_cat = _accuracy(per_cat)
    acc_l2, n_l2 = _accuracy(per_l2)
    return {"data": data, "split": split, "circular": circular,
            "overall": sum(h for _, h in scored) / len(scored) if scored else None,
            "n": len(scored) if split == "dev" else len(rows), "n_rows": len(rows),
            "unmatched": unmatched, "unmatched_rate": unmatched / len(rows) if rows else 0.0, "refused": refused,
            "per_category": acc_cat, "per_l2_category": acc_l2, "per_category_n": n_cat, "per_l2_category_n": n_l2,
            **extra, "matched_by": dict(Counter(r["method"] for r in rows if r["method"]))}


def submission_rows(table: MMBenchTable, items: Sequence[EvalItem], records: dict[int, dict]) -> tuple[list[str], list[dict]]:
    """VLMEvalKit's prediction file: the TSV's columns in its order (minus `image`) plus `prediction`,
    the model's raw answer (the MMBench server matches it with its own rules), one row per row asked."""
    columns = [c for c in table.columns if c != "image"]
    extra = [c for c in ("g_index",) if c not in columns and any("g_index" in it.row for it in items)]
    columns += extra + ["prediction"]
    rows = [dict(it.row, index=it.index, prediction=records[it.index]["prediction"]) for it in items]
    return columns, rows


def run_mmbench(data_path: str | Path, answer_fn: AnswerFn, work_dir: str | Path, *, circular: bool = False,
                batch_size: int = 1, judge: Judge | None = None, matching: str = DEFAULT_MATCHING,
                build_rotations: bool = True, result_name: str = "mmbench_result.xlsx", progress: bool = True,
                console: Console | None = None) -> MMBenchResult:
    """Evaluate `answer_fn` on a multiple-choice TSV; resumable (see the module docstring).

    With `circular` and `build_rotations`, a file without rotations gets them built; without
    `build_rotations` (VLMEvalKit's way) the rotations in the file are scored as they are."""
    check_matching(matching)
    table = read_mmbench_tsv(data_path, na="pandas" if matching == "vlmevalkit" else "literal")
    items, built = prepare_items(table, circular, build_rotations)
    if not circular and has_rotations(items):
        log.warning("%s holds rotated copies of its questions; without --circular each row is scored as a question "
                    "of its own, which is not MMBench's CircularEval score (pass --circular for that)", data_path)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    info = {"data": str(Path(data_path).resolve()), "rows": len(items), "circular": circular,
            "built_rotations": built, "fingerprint": fingerprint(items)}
    check_work_dir(work_dir, info)
    out_path = work_dir / PREDICTIONS
    known = {it.index for it in items}
    done = {i: r for i, r in load_predictions(out_path).items() if i in known}
    replies = predict(items, answer_fn, out_path, batch_size=batch_size, done=done, progress=progress,
                      console=console)
    matched = {it.index: match_answer(replies[it.index], it.options, matching) for it in items}
    if judge is not None and table.has_answers:
        matched = judge_unmatched(items, replies, matched, judge, work_dir / JUDGED, circular=circular,
                                  progress=progress, console=console)
    elif judge is not None:
        log.info("test split: no judge asked (the MMBench server matches the raw answers itself)")
    records = {it.index: make_record(it, replies[it.index], matched[it.index]) for it in items}
    report.write_jsonl([records[it.index] for it in items], out_path)
    summary = summarize(items, records, circular=circular, data=str(data_path))
    summary["matching"] = matching
    files = {"predictions": out_path}
    unmatched = [{"index": r["index"], "prediction": r["prediction"]} for r in (records[it.index] for it in items)
                 if r["option"] is None and r["method"] != "refusal"]
    files["unmatched"] = work_dir / "unmatched.jsonl"
    report.write_jsonl(unmatched, files["unmatched"])
    for path in report.write_summary(summary, work_dir):
        files[path.name] = path
    columns, rows = submission_rows(table, items, records)
    files["submission"] = report.write_workbook(columns, rows, work_dir / result_name)
    return MMBenchResult(summary, work_dir, [records[it.index] for it in items], files)
