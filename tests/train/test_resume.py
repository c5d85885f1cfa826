"""`--resume auto` after a crash continues the same loss curve as an uninterrupted run."""

from __future__ import annotations

import json
import re

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
    with pytest.raises(MmtuneError, match="cannot resume from checkpoint .*: adapter_model.safetensors is not a readable"):
        resolve_resume(tmp_path, str(ckpt))
    # auto skips it and finds nothing complete
    assert resolve_resume(tmp_path, "auto") is None
    with pytest.raises(MmtuneError, match="it does not exist"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoint-99"))


@pytest.fixture
def crashed(recipe, tmp_path):
    """A run stopped after step 4 with checkpoints at steps 2 and 4."""
    short = recipe.model_copy(update={"train": recipe.train.model_copy(update={"save_steps": 2})})
    run_training(short, tmp_path / "run", extra_callbacks=[CrashAt(4)])
    return short, tmp_path / "run"


@pytest.mark.parametrize("damage, reason", [
    (lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:-10]),
     r"optimizer.pt is \d+ bytes, \d+ when it was saved"),
    (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt is missing"),
    (lambda c: (c / "trainer_state.json").write_text("{broken"), "trainer_state.json"),
    (lambda c: [p.unlink() for p in c.glob("rng_state*.pth")], "rng_state.pth is missing"),
])
def test_a_damaged_checkpoint_is_skipped_by_auto_and_refused_by_path(crashed, caplog, damage, reason):
    short, work = crashed
    damage(work / "checkpoint-4")
    with caplog.at_level("WARNING", logger="mmtune.train"):
        assert resolve_resume(work, "auto") == str(work / "checkpoint-2")
    assert re.search(rf"not resuming from checkpoint-4: .*{reason}", caplog.text), caplog.text
    with pytest.raises(MmtuneError, match=rf"cannot resume from checkpoint .*checkpoint-4.*: .*{reason}"):
        resolve_resume(work, str(work / "checkpoint-4"))


def test_a_resume_with_another_recipe_or_data_is_refused_listing_the_changes(crashed):
    short, work = crashed
    changed = short.model_copy(update={"train": short.train.model_copy(update={"lr": 1e-3})})
    with pytest.raises(MmtuneError, match=r"the run changed since .*checkpoint-4 was saved: train.lr: 0.002 -> 0.001") as info:
        run_training(changed, work, resume="auto")
    assert "--resume-changed" in info.value.hint
    data = short.data.datasets[0].path
    original = open(data, encoding="utf-8").read()
    try:
        with open(data, "a", encoding="utf-8") as f:
            f.write(original.splitlines()[0] + "\n")
        with pytest.raises(MmtuneError, match=f"data file {re.escape(data)} changed since the checkpoint"):
            run_training(short, work, resume="auto")
    finally:
        open(data, "w", encoding="utf-8").write(original)
    longer = short.model_copy(update={"train": short.train.model_copy(update={"max_steps": 14, "save_steps": 7})})
    result = run_training(longer, work, resume="auto")  # going on longer and saving less often is no change
    assert max(losses(result.log_history)) == 14
    again = tmp_work = work.parent / "again"
    run_training(short, tmp_work, extra_callbacks=[CrashAt(2)])
    resumed = run_training(changed, again, resume="auto", resume_changed=True)  # asked for: goes on
    assert max(losses(resumed.log_history)) == 12


def test_the_global_batch_may_be_laid_out_anew_but_not_changed(crashed):
    from mmtune.builders.meta import resume_facts
    from mmtune.train.checkpoints import check_resume_fits

    short, work = crashed  # micro-batch 1 x accumulation 1 (self_cognition_recipe), one process
    t = short.train
    ckpt = str(work / "checkpoint-4")
    relaid = short.model_copy(update={"train": t.model_copy(update={"micro_batch_size": t.micro_batch_size * 2})})
    check_resume_fits(ckpt, resume_facts(relaid, world_size=1) | {"global_batch": resume_facts(short)["global_batch"]})
    with pytest.raises(MmtuneError, match=r"global batch .*: \d+ -> \d+"):
        check_resume_fits(ckpt, resume_facts(relaid, world_size=1))
    check_resume_fits(ckpt, resume_facts(short, world_size=1))  # unchanged
