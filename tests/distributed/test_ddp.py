"""`NPROC_PER_NODE=2 mmtune train` on CPU (gloo): the loss curve equals single-process training on
the same global batch, logs and sample chats come from rank 0 only, the data is tokenized once, and
the 2-process checkpoint resumes in a 1-process run on the same curve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmtune.train.run import run_training

pytestmark = pytest.mark.slow
STEPS = 6


def curve(work_dir) -> dict[int, float]:
    return {p["step"]: p["loss"] for p in json.loads((work_dir / "loss.json").read_text())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_qwen2_dir, dist_data, dist):
    """The same recipe as 2 processes x micro-batch 2 (through the CLI) and 1 process x micro-batch 4."""
    tmp = tmp_path_factory.mktemp("ddp")
    recipe = dist.short_recipe(tiny_qwen2_dir, dist_data, train={"max_steps": STEPS, "save_steps": 3},
                               eval={"every_n_steps": 3})
    path = dist.write_recipe(tmp / "recipe.yaml", recipe)
    env = dict(dist.worker_env(tmp / "cache"), NPROC_PER_NODE="2")
    cmd = [sys.executable, "-m", "mmtune", "train", str(path), "--work-dir", str(tmp / "ddp")]
    dist.run_logged(cmd, env, tmp / "ddp.log")
    single = recipe.model_copy(update={"train": recipe.train.model_copy(update={"micro_batch_size": 4})})
    result = run_training(single, tmp / "single")
    return {"tmp": tmp, "recipe": single, "ddp": tmp / "ddp", "single": result.work_dir, "log": tmp / "ddp.log"}


def test_two_processes_follow_the_single_process_loss_curve(runs):
    ddp, single = curve(runs["ddp"]), curve(runs["single"])
    assert sorted(ddp) == list(range(1, STEPS + 1))
    for step in ddp:
        assert ddp[step] == pytest.approx(single[step], rel=1e-4), (step, ddp, single)
    assert ddp[STEPS] < ddp[1]


def test_rank_zero_alone_logs_and_answers(runs):
    log = (runs["ddp"] / "train.log").read_text()
    assert log.count("parallelism: 2 process(es), data parallel (DDP)") == 1
    assert log.count(f"step {STEPS}/{STEPS}  loss") == 1
    samples = (runs["ddp"] / "samples.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in samples] == [0, 3, 6]
    # the launcher runs plain `torchrun ... -m mmtune train`; the workers, which inherit NPROC_PER_NODE, do not launch again
    assert runs["log"].read_text().count("launching -m torch.distributed.run --standalone --nproc_per_node=2 -m mmtune train") == 1
    assert sorted(p.name for p in (runs["ddp"] / "checkpoint-3").glob("rng_state_*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]


def test_data_is_tokenized_once(runs):
    text = runs["log"].read_text()
    assert text.count("tokenizing:") >= 1  # one rank's progress bar
    entries = [p for p in (runs["tmp"] / "cache" / "datasets").iterdir() if p.is_dir()]
    assert len(entries) == 1  # one cache entry, no leftover temp dir of a second encoder


def test_two_process_checkpoint_resumes_in_one_process(runs, tmp_path):
    resumed = run_training(runs["recipe"], tmp_path / "resumed", resume=str(runs["ddp"] / "checkpoint-3"))
    got, want = curve(resumed.work_dir), curve(runs["ddp"])
    for step in range(4, STEPS + 1):
        assert got[step] == pytest.approx(want[step], rel=1e-4), (step, got, want)


def test_tokenization_runs_once_across_processes(tiny_qwen2_dir, dist_data, dist, tmp_path):
    """Two processes of one job ask for the same data at once: one tokenizes, the other waits on the
    cache lock (no timeout) and loads the cache."""
    recipe = dist.short_recipe(tiny_qwen2_dir, dist_data)
    path = dist.write_recipe(tmp_path / "r.yaml", recipe)
    code = ("import json, sys; from mmtune.config.load import load_config; from mmtune.models.load import load_tokenizer;"
            "from mmtune.builders.data import encoded_data; r = load_config(sys.argv[1]);"
            "_, stats = encoded_data(r, load_tokenizer(r.model), world_size=2); print(json.dumps(stats.from_cache))")
    env = dict(dist.worker_env(tmp_path / "cache"), WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], env=dict(env, RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in procs]
    assert sorted(outs) == ["false", "true"]
