"""Measured peak GPU memory next to `mmtune estimate-memory`'s prediction (issue #5, item 6).

A Qwen2-0.5B-shaped model (bench/gpu/models.py), packed rows of --max-length tokens, micro-batch 1,
bf16, a few steps of `mmtune train` per case: LoRA and full, each without DeepSpeed and with ZeRO-2
and ZeRO-3, one GPU (torchrun, 1 process: ZeRO still partitions, over one rank). Measured per run:

- device: the most memory `nvidia-smi` showed in use during the run, less what it showed before
  (polled every 100 ms): CUDA context + torch's reserved pool + anything outside torch (NCCL);
  this is what has to fit on the card, and what the estimate predicts;
- allocated / reserved: the run's own closing log line (torch.cuda.max_memory_allocated/reserved).

    python3 bench/gpu/memory.py --out $OUT          # on the GPU machine, via bench/gpu/check.sh memory
    .venv/bin/python bench/gpu/memory.py --cpu --model /tmp/peer/assets --assets /tmp/peer/assets \
        --max-length 512 --steps 2 --out /tmp/mem_smoke  # smoke test of the plumbing here (no GPU figures)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CASES = [(strategy, method) for strategy in ("none", "zero2", "zero3") for method in ("lora", "full")]
PEAK_RE = re.compile(r"peak memory: GPU ([0-9.]+) GiB allocated, ([0-9.]+) GiB reserved")


def recipe(model: Path, assets: Path, method: str, max_length: int, steps: int, cpu: bool = False) -> dict:
    return {
        "model": {"path": str(model), "dtype": "float32" if cpu else "bfloat16", "attn_implementation": "sdpa"},
        "data": {"datasets": [{"path": str(assets / "data/messages.jsonl"), "format": "openai"}], "template": "chatml",
                 "max_length": max_length, "pack_to_max_length": True, "overlong": "truncate"},
        "method": {"type": method, "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}},
        "train": {"max_steps": steps, "micro_batch_size": 1, "gradient_accumulation": 1, "lr": 1e-5,
                  "precision": "fp32" if cpu else "bf16", "logging_steps": 1, "save_steps": 0,
                  "device": "cpu" if cpu else "cuda"},
        "eval": {"evaluation_inputs": []},
    }


class SmiPeak:
    """Poll nvidia-smi's memory.used (MiB) in the background; .peak after stop()."""

    def __init__(self):
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                      "-lms", "100"], stdout=subprocess.PIPE, text=True)
        self.peak = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.peak = max(self.peak, int(line))

    def stop(self) -> int:
        self.proc.terminate()
        self.thread.join(timeout=5)
        return self.peak


def smi_used() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    return int(out.split()[0])


def estimate_gib(recipe_path: Path, strategy: str) -> tuple[float, dict]:
    from mmtune.config.load import load_config
    from mmtune.estimate import estimate_for_recipe

    est = estimate_for_recipe(load_config(str(recipe_path)), deepspeed=None if strategy == "none" else strategy)
    return est.gib, {k: round(v / 2**30, 3) for k, v in est.parts.items()}


def main() -> None:
    import yaml

    from models import build

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu_out")))
    p.add_argument("--assets", type=Path, default=Path(".gpu/assets"))
    p.add_argument("--size", default="0.5b")
    p.add_argument("--max-length", type=int, default=4096)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--only", default=".", help="regex over case names (STRATEGY-METHOD)")
    p.add_argument("--cpu", action="store_true", help="smoke test without a GPU (no memory figures)")
    p.add_argument("--model", type=Path, help="an existing model dir instead of building the Qwen2 shape")
    a = p.parse_args()
    work = Path("/tmp/gpu_memory")
    work.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    model = a.model or build(a.size, Path(f"/tmp/gpu_models/qwen2-{a.size}"), a.assets)
    env = {**os.environ, "MMTUNE_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    rows = []
    for strategy, method in CASES:
        name = f"{strategy}-{method}"
        if not re.search(a.only, name):
            continue
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe(model, a.assets.resolve(), method, a.max_length, a.steps, a.cpu)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "mmtune", "train", str(path), "--work-dir", str(work / name)]
        cmd += [] if strategy == "none" else ["--deepspeed", strategy]
        before = 0 if a.cpu else smi_used()
        smi = None if a.cpu else SmiPeak()
        t0 = time.time()
        log_path = a.out / "memory_logs.txt"
        with open(log_path, "a") as log:
            log.write(f"\n=== {name}: {' '.join(cmd)}\n")
            log.flush()
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        peak = smi.stop() if smi else 0
        train_log = (work / name / "train.log").read_text() if (work / name / "train.log").exists() else ""
        m = PEAK_RE.search(train_log)
        est, parts = estimate_gib(path, strategy)
        row = {"case": name, "rc": rc, "seconds": round(time.time() - t0, 1), "estimate_gib": round(est, 2),
               "device_gib": round((peak - before) / 1024, 2), "allocated_gib": float(m.group(1)) if m else None,
               "reserved_gib": float(m.group(2)) if m else None, "estimate_parts_gib": parts,
               "model": model.name if a.model else f"qwen2-{a.size}", "max_length": a.max_length}
        row["estimate_over_device"] = round(est / row["device_gib"], 3) if row["device_gib"] > 0 else None
        tensors = est - parts["overhead"]  # the part bench/memory_profile_cpu.py checks on CPU
        row["tensors_estimate_gib"] = round(tensors, 2)
        row["tensors_over_allocated"] = round(tensors / row["allocated_gib"], 3) if row["allocated_gib"] else None
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(a.out / "memory.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    print(f"\n{rows[0]['model'] if rows else a.size}, packed rows of {a.max_length} tokens, micro-batch 1, bf16, 1 GPU\n")
    print("| case | estimate GiB | measured (nvidia-smi) GiB | estimate / measured | allocated GiB | reserved GiB "
          "| estimate less overhead / allocated |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        flag = "" if r["rc"] == 0 else f" (FAILED rc={r['rc']})"
        print(f"| {r['case']}{flag} | {r['estimate_gib']:.2f} | {r['device_gib']:.2f} | {r['estimate_over_device']} | "
              f"{r['allocated_gib']} | {r['reserved_gib']} | {r['tensors_over_allocated']} |")


if __name__ == "__main__":
    main()
