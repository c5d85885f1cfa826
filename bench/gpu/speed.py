"""GPU training speed of mmtune next to the plain Trainer and LLaMA-Factory (issue #6, item 4).

A Qwen2-shaped model of 0.5B or 1.5B parameters (bench/gpu/models.py, random weights, bf16), the
peer-bench kit's 2,000 conversations, context 4,096, full fine-tune, SDPA, AdamW (fused), lr 1e-5,
--steps optimizer steps. Each run is its own process; runs alternate (A B C ..., reversed on even reps).

| run | what |
|---|---|
| mm_full_pack | `mmtune train`: packed rows of 4,096 tokens, micro-batch 1; attention per sample (varlen kernel), chunked loss, fused layers |
| hf_full | plain Trainer: unpacked, padded to the batch's longest, micro-batch 16 (~4k real tokens per step) |
| hf_full_liger | the same with `use_liger_kernel=True` |
| lf_full_neat | LLaMA-Factory 0.9.5 `neat_packing` (no attention across samples), cutoff 4,096, micro-batch 1 |
| lf_full_pack | LLaMA-Factory `packing` (attention crosses samples) |
| lf_full_neat_liger | `neat_packing` with `enable_liger_kernel` |

Per run: real tokens/s over the Trainer's train_runtime (the kit's measure, for every toolkit),
peak GPU memory (max_memory_allocated where the run reports it), and MFU = 6·N·real tokens /
train_runtime / peak (dense FLOPs only: the same formula for every toolkit; N counts the tied
embedding once). mmtune's runs also report the kit's full formula with attention FLOPs and the
steady-state rate after the first 10 steps (bench/_mmtune_train.py's docstring).

    python3 bench/gpu/speed.py --size 0.5b --out $OUT       # on the GPU machine, via bench/gpu/check.sh
    .venv/bin/python bench/gpu/speed.py --size tiny --device cpu --steps 4 --lf-python /tmp/peer/lf/bin/python   # smoke test here
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _runner import fmt, interleave, load_results, median, ratio, run_one, table  # noqa: E402

ORDER = ["mm_full_pack", "hf_full", "lf_full_neat", "lf_full_pack", "hf_full_liger", "lf_full_neat_liger"]
RATIOS = [("mm_full_pack", "hf_full"), ("mm_full_pack", "hf_full_liger"), ("mm_full_pack", "lf_full_neat"),
          ("mm_full_pack", "lf_full_pack"), ("mm_full_pack", "lf_full_neat_liger")]
H100_BF16_PEAK = 989.4  # TFLOP/s, dense, H100 SXM datasheet (the H200 has the same)


def run_command(name: str, a, model: Path, out: Path) -> tuple[list, dict]:
    messages = a.assets.resolve() / "data/messages.jsonl"
    if name.startswith("mm_"):
        overrides = {"model": {"path": str(model), "dtype": "bfloat16" if a.device != "cpu" else "float32"},
                     "data": {"datasets": [{"path": str(messages), "format": "openai"}], "max_length": a.max_length},
                     "train": {"precision": "bf16" if a.device != "cpu" else "fp32", "micro_batch_size": 1}}
        cmd = [sys.executable, HERE.parent / "train_throughput.py", "--worker", "mm_full_pack", "--assets", str(model),
               "--steps", str(a.steps), "--device", "auto" if a.device != "cpu" else "cpu",
               "--peak-tflops", str(a.peak_tflops)]
        return cmd, {"BENCH_RECIPE": json.dumps(overrides), "MMTUNE_CACHE": str(out / f"mmcache_{name}"),
                     "BENCH_WORK_DIR": str(out / name)}
    if name.startswith("hf_"):
        cmd = [sys.executable, HERE / "hf_baseline.py", str(model), str(messages), str(out / name),
               "--steps", str(a.steps), "--micro-batch", str(a.unpacked_micro_batch), "--max-length", str(a.max_length)]
        return cmd + (["--liger"] if name.endswith("_liger") else []) + (["--cpu"] if a.device == "cpu" else []), {}
    packing = {"lf_full_neat": ["packing=true", "neat_packing=true"], "lf_full_pack": ["packing=true"],
               "lf_full_neat_liger": ["packing=true", "neat_packing=true", "enable_liger_kernel=true"]}[name]
    device = ["bf16=true", "use_cpu=false"] if a.device != "cpu" else ["use_cpu=true"]
    cmd = [a.lf_python, HERE / "lf_run.py", a.peer / "run_lf.py", a.peer / "lf_sft.yaml", f"model_name_or_path={model}",
           f"dataset_dir={a.assets.resolve() / 'data'}", f"output_dir={out / name}", f"cutoff_len={a.max_length}",
           "per_device_train_batch_size=1", f"max_steps={a.steps}", "learning_rate=1.0e-5", "finetuning_type=full",
           *packing, *device]
    env = {"PYTHONPATH": a.lf_site} if a.lf_site else {}
    return cmd, env


def dense_mfu(result: dict, params: int, peak_tflops: float) -> float | None:
    rt = result.get("train_runtime_s")
    return round(6 * params * result["real_tokens"] / rt / (peak_tflops * 1e12), 4) if rt else None


def summarize(path: Path, params: int, peak_tflops: float, title: str) -> str:
    runs = load_results(path)
    names = [n for n in ORDER if n in runs]
    for rs in runs.values():
        for r in rs:
            r["mfu_6nt"] = dense_mfu(r, params, peak_tflops)
    header = ["run", "runs", "real tok/s median (each)", "pad fraction", "train s", "prep s", "peak GPU MiB (allocated)",
              "MFU 6NT", "mmtune MFU with attention", "steady tok/s", "steady MFU", "train_loss"]
    rows = []
    for n in names:
        rs = runs[n]
        each = ", ".join(f"{r['real_tok_s']:.0f}" for r in rs)
        rows.append([n, str(len(rs)), f"{fmt(median(rs, 'real_tok_s'))} ({each})", fmt(median(rs, "pad_fraction"), 3),
                     fmt(median(rs, "train_runtime_s"), 1), fmt(median(rs, "prep_s"), 1), fmt(median(rs, "cuda_peak_mem_mb")),
                     fmt(median(rs, "mfu_6nt"), 3), fmt(median(rs, "mfu"), 3), fmt(median(rs, "steady_real_tok_s")),
                     fmt(median(rs, "steady_mfu"), 3), fmt(median(rs, "final_loss"), 4)])
    text = [title, "", table(header, rows), ""]
    ratio_rows = [[f"{x} / {y}", ratio(median(runs[x], "real_tok_s"), median(runs[y], "real_tok_s")),
                   ratio(median(runs[x], "cuda_peak_mem_mb"), median(runs[y], "cuda_peak_mem_mb"))]
                  for x, y in RATIOS if x in runs and y in runs]
    if ratio_rows:
        text += ["Ratios of medians (tok/s: > 1 mmtune faster; memory: < 1 mmtune smaller)", "",
                 table(["mmtune / peer", "real tok/s", "peak GPU memory"], ratio_rows)]
    return "\n".join(text)


def main() -> None:
    from models import SHAPES, build, qwen2_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="0.5b", choices=[*SHAPES, "tiny"], help="tiny: the kit's 4M model (smoke test)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--max-length", type=int, default=4096)
    p.add_argument("--unpacked-micro-batch", type=int, default=16)
    p.add_argument("--only", default=".", help="regex over run names")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--peak-tflops", type=float, default=H100_BF16_PEAK)
    p.add_argument("--assets", type=Path, default=Path(".gpu/assets"))
    p.add_argument("--peer", type=Path, default=Path(".gpu/peer"), help="the kit's run_lf.py and lf_sft.yaml")
    p.add_argument("--lf-python", default=sys.executable)
    p.add_argument("--lf-site", default=os.environ.get("LF_SITE", ""), help="PYTHONPATH for the LLaMA-Factory runs")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu_out")))
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_speed"))
    a = p.parse_args()
    if a.size == "tiny":
        model = Path("/tmp/peer/assets") if a.device == "cpu" else build("0.5b", Path("/tmp/gpu_models/qwen2-0.5b"), a.assets)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model)
    else:
        model = build(a.size, Path(f"/tmp/gpu_models/qwen2-{a.size}"), a.assets)
        config = qwen2_config(a.size)
    from mmtune.estimate import count_model

    params = count_model(config).params
    work = a.work / a.size
    work.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    names = [n for n in ORDER if re.search(a.only, n)]
    print(f"runs {names} x {a.reps}, {params / 1e9:.3f} B parameters, results {work / 'results.jsonl'}", flush=True)
    for rep, name in interleave(names, a.reps):
        cmd, env = run_command(name, a, model, work)
        env.update({"HF_DATASETS_CACHE": str(work / f"cache_{name}"), "PYTHONUNBUFFERED": "1"})
        if a.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        fresh = (work / name, work / f"cache_{name}", work / f"mmcache_{name}")
        run_one(name, cmd, rep=rep, out_dir=work, env=env, cwd=work, fresh=fresh, timeout=900)
    title = (f"Qwen2-{a.size} shape ({params / 1e9:.3f} B), context {a.max_length}, full fine-tune, {a.steps} steps, "
             f"peak {a.peak_tflops:g} TFLOP/s, {time.strftime('%Y-%m-%d %H:%M')}")
    results = work / "results.jsonl"
    if results.exists():
        text = summarize(results, params, a.peak_tflops, title)
        print("\n" + text)
        (a.out / f"speed_{a.size}.md").write_text(text + "\n")
        shutil.copy(results, a.out / f"speed_{a.size}.jsonl")
    with tarfile.open(a.out / f"speed_{a.size}_logs.tar.gz", "w:gz") as tar:
        tar.add(work / "logs", arcname=f"speed_{a.size}_logs")


if __name__ == "__main__":
    main()
