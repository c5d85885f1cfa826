"""Peak tensor memory of real `mmtune train` steps on CPU, next to `mmtune estimate-memory`.

On CPU, torch's memory profiler records every tensor a step allocates and frees: parameters,
optimizer states (DeepSpeed's fp32 master weights and partitions included), activations, logits,
gradients and DeepSpeed's buffers: what `torch.cuda.max_memory_allocated` measures on a GPU, without
the CUDA context and the caching allocator's slack (the estimate's "overhead" part, left out here).
Each case trains a few steps through `run_training` (DeepSpeed in one process under torchrun, ZeRO
partitioning over one rank) and profiles step 3 (optimizer states exist by then).

    .venv/bin/python bench/memory_profile_cpu.py                  # all cases, table at the end
    .venv/bin/python bench/memory_profile_cpu.py --only zero3     # regex over case names
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [(strategy, method) for strategy in ("none", "zero2", "zero3") for method in ("lora", "full")]
PROFILED_STEP = 3


def shape():
    from transformers import Qwen2Config

    return Qwen2Config(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                       num_key_value_heads=2, vocab_size=32000, tie_word_embeddings=True, max_position_embeddings=2048)


def build_model(root: Path) -> Path:
    """A Qwen2-shaped model (random weights) with the tiny tokenizer mmtune builds for its tests."""
    import torch
    from transformers import AutoModelForCausalLM

    from mmtune.testing.tiny import tiny_lm_dir

    out = root / "model"
    if not (out / "model.safetensors").exists():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(shape()).to(torch.bfloat16).save_pretrained(out)
        tok = tiny_lm_dir("qwen2")
        for f in tok.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens")) or f.suffix == ".jinja":
                (out / f.name).write_bytes(f.read_bytes())
    return out


def recipe_dict(model: Path, data: Path, method: str, max_length: int) -> dict:
    return {
        "model": {"path": str(model), "dtype": "bfloat16"},
        "data": {"datasets": [{"path": str(data)}], "template": "chatml", "max_length": max_length,
                 "pack_to_max_length": True, "overlong": "truncate"},
        "method": {"type": method, "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}},
        "train": {"max_steps": PROFILED_STEP, "micro_batch_size": 1, "gradient_accumulation": 1, "lr": 1e-5,
                  "precision": "bf16", "logging_steps": 1, "save_steps": 0, "device": "cpu"},
        "eval": {"evaluation_inputs": []},
    }


def worker(case: str, root: Path, max_length: int) -> None:
    """Inside torchrun: train the case, profile step PROFILED_STEP, print `RESULT {json}`."""
    import torch
    from transformers import TrainerCallback

    from mmtune.config.load import validate_recipe
    from mmtune.testing.profiling import ProfiledPeak
    from mmtune.config.strategy import Strategy
    from mmtune.train.run import run_training

    strategy, method = case.split("-")
    recipe = validate_recipe(recipe_dict(root / "model", root / "data.jsonl", method, max_length), where=case)

    class ProfileOneStep(TrainerCallback):
        def __init__(self):
            self.profiled = ProfiledPeak()

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == PROFILED_STEP - 1:
                self.profiled.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == PROFILED_STEP:
                self.profiled.__exit__(None, None, None)

    profile_step = ProfileOneStep()
    how = Strategy.from_flags(strategy if strategy != "none" else None)
    run_training(recipe, root / f"work-{case}", strategy=how, extra_callbacks=[profile_step])
    measured = profile_step.profiled.peak
    print("RESULT " + json.dumps({"case": case, "measured_mib": round(measured / 2**20, 1), "torch": torch.__version__}),
          flush=True)


def estimate_mib(case: str, root: Path, max_length: int) -> tuple[float, dict]:
    """The estimate less its CUDA overhead, with the CPU's loss chunk (computed here, not in the
    worker: after a ZeRO-3 run transformers would build even the meta model the ZeRO-3 way)."""
    import mmtune.models.chunked_loss as chunked
    from mmtune.config.load import validate_recipe
    from mmtune.estimate import estimate_for_recipe

    strategy, method = case.split("-")
    recipe = validate_recipe(recipe_dict(root / "model", root / "data.jsonl", method, max_length), where=case)
    chunked.CHUNK_ELEMENTS = chunked.CPU_CHUNK_ELEMENTS  # the chunk the CPU step used
    est = estimate_for_recipe(recipe, deepspeed=strategy if strategy != "none" else None)
    parts = {k: round(v / 2**20, 1) for k, v in est.parts.items() if k != "overhead" and v}
    return (est.total - est.parts["overhead"]) / 2**20, parts


def write_data(path: Path, n: int = 40) -> None:
    """Conversations longer than any row (truncated to it): every row holds max_length tokens, nearly
    all trained, the case the estimate describes (it assumes full rows)."""
    import random

    rng = random.Random(0)
    words = "the a model learns data of and to in is for on with as by that packs rows tokens".split()
    with path.open("w") as f:
        for _ in range(n):
            q = " ".join(rng.choice(words) for _ in range(5))
            a = " ".join(rng.choice(words) for _ in range(4000))
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=".")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    root = a.root or Path(tempfile.mkdtemp(prefix="mmtune-memprof-"))
    if a.worker:
        worker(a.worker, root, a.max_length)
        return
    build_model(root)
    write_data(root / "data.jsonl")
    rows = []
    env = {**os.environ, "MMTUNE_CACHE": str(root / "cache"), "CUDA_VISIBLE_DEVICES": ""}
    for strategy, method in CASES:
        case = f"{strategy}-{method}"
        if not re.search(a.only, case):
            continue
        t0 = time.time()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               str(Path(__file__).resolve()), "--worker", case, "--root", str(root), "--max-length", str(a.max_length)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        result = next((json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")), None)
        if result is None:
            print(f"{case}: FAILED\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
            continue
        result["seconds"] = round(time.time() - t0, 1)
        est, parts = estimate_mib(case, root, a.max_length)
        result.update(estimate_mib=round(est, 1), ratio=round(est / result["measured_mib"], 3), parts_mib=parts)
        print(json.dumps(result), flush=True)
        rows.append(result)
    cfg = shape()
    print(f"\nQwen2 shape h={cfg.hidden_size}, {cfg.num_hidden_layers} layers, vocab {cfg.vocab_size}; packed rows of "
          f"{a.max_length} tokens, micro-batch 1, bf16, CPU, one process; step {PROFILED_STEP} profiled\n")
    print("| case | measured peak MiB | estimate MiB (no CUDA overhead) | estimate / measured |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['measured_mib']:.0f} | {r['estimate_mib']:.0f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
