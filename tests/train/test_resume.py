"""`--resume auto` after a crash continues the same loss curve as an uninterrupted run."""

from __future__ import annotations

import json

import pytest
from transformers import TrainerCallback

from mmtune.errors import MmtuneError
from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
from mmtune.train.checkpoints import resolve_resume
from mmtune.train.run import run_training


class CrashAt(TrainerCallback):
    """Stands in for a crash: training stops right after `step` (checkpoint saved at that step)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def losses(log_history) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in log_history if "loss" in h}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_qwen2_dir):
    data = write_self_cognition(tmp_path_factory.mktemp("resume") / "self.jsonl", repeat=1)
    return self_cognition_recipe(
        tiny_qwen2_dir, data,
        train={"max_steps": 12, "save_steps": 6, "logging_steps": 1, "lr": 2e-3},
        eval={"evaluation_inputs": []},
    )


def test_resume_auto_continues_the_same_loss_curve(recipe, tmp_path):
    straight = run_training(recipe, tmp_path / "straight")
    crashed_dir = tmp_path / "crashed"
    first = run_training(recipe, crashed_dir, extra_callbacks=[CrashAt(6)])
    assert max(losses(first.log_history)) == 6
    assert resolve_resume(crashed_dir, "auto").endswith("checkpoint-6")

    resumed = run_training(recipe, crashed_dir, resume="auto")
    want, got = losses(straight.log_history), losses(resumed.log_history)
    assert sorted(got) == list(range(1, 13))  # the curve includes the steps before the crash
    for step in range(7, 13):
        assert got[step] == pytest.approx(want[step], rel=1e-4, abs=1e-5), step
    curve = json.loads((crashed_dir / "loss.json").read_text())
    assert [p["step"] for p in curve] == list(range(1, 13))


def test_resume_auto_without_checkpoint_starts_fresh(tmp_path):
    assert resolve_resume(tmp_path, "auto") is None


def test_resume_refuses_incomplete_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(MmtuneError, match="incomplete or corrupt"):
        resolve_resume(tmp_path, str(ckpt))
    # auto skips it and finds nothing complete
    assert resolve_resume(tmp_path, "auto") is None
    with pytest.raises(MmtuneError, match="does not exist"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-99"))
