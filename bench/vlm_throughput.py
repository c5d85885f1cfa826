"""VLM fine-tuning throughput and memory: mmtune (packed rows, answers-only loss) next to TRL's
SFTTrainer VLM path and a plain transformers Trainer with the processor as collator (issue #23),
on the tiny Qwen2.5-VL and MiniCPM-V 4.6 (mmtune.testing.tiny_vlm), the same conversations and images.

    .venv/bin/python bench/vlm_throughput.py --reps 3             # all runs, 30 steps each, interleaved
    .venv/bin/python bench/vlm_throughput.py --reps 1 --steps 3 --only qwen
    .venv/bin/python bench/vlm_throughput.py --summarize /tmp/peer/bench_vlm/.../results.jsonl

The peers run in their own venv (`--peer-python`, default /tmp/peer/vlm/bin/python: torch 2.13.0+cpu as
mmtune's, transformers as mmtune's, trl, datasets; no torchvision, which does not run beside this torch),
without mmtune; their processors are built from the PIL image processor, tokenizer and chat template
(bench/_vlm_train.py: `peer_processor`). Every run is its own process; runs alternate mmtune / TRL
/ Trainer, and even reps run in reverse order. Workers and hyper-parameters: bench/_vlm_train.py.
Data: `mmtune data shapes --questions colour,shape --choices --lang en,zh` (240 training images, 720
conversations: open questions and MMBench-style multiple choice, English and Chinese), written as
OpenAI messages with image parts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runner import fmt, interleave, load_results, median, ratio, run_and_summarize, run_one, table  # noqa: E402

FAMILIES = ("qwen2_5_vl", "minicpmv4_6")
KINDS = ("mm", "trl", "hf")
ORDER = [f"{kind}_{family}" for family in FAMILIES for kind in KINDS]


def prepare(assets: Path) -> None:
    """Tiny model copies and the conversations (deterministic: same files every time)."""
    from mmtune.data.conversation import IMAGE_PLACEHOLDER
    from mmtune.data.formats import read_file
    from mmtune.data.synth.shapes import make_shapes_dataset
    from mmtune.data.templates import content_parts
    from mmtune.testing.tiny_vlm import tiny_vlm_dir

    if (assets / "data" / "messages.jsonl").exists():
        return
    for family in FAMILIES:
        shutil.copytree(tiny_vlm_dir(family), assets / family, ignore=shutil.ignore_patterns(".complete"))
    make_shapes_dataset(assets / "data", n=300, seed=0, questions=["colour", "shape"], choices=True, langs=("en", "zh"))
    convs, _ = read_file(assets / "data" / "finetune.json")
    lines = []
    for conv in convs:
        messages = [{"role": m.role, "content": content_parts(m.content)} for m in conv.messages]
        assert sum(m.content.count(IMAGE_PLACEHOLDER) for m in conv.messages) == len(conv.images)
        lines.append(json.dumps({"messages": messages, "images": list(conv.images)}, ensure_ascii=False))
    (assets / "data" / "messages.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_all(a) -> Path:
    out = Path(a.out)
    assets = out / "assets"
    prepare(assets)
    names = [n for n in ORDER if __import__("re").search(a.only, n)]
    print(f"runs: {names} x {a.reps}; results -> {out / 'results.jsonl'}", flush=True)
    for rep, name in interleave(names, a.reps):
        kind, family = name.split("_", 1)
        python = sys.executable if kind == "mm" else a.peer_python
        work = out / name
        env = {"CUDA_VISIBLE_DEVICES": "", "HF_DATASETS_CACHE": str(out / f"cache_{name}"),
               "MMTUNE_CACHE": str(out / f"mmcache_{name}")}
        cmd = [python, str(Path(__file__).resolve().parent / "_vlm_train.py"), kind, str(assets), family,
               str(a.steps), str(work)]
        run_one(name, cmd, rep=rep, out_dir=out, env=env, cwd=out,
                fresh=(work, out / f"cache_{name}", out / f"mmcache_{name}"))
    return out / "results.jsonl"


def summarize(path: Path) -> str:
    runs = load_results(path)
    names = [n for n in ORDER if n in runs]
    header = ["run", "toolkit", "runs", "real tok/s median (each run)", "pad fraction", "train s", "peak RSS MiB",
              "real tokens", "train_loss (mmtune: answers only)"]
    rows = []
    for n in names:
        rs = runs[n]
        each = ", ".join(f"{r['real_tok_s']:.0f}" for r in rs)
        rows.append([n, rs[0]["toolkit"], str(len(rs)), f"{fmt(median(rs, 'real_tok_s'))} ({each})",
                     fmt(median(rs, "pad_fraction"), 3), fmt(median(rs, "train_runtime_s"), 1),
                     fmt(median(rs, "peak_rss_mb")), fmt(median(rs, "real_tokens")), fmt(median(rs, "final_loss"), 4)])
    text = [table(header, rows)]
    ratio_rows = []
    for family in FAMILIES:
        for peer in ("trl", "hf"):
            a, b = runs.get(f"mm_{family}"), runs.get(f"{peer}_{family}")
            if a and b:
                ratio_rows.append([f"mm / {peer}, {family}", ratio(median(a, "real_tok_s"), median(b, "real_tok_s")),
                                   ratio(median(a, "peak_rss_mb"), median(b, "peak_rss_mb"))])
    if ratio_rows:
        text.append("\nRatios of medians (real tok/s: > 1 is mmtune faster; peak RSS: < 1 is mmtune smaller)\n")
        text.append(table(["mmtune / peer", "real tok/s", "peak RSS"], ratio_rows))
    return "\n".join(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", default=".", help="regex over run names")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--peer-python", default="/tmp/peer/vlm/bin/python")
    p.add_argument("--out", default=None, help="default /tmp/peer/bench_vlm/DATE-TIME")
    p.add_argument("--summarize", metavar="FILE.jsonl", help="only print the tables of a results file")
    a = p.parse_args(argv)
    a.out = a.out or f"/tmp/peer/bench_vlm/{time.strftime('%Y%m%d-%H%M%S')}"
    if a.summarize:
        print(summarize(Path(a.summarize)))
    else:
        run_and_summarize(run_all, a, summarize)


if __name__ == "__main__":
    main()
