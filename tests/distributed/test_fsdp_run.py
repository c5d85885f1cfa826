"""PyTorch FSDP through the Trainer.

On CPU it cannot run: accelerate (1.15) switches its FSDP plugin on only for GPU-like distributed
states (AcceleratorState sets DistributedType.FSDP inside the MULTI_GPU/NPU/XPU/HPU/... branch), a
CPU run is MULTI_CPU, and the Trainer would silently train with plain, unsharded DDP. (torch's own
FSDP2 `fully_shard` does run on CPU with gloo; it is accelerate that does not use it there.) So on
CPU mmtune refuses `--fsdp` with a one-line error, which is tested here; the 2-process FSDP runs
(LoRA with shard_grad_op, full with full_shard: DTensor shards, every decoder layer wrapped, full
state-dict checkpoints exported to HF with the trained model's logits) need 2 CUDA GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmtune.config.load import load_config
from mmtune.errors import MmtuneError
from mmtune.export.to_hf import checkpoint_to_hf

CASES = [("shard_grad_op", "lora"), ("full_shard", "full")]


def test_fsdp_is_refused_on_cpu(tiny_qwen2_dir, dist_data, dist, tmp_path):
    from mmtune.cli.main import main
    from mmtune.config.strategy import Strategy
    from mmtune.train.run import run_training

    recipe = dist.short_recipe(tiny_qwen2_dir, dist_data)
    with pytest.raises(MmtuneError, match="--fsdp needs CUDA GPUs"):
        run_training(recipe, tmp_path / "w", strategy=Strategy(fsdp="full_shard"))
    path = dist.write_recipe(tmp_path / "r.yaml", recipe)
    assert main(["train", str(path), "--work-dir", str(tmp_path / "w2"), "--fsdp", "full_shard"]) == 2


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory, tiny_qwen2_dir, dist_data, dist):
    tmp = tmp_path_factory.mktemp("fsdp")
    runs = []
    for mode, method in CASES:
        recipe = dist.short_recipe(tiny_qwen2_dir, dist_data, method={"type": method},
                                   train={"lr": 2e-3 if method == "lora" else 1e-3, "device": "cuda"})
        path = dist.write_recipe(tmp / f"{mode}-{method}.yaml", recipe)
        runs.append({"recipe": str(path), "work_dir": str(tmp / f"{mode}-{method}"), "fsdp": mode})
    dist.torchrun_worker({"runs": runs, "probe": dist.PROBE_IDS}, tmp, tmp / "cache")
    return dict(zip(CASES, runs))


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP through accelerate needs 2 CUDA GPUs (see module doc)")
@pytest.mark.parametrize("mode,method", CASES)
def test_fsdp_run_shards_trains_and_exports(fsdp_runs, mode, method, tmp_path, dist):
    run = fsdp_runs[mode, method]
    recipe = load_config(run["recipe"])
    work = Path(run["work_dir"])
    for rank in (0, 1):
        seen = json.loads((work / f"rank{rank}.json").read_text())
        assert seen["sharded"], seen
        assert "FSDPQwen2DecoderLayer" in seen["fsdp_modules"], seen
    losses = [p["loss"] for p in json.loads((work / "loss.json").read_text())]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert len((work / "samples.jsonl").read_text().splitlines()) == 3  # generated on both ranks, written by rank 0

    for source in (work / "checkpoint-4", work / "final"):
        out = checkpoint_to_hf(recipe, source, tmp_path / source.name)
        want = torch.tensor(json.loads((work / "probe_logits.json").read_text()))
        got = dist.hf_logits(out, base=recipe.model.path if method == "lora" else None)
        assert torch.allclose(got, want.to(got.dtype), atol=1e-4), (source, (got - want).abs().max())
