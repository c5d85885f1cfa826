"""Training throughput and memory of mmtune next to plain HF Trainer and LLaMA-Factory (issue #6).

Uses the peer-bench kit (/work/shared/peer-bench/README.md): its tiny Qwen2 + 2,000 ChatML
conversations in /tmp/peer/assets, its hyper-parameters, its peer venvs and its RESULT format.
Every run is its own process; mmtune and peer runs alternate, and even reps run in reverse order.

    .venv/bin/python bench/train_throughput.py --reps 3                    # all runs, 60 steps each
    .venv/bin/python bench/train_throughput.py --reps 1 --steps 3 --only 'full'
    .venv/bin/python bench/train_throughput.py --summarize /tmp/peer/bench_train/results.jsonl
    .venv/bin/python bench/train_throughput.py --check-tokens              # tokens/labels vs the baseline

Runs: mm_full, mm_lora, mm_full_pack, mm_lora_pack, mm_full_pack_unfused (without train.fused_layers),
mm_full_pack_plainloss (the same without
train.chunked_loss) (mmtune, this venv) and hf_full, hf_lora
(kit's baseline_hf.py, /tmp/peer/hf), lf_full, lf_lora, lf_full_pack, lf_full_neat (run_lf.py,
/tmp/peer/lf), with the commands of the kit's run_all.sh (cwd = out dir, CUDA_VISIBLE_DEVICES=,
a fresh HF_DATASETS_CACHE per run; mmtune runs also get a fresh MMTUNE_CACHE).
MFU: see the docstring of _mmtune_train.py (only with CUDA, over --peak-tflops).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runner import fmt, interleave, load_results, median, ratio, run_and_summarize, run_one, table  # noqa: E402

KIT = Path("/work/shared/peer-bench")
MM = ["mm_full", "mm_full_pack", "mm_lora", "mm_lora_pack", "mm_full_pack_plainloss", "mm_full_pack_unfused"]
PEERS = ["hf_full", "lf_full", "hf_lora", "lf_lora", "lf_full_pack", "lf_full_neat"]
# one mmtune run, one peer run, ... (then the remaining peers)
ORDER = ["mm_full", "hf_full", "mm_full_pack", "lf_full", "mm_lora", "hf_lora", "mm_lora_pack", "lf_lora",
         "lf_full_pack", "lf_full_neat", "mm_full_pack_plainloss", "mm_full_pack_unfused"]
RATIOS = [("mm_full", "hf_full"), ("mm_full", "lf_full"), ("mm_full_pack", "hf_full"), ("mm_full_pack", "lf_full_pack"),
          ("mm_full_pack", "lf_full_neat"), ("mm_lora", "hf_lora"), ("mm_lora", "lf_lora"),
          ("mm_lora_pack", "hf_lora"), ("mm_lora_pack", "lf_lora"), ("mm_full_pack", "mm_full_pack_plainloss"),
          ("mm_full_pack", "mm_full_pack_unfused")]


def peer_command(name: str, a, out: Path) -> list[str]:
    """The kit's run_all.sh command for a peer run (max steps added only when not the kit's 60)."""
    p = Path(a.peers)
    if name.startswith("hf_"):
        cmd = [p / "hf/bin/python", a.kit / "baseline_hf.py", p / "assets", out / name]
        return cmd + (["--lora"] if name == "hf_lora" else []) + ([] if a.steps == 60 else ["--steps", str(a.steps)])
    extra = {"lf_full": ["finetuning_type=full"], "lf_lora": ["finetuning_type=lora"],
             "lf_full_pack": ["finetuning_type=full", "packing=true"],
             "lf_full_neat": ["finetuning_type=full", "packing=true", "neat_packing=true"]}[name]
    cmd = [p / "lf/bin/python", a.kit / "run_lf.py", a.kit / "lf_sft.yaml", f"output_dir={out / name}", *extra]
    return cmd + ([] if a.steps == 60 else [f"max_steps={a.steps}"])


LOSS_RE = re.compile(r"""['"]loss['"]:\s*['"]?([0-9.]+)""")


def peer_last10(result: dict, log_text: str, steps: int) -> None:
    """The loss the Trainer printed last (logging_steps 10: the mean over the last 10 steps, 4 significant
    digits), from the run's log; None under 10 steps."""
    losses = LOSS_RE.findall(log_text)
    result["loss_last10"] = float(losses[-1]) if losses and steps >= 10 and steps % 10 == 0 else None


def run_all(a) -> Path:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in ORDER if re.search(a.only, n)]
    if not names:
        sys.exit(f"--only {a.only!r} matches none of {ORDER}")
    print(f"runs: {names} x {a.reps}; results -> {out / 'results.jsonl'}", flush=True)
    for rep, name in interleave(names, a.reps):
        env = {"CUDA_VISIBLE_DEVICES": ""} if (name in PEERS or a.device == "cpu") else {}
        env["HF_DATASETS_CACHE"] = str(out / f"cache_{name}")
        fresh = [out / f"cache_{name}", out / name]
        if name in MM:
            env["MMTUNE_CACHE"] = str(out / f"mmcache_{name}")
            env["BENCH_WORK_DIR"] = str(out / name)
            fresh.append(out / f"mmcache_{name}")
            cmd = [sys.executable, Path(__file__).resolve(), "--worker", name, "--assets", str(Path(a.peers) / "assets"),
                   "--steps", str(a.steps), "--device", a.device]
            cmd += (["--peak-tflops", str(a.peak_tflops)] if a.peak_tflops else []) + (["--save"] if a.save else [])
            run_one(name, cmd, rep=rep, out_dir=out, env=env, cwd=out, fresh=tuple(fresh))
        else:
            run_one(name, peer_command(name, a, out), rep=rep, out_dir=out, env=env, cwd=out, fresh=tuple(fresh),
                    post=lambda r, text: peer_last10(r, text, a.steps))
    return out / "results.jsonl"


