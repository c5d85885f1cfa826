"""DeepSpeed ZeRO-2 and ZeRO-3, LoRA and full, in 2 gloo processes on CPU; every run exports to a
plain HF directory whose logits equal the trained model's, and ZeRO-3 shards (no gathered weights)
consolidate to the same weights.

One torchrun launch runs the five trainings one after another (process start-up dominates on CPU);
zero3_offload also runs the optimizer step with DeepSpeed's CPU Adam. The first DeepSpeed run on a
machine JIT-compiles DeepSpeed's shared-memory op and CPU Adam (about 1-5 minutes on 2 busy cores,
then cached under ~/.cache/torch_extensions)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed", reason="DeepSpeed tests need the deepspeed extra: pip install 'mmtune[deepspeed]'")

from mmtune.config.load import load_config  # noqa: E402
from mmtune.export.to_hf import checkpoint_to_hf  # noqa: E402
from mmtune.rundir import WEIGHT_FILES  # noqa: E402

pytestmark = pytest.mark.slow
CASES = [("zero2", "lora"), ("zero2", "full"), ("zero3", "lora"), ("zero3", "full"), ("zero3_offload", "lora")]


@pytest.fixture(scope="module")
def ds_runs(tmp_path_factory, tiny_qwen2_dir, dist_data, dist):
    tmp = tmp_path_factory.mktemp("deepspeed")
    runs = []
    for stage, method in CASES:
        lr = 2e-3 if method == "lora" else 1e-3
        recipe = dist.short_recipe(tiny_qwen2_dir, dist_data, method={"type": method}, train={"lr": lr})
        path = dist.write_recipe(tmp / f"{stage}-{method}.yaml", recipe)
        runs.append({"recipe": str(path), "work_dir": str(tmp / f"{stage}-{method}"), "deepspeed": stage})
    dist.torchrun_worker({"runs": runs, "probe": dist.PROBE_IDS}, tmp, tmp / "cache")
    return {(stage, method): run for (stage, method), run in zip(CASES, runs)}


@pytest.mark.parametrize("stage,method", CASES)
def test_deepspeed_run_trains_and_exports_the_trained_weights(ds_runs, stage, method, tmp_path, dist):
    run = ds_runs[stage, method]
    recipe = load_config(run["recipe"])
    work = Path(run["work_dir"])
    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["sharded"] == stage.startswith("zero3") for r in ranks), ranks  # ZeRO-3 partitions the parameters
    losses = [p["loss"] for p in json.loads((work / "loss.json").read_text())]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert len((work / "samples.jsonl").read_text().splitlines()) == 3  # steps 0, 2, 4; rank 0 only
    log = (work / "train.log").read_text()  # the memory savers step aside where parameters are sharded
    assert ("fused layers off" in log) == ("chunked loss off" in log) == stage.startswith("zero3"), log[-2000:]
    assert ("fused layers: 9 RMSNorm and 4 SwiGLU MLP" in log) == (not stage.startswith("zero3"))

    out = checkpoint_to_hf(recipe, work / "final", tmp_path / "hf")
    want = torch.tensor(json.loads((work / "probe_logits.json").read_text()))
    got = dist.hf_logits(out, base=recipe.model.path if method == "lora" else None)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_zero3_shards_without_gathered_weights_convert_to_hf(ds_runs, method, tmp_path, dist):
    """A ZeRO-3 checkpoint whose config did not gather 16-bit weights on save holds only per-rank
    shards (`global_stepN/`); `convert to-hf` rebuilds them with DeepSpeed's zero_to_fp32."""
    run = ds_runs["zero3", method]
    recipe = load_config(run["recipe"])
    shards = tmp_path / "checkpoint-4"
    shutil.copytree(Path(run["work_dir"]) / "checkpoint-4", shards)
    for name in (*WEIGHT_FILES, "adapter_model.safetensors"):
        (shards / name).unlink(missing_ok=True)
    assert any(shards.glob("global_step*"))

    from_shards = checkpoint_to_hf(recipe, shards, tmp_path / "from-shards")
    gathered = checkpoint_to_hf(recipe, Path(run["work_dir"]) / "checkpoint-4", tmp_path / "gathered")
    base = recipe.model.path if method == "lora" else None
    assert torch.allclose(dist.hf_logits(from_shards, base), dist.hf_logits(gathered, base), atol=1e-6)


def test_cli_offload_run_exits_cleanly_past_a_stale_build_lock(tmp_path, tiny_qwen2_dir, dist_data, dist):
    """`NPROC_PER_NODE=2 mmtune train --deepspeed zero3_offload` ends with exit 0 and none of
    DeepSpeed's per-step deprecation lines (once, left to interpreter exit, a worker aborted in the
    teardown and torchrun called the finished run failed; mmtune now ends the process group itself),
    and a build lock a killed build left behind is removed with a warning instead of hanging the run."""
    import os
    import time

    from torch.utils.cpp_extension import _get_build_directory

    probe_dir = Path(_get_build_directory("mmtune_stale_lock_probe", verbose=False))
    lock = probe_dir / "lock"
    lock.touch()
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    try:
        recipe = dist.short_recipe(tiny_qwen2_dir, dist_data, method={"type": "lora"},
                                   train={"max_steps": 2, "save_steps": 0})
        path = dist.write_recipe(tmp_path / "recipe.yaml", recipe)
        env = dict(dist.worker_env(tmp_path / "cache"), NPROC_PER_NODE="2")
        cmd = [sys.executable, "-m", "mmtune", "train", str(path), "--work-dir", str(tmp_path / "run"),
               "--deepspeed", "zero3_offload"]
        dist.run_logged(cmd, env, tmp_path / "cli.log")  # fails the test on a non-zero exit, with the log tail
        text = (tmp_path / "cli.log").read_text()
        assert "terminate called" not in text and "done: final model in" in text
        assert "reduce_scatter_tensor` is deprecated" not in text
        assert not lock.exists()
        assert f"removed {lock}" in (tmp_path / "run" / "train.log").read_text()
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
