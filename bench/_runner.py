"""Shared by train_throughput.py and preprocess.py: run one benchmark command in its own process,
keep its log, parse its `RESULT {json}` line, append it to a jsonl; medians and markdown tables.

No torch import here: the parent process of a benchmark stays small and idle while a run is measured.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

RESULT_PREFIX = "RESULT "


def peak_rss_mb() -> dict:
    """ru_maxrss of this process and of its largest reaped child (datasets workers), in MiB."""
    import resource

    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "children_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def mmtune_rev() -> str:
    """The commit of the mmtune checkout being measured, '+dirty' when its mmtune/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "mmtune"], cwd=root, capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def emit(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def parse_result(text: str) -> dict | None:
    lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1][len(RESULT_PREFIX):]) if lines else None


def run_one(name: str, cmd: list[str], *, rep: int, out_dir: Path, env: dict | None = None, cwd: Path | None = None,
            fresh: tuple[Path, ...] = (), timeout: float | None = None, post=None) -> dict | None:
    """Run `cmd` with `env` added to the environment (each path in `fresh` removed first), log to
    out_dir/logs/NAME.rREP.log, and append its RESULT (plus name, rep) to out_dir/results.jsonl."""
    log = out_dir / "logs" / f"{name}.r{rep}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for path in fresh:
        shutil.rmtree(path, ignore_errors=True)
    full_env = {**os.environ, **(env or {})}
    print(f"== {name} rep {rep} {time.strftime('%H:%M:%S')}", flush=True)
    import resource

    t0 = time.time()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as f:
        f.write("$ " + " ".join(f"{k}={v}" for k, v in (env or {}).items()) + " " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        try:
            rc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=full_env,
                                cwd=cwd, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU seconds of the run's process tree: robust to
    cpu_s = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime  # other load, unlike wall time
    text = log.read_text(errors="replace")
    result = parse_result(text)
    if rc != 0 or result is None:
        print(f"FAILED rc={rc} ({log})", flush=True)
        return None
    result = {"name": name, "rep": rep, **result, "process_s": round(time.time() - t0, 2), "process_cpu_s": round(cpu_s, 1)}
    if post is not None:
        post(result, text)
    with open(out_dir / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)
    return result


def interleave(names: list[str], reps: int):
    """(rep, name) pairs: every rep runs all names, odd reps in order, even reps reversed (drift cancels)."""
    for rep in range(1, reps + 1):
        for name in (names if rep % 2 else names[::-1]):
            yield rep, name


def load_results(path: Path) -> dict[str, list[dict]]:
    """name -> its runs, in file order."""
    runs: dict[str, list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            runs.setdefault(r["name"], []).append(r)
    return runs


def median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a, b, digits: int = 2) -> str:
    return "-" if a is None or b in (None, 0) else f"{a / b:.{digits}f}"


def run_and_summarize(run_all, args, summarize) -> None:
    """Run every benchmark (`run_all(args)` returns the results file), then print its tables."""
    t0 = time.time()
    results = run_all(args)
    print(f"\ntotal {time.time() - t0:.0f} s; {results}\n")
    if results.exists():
        print(summarize(results))