def summarize(path: Path) -> str:
    runs = load_results(path)
    names = [n for n in ORDER if n in runs] + [n for n in runs if n not in ORDER]
    header = ["run", "toolkit", "method", "packing", "runs", "real tok/s median (each run)", "padded tok/s",
              "pad fraction", "train s", "prep s", "wall s", "process CPU s", "peak RSS MiB", "loss, last 10 steps", "train_loss",
              "real tokens"]
    rows = []
    for n in names:
        rs = runs[n]
        r0 = rs[0]
        each = ", ".join(f"{r['real_tok_s']:.0f}" for r in rs)
        rows.append([n, r0["toolkit"], r0["method"], str(r0["packing"]), str(len(rs)),
                     f"{fmt(median(rs, 'real_tok_s'))} ({each})", fmt(median(rs, "padded_tok_s")),
                     fmt(median(rs, "pad_fraction"), 3), fmt(median(rs, "train_runtime_s"), 1),
                     fmt(median(rs, "prep_s"), 2), fmt(median(rs, "wall_s"), 1), fmt(median(rs, "process_cpu_s"), 1), fmt(median(rs, "peak_rss_mb")),
                     fmt(median(rs, "loss_last10"), 4), fmt(median(rs, "final_loss"), 4),
                     fmt(median(rs, "real_tokens"))])
    text = [table(header, rows)]
    if any(r.get("mfu") is not None or r.get("achieved_tflops") is not None for rs in runs.values() for r in rs):
        text.append("\n" + table(["run", "achieved TFLOP/s", "MFU"],
                                 [[n, fmt(median(runs[n], "achieved_tflops"), 3), fmt(median(runs[n], "mfu"), 4)]
                                  for n in names if median(runs[n], "achieved_tflops") is not None]))
    ratio_rows = []
    for a_name, b_name in RATIOS:
        if a_name in runs and b_name in runs:
            ra, rb = runs[a_name], runs[b_name]
            ratio_rows.append([f"{a_name} / {b_name}", ratio(median(ra, "real_tok_s"), median(rb, "real_tok_s")),
                               ratio(median(ra, "padded_tok_s"), median(rb, "padded_tok_s")),
                               ratio(median(ra, "prep_s"), median(rb, "prep_s")),
                               ratio(median(ra, "process_cpu_s"), median(rb, "process_cpu_s")),
                               ratio(median(ra, "peak_rss_mb"), median(rb, "peak_rss_mb"))])
    if ratio_rows:
        text.append("\nRatios of medians (> 1: mmtune higher; tok/s: higher is faster; prep s, CPU s, RSS: lower is "
                    "better; process CPU s covers the whole run and is the figure least moved by other load)\n")
        text.append(table(["mmtune / peer", "real tok/s", "padded tok/s", "prep s", "process CPU s", "peak RSS"], ratio_rows))
    return "\n".join(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", default=".", help="regex over run names")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--peers", default="/tmp/peer", help="dir with the hf/ and lf/ venvs and assets/")
    p.add_argument("--kit", type=Path, default=KIT)
    p.add_argument("--out", default=None,
                   help="results.jsonl (appended), logs/ and work dirs; default /tmp/peer/bench_train/DATE-TIME")
    p.add_argument("--device", choices=["cpu", "auto"], default="cpu", help="mmtune runs; peers always run on CPU")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (CUDA runs only)")
    p.add_argument("--save", action="store_true", help="let mmtune save its checkpoint in the train loop")
    p.add_argument("--summarize", metavar="FILE.jsonl", help="only print the tables of a results file")
    p.add_argument("--check-tokens", action="store_true", help="compare mmtune's ids/labels and sample order with the baseline")
    p.add_argument("--worker", choices=MM, help=argparse.SUPPRESS)
    p.add_argument("--assets", default="/tmp/peer/assets", help=argparse.SUPPRESS)
    p.add_argument("--dry", action="store_true", help=argparse.SUPPRESS)  # worker: no forward/backward (--check-tokens)
    a = p.parse_args(argv)
    a.out = a.out or f"/tmp/peer/bench_train/{time.strftime('%Y%m%d-%H%M%S')}"
    if a.worker:
        from _mmtune_train import worker

        worker(a.worker, a.assets, a.steps, a.device, a.peak_tflops, a.save, dry=a.dry)
    elif a.check_tokens:
        from _token_check import check

        check(Path(a.peers), a.kit, a.steps)
    elif a.summarize:
        print(summarize(Path(a.summarize)))
    else:
        run_and_summarize(run_all, a, summarize)


if __name__ == "__main__":
    main()
