"""SIGTERM and Ctrl-C end a run at the next step boundary with a resumable checkpoint and one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from mmtune.config.load import dump_config
from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
from mmtune.train.checkpoints import resolve_resume

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_qwen2_dir):
    tmp = tmp_path_factory.mktemp("interrupt")
    data = write_self_cognition(tmp / "self.jsonl", repeat=1)
    recipe = self_cognition_recipe(tiny_qwen2_dir, data, train={"max_steps": 400, "save_steps": 0, "logging_steps": 1},
                                   eval={"evaluation_inputs": []})
    path = tmp / "r.yaml"
    path.write_text(dump_config(recipe))
    return path


def train(config, work, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mmtune", "train", str(config), "--work-dir", str(work), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_step(work, step: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = work / "train.log"
        if log.exists() and re.search(rf"step {step}/400", log.read_text()):
            return
        time.sleep(0.2)
    raise AssertionError("training did not reach step %d" % step)


@pytest.mark.parametrize("signum, name, code", [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "Ctrl-C", 130)])
def test_a_signal_saves_a_checkpoint_and_the_run_resumes_from_it(config, tmp_path, signum, name, code):
    work = tmp_path / "run"
    proc = train(config, work)
    wait_for_step(work, 3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == code, err[-2000:]
    match = re.search(rf"mmtune: error: stopped by {name} after step (\d+); checkpoint-(\d+) holds the run", err)
    assert match and match.group(1) == match.group(2), err[-2000:]
    step = int(match.group(1))
    assert step >= 3 and "Traceback" not in err
    assert not (work / "final").exists()
    assert resolve_resume(work, "auto") == str(work / f"checkpoint-{step}")  # complete, so auto picks it

    resumed = train(config, work, "--resume", "auto", "--set", f"train.max_steps={step + 2}")
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err[-2000:]
    steps = [p["step"] for p in json.loads((work / "loss.json").read_text())]
    assert steps == list(range(1, step + 3))  # the same curve, continued after the saved step
