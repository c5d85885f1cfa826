"""The benchmark families of VLMEvalKit's TSV world, by name (`mmtune eval vlm --benchmark NAME`).

Each entry says only what differs: multiple choice (one scorer, match_vlmevalkit.py; CircularEval
for MMBench and CCBench, as VLMEvalKit decides by name) or yes/no (yorn.py: MME, POPE,
HallusionBench scores). Every multiple-choice file is asked with the same prompt (data/choices.py:
what VLMEvalKit asks LLaVA-style models of any MCQ dataset, the hint first when the file has one);
yes/no questions are asked as written.

    from mmtune.eval.benchmarks import run_benchmark
    result = run_benchmark("pope", "POPE.tsv", answer_fn, "work_dirs/pope")
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console

from mmtune.errors import MmtuneError
from mmtune.eval import report
from mmtune.eval.answer import AnswerFn
from mmtune.eval.extract import DEFAULT_MATCHING
from mmtune.eval.resumable import PREDICTIONS, check_work_dir, fingerprint, load_predictions, predict, progress_bar
from mmtune.eval.yorn import (default_scores, extract_yes_no, hallusion_scores, judge_yes_no, mme_scores, pope_scores,
                              read_yes_no_tsv)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Benchmark:
    name: str
    kind: str  # "mcq" or "yes_no"
    title: str
    circular: bool = False  # MCQ: score the file's rotations as CircularEval groups
    scores: str = "default"  # yes/no: default, mme, pope, hallusion
    files: tuple[str, ...] = field(default=())  # VLMEvalKit's names of its files, for the docs


BENCHMARKS: dict[str, Benchmark] = {}


def register(bench: Benchmark) -> Benchmark:
    BENCHMARKS[bench.name] = bench
    return bench


register(Benchmark("mmbench", "mcq", "MMBench", circular=True,
                   files=("MMBench_DEV_EN", "MMBench_DEV_CN", "MMBench_DEV_EN_V11", "MMBench_TEST_EN", "...")))
register(Benchmark("ccbench", "mcq", "CCBench", circular=True, files=("CCBench",)))
register(Benchmark("seedbench", "mcq", "SEED-Bench", files=("SEEDBench_IMG", "SEEDBench2_Plus")))
register(Benchmark("ai2d", "mcq", "AI2D", files=("AI2D_TEST", "AI2D_TEST_NO_MASK")))
register(Benchmark("scienceqa", "mcq", "ScienceQA", files=("ScienceQA_VAL", "ScienceQA_TEST")))
register(Benchmark("mmstar", "mcq", "MMStar", files=("MMStar",)))
register(Benchmark("mcq", "mcq", "multiple choice"))
register(Benchmark("mme", "yes_no", "MME", scores="mme", files=("MME",)))
register(Benchmark("pope", "yes_no", "POPE", scores="pope", files=("POPE",)))
register(Benchmark("hallusionbench", "yes_no", "HallusionBench", scores="hallusion", files=("HallusionBench",)))
register(Benchmark("yes_no", "yes_no", "yes/no"))


def get_benchmark(name: str) -> Benchmark:
    key = name.lower().replace("-", "").replace(" ", "")
    key = {"seedbench_img": "seedbench", "hallusion": "hallusionbench", "yesno": "yes_no"}.get(key, key)
    if key not in BENCHMARKS:
        raise MmtuneError(f"unknown benchmark {name!r}", hint=f"choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[key]


@dataclass
class BenchmarkResult:
    summary: dict
    work_dir: Path
    records: list[dict]
    files: dict[str, Path]


def run_benchmark(name: str, data_path: str | Path, answer_fn: AnswerFn, work_dir: str | Path, *,
                  batch_size: int = 1, judge=None, matching: str = DEFAULT_MATCHING, progress: bool = True,
                  console: Console | None = None) -> BenchmarkResult:
    """Ask and score one benchmark file, resumable like `run_mmbench`."""
    bench = get_benchmark(name)
    if bench.kind == "mcq":
        from mmtune.eval.mmbench import run_mmbench

        r = run_mmbench(data_path, answer_fn, work_dir, circular=bench.circular, build_rotations=False,
                        batch_size=batch_size, judge=judge, matching=matching, result_name=f"{bench.name}_result.xlsx",
                        progress=progress, console=console)
        r.summary["benchmark"] = bench.name
        report.write_json(r.summary, Path(work_dir) / "summary.json")
        return BenchmarkResult(r.summary, r.work_dir, r.records, r.files)
    return run_yes_no(bench, data_path, answer_fn, work_dir, batch_size=batch_size, judge=judge, progress=progress,
                      console=console)


SCORERS: dict[str, Callable] = {
    "default": lambda items, extracted, hits: default_scores(items, hits),
    "mme": lambda items, extracted, hits: mme_scores(items, hits),
    "pope": pope_scores,
    "hallusion": lambda items, extracted, hits: hallusion_scores(items, hits),
}


def run_yes_no(bench: Benchmark, data_path: str | Path, answer_fn: AnswerFn, work_dir: str | Path, *,
               batch_size: int = 1, judge=None, progress: bool = True,
               console: Console | None = None) -> BenchmarkResult:
    items = read_yes_no_tsv(data_path)
    if any(it.answer is None for it in items):
        raise MmtuneError(f"{data_path} has rows without an answer; a yes/no benchmark is scored against answers",
                          hint="use the file with the `answer` column")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    check_work_dir(work_dir, {"data": str(Path(data_path).resolve()), "rows": len(items), "benchmark": bench.name,
                              "fingerprint": fingerprint(items)})
    out_path = work_dir / PREDICTIONS
    known = {it.index for it in items}
    done = {i: r for i, r in load_predictions(out_path).items() if i in known}
    replies = predict(items, answer_fn, out_path, batch_size=batch_size, done=done, progress=progress,
                      console=console)
    extracted = {it.index: extract_yes_no(replies[it.index]) for it in items}
    method = {it.index: "rule" if extracted[it.index] != "Unknown" else None for it in items}
    if judge is not None:
        unknown = [it for it in items if extracted[it.index] == "Unknown"]
        with progress_bar(console, progress) as bar:
            task = bar.add_task("judging", total=len(unknown))
            for it in unknown:
                extracted[it.index] = judge_yes_no(judge, it, replies[it.index])
                method[it.index] = "judge"
                bar.advance(task)
    hits = {it.index: extracted[it.index] == it.answer for it in items}
    records = [{"index": it.index, "prediction": replies[it.index], "extracted": extracted[it.index],
                "method": method[it.index], "answer": it.answer, "hit": hits[it.index], "category": it.category,
                "l2_category": it.l2_category} for it in items]
    report.write_jsonl(records, out_path)
    scores = SCORERS[bench.scores](items, extracted, hits)
    unknown = sum(1 for it in items if extracted[it.index] == "Unknown")
    summary = {"benchmark": bench.name, "data": str(data_path), "n": len(items), "unknown": unknown,
               "unknown_rate": unknown / len(items) if items else 0.0, "scores": scores}
    files = {"predictions": out_path, "summary": report.write_json(summary, work_dir / "summary.json")}
    columns = [c for c in items[0].row] + ["prediction"] if items else ["prediction"]
    rows = [dict(it.row, prediction=replies[it.index]) for it in items]
    files["result"] = report.write_workbook(columns, rows, work_dir / f"{bench.name}_result.xlsx")
    log.info("%s: %s", bench.title, json.dumps(scores)[:200])
    return BenchmarkResult(summary, work_dir, records, files)
