"""Helpers for the multi-process tests: recipes on disk, a torchrun runner, the probe input.

Tests reach the helpers through the `dist` fixture (this directory is not a package)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmtune.config.load import dump_config
from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
from mmtune.train.build_locks import clear_stale_build_locks

HERE = Path(__file__).parent
RUN_TIMEOUT = 900  # seconds for one torchrun launch; a hang (a collective one rank never joins) fails


def worker_env(cache: Path) -> dict:
    """Environment for the subprocesses: their own dataset cache, one thread per process (2 cores)."""
    env = dict(os.environ)
    env.update(MMTUNE_CACHE=str(cache), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    for var in ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(var, None)
    return env


def run_logged(cmd: list[str], env: dict, log_file: Path) -> subprocess.CompletedProcess:
    with log_file.open("w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT)
    if proc.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(f"{' '.join(cmd[:6])} ... exited {proc.returncode}; log tail:\n{tail}")
    return proc


def torchrun_worker(spec: dict, tmp: Path, cache: Path, nproc: int = 2) -> None:
    """Run tests/distributed/dist_worker.py in `nproc` gloo workers with the given spec."""
    # A build killed with an earlier suite run leaves its lock and DeepSpeed's op builds would wait
    # on it until RUN_TIMEOUT; nothing else builds extensions here, so a 2-minute-old lock is stale.
    clear_stale_build_locks(stale_after_s=120)
    spec_file = tmp / "spec.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(HERE / "dist_worker.py"), str(spec_file)]
    run_logged(cmd, worker_env(cache), tmp / "torchrun.log")


def write_recipe(path: Path, recipe) -> Path:
    path.write_text(dump_config(recipe), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dist_data(tmp_path_factory) -> Path:
    return write_self_cognition(tmp_path_factory.mktemp("dist-data") / "self.jsonl", repeat=1)


def short_recipe(model_dir: Path, data: Path, **sections):
    """30 unpacked samples, 4 optimizer steps on a global batch of 4: enough to move the weights."""
    base = {
        "data": {"pack_to_max_length": False},
        "train": {"max_steps": 4, "save_steps": 2, "logging_steps": 1, "lr": 2e-3, "micro_batch_size": 2},
        "eval": {"evaluation_inputs": ["who are you?"], "every_n_steps": 2, "max_new_tokens": 4},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return self_cognition_recipe(model_dir, data, **base)


PROBE_IDS = [1, 98, 96, 272, 212, 100, 85, 92, 726, 573, 44, 2, 212, 1, 628]


def hf_logits(model_dir: Path, base: Path | None = None):
    """Logits of an exported directory on PROBE_IDS, loaded with plain transformers (+ peft)."""
    import torch
    from transformers import AutoModelForCausalLM

    if base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(model_dir))
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor([PROBE_IDS])).logits[0]


class DistHelpers:
    PROBE_IDS = PROBE_IDS
    worker_env = staticmethod(worker_env)
    run_logged = staticmethod(run_logged)
    torchrun_worker = staticmethod(torchrun_worker)
    write_recipe = staticmethod(write_recipe)
    short_recipe = staticmethod(short_recipe)
    hf_logits = staticmethod(hf_logits)


@pytest.fixture(scope="session")
def dist() -> type[DistHelpers]:
    return DistHelpers
