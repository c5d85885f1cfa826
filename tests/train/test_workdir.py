"""One run per work dir: an earlier run's checkpoints and final/ are not overwritten without
--overwrite, --resume continues them, and two trainings never write into one dir at once."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from mmtune.errors import MmtuneError
from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
from mmtune.train.run import run_training
from mmtune.train.workdir import claim_work_dir, previous_run


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_qwen2_dir):
    data = write_self_cognition(tmp_path_factory.mktemp("workdir") / "self.jsonl", repeat=1)
    return self_cognition_recipe(tiny_qwen2_dir, data, train={"max_steps": 2, "save_steps": 1, "logging_steps": 1},
                                 eval={"evaluation_inputs": []})


def test_a_dir_holding_a_run_needs_resume_or_overwrite(recipe, tmp_path):
    work = tmp_path / "run"
    run_training(recipe, work)
    before = (work / "final" / "adapter_model.safetensors").read_bytes()
    assert previous_run(work) == ["checkpoint-1", "checkpoint-2", "final/"]
    with pytest.raises(MmtuneError, match=r"already holds a run \(checkpoint-1, checkpoint-2, final/\)") as info:
        run_training(recipe, work)
    assert "--resume auto" in info.value.hint and "--overwrite" in info.value.hint
    assert (work / "final" / "adapter_model.safetensors").read_bytes() == before  # untouched
    run_training(recipe, work, resume="auto")  # continuing is allowed (nothing left to train here)
    (work / "keep.txt").write_text("mine")
    longer = recipe.model_copy(update={"train": recipe.train.model_copy(update={"max_steps": 3, "save_steps": 3})})
    run_training(longer, work, overwrite=True)
    assert previous_run(work) == ["checkpoint-3", "final/"]  # the old checkpoints are gone, the new run's stay
    assert (work / "keep.txt").read_text() == "mine"  # files that are not the run's are left alone
    with pytest.raises(MmtuneError, match="contradict"):
        run_training(recipe, work, resume="auto", overwrite=True)


def test_a_run_that_stopped_before_its_first_checkpoint_reruns_in_place(recipe, tmp_path):
    work = tmp_path / "run"
    work.mkdir()
    (work / "config.yaml").write_text("old")
    (work / "train.log").write_text("bad data\n")
    run_training(recipe, work)
    assert previous_run(work)[-1] == "final/"


def _hold(work, ready, release):
    with claim_work_dir(work, resume=None, overwrite=False):
        ready.set()
        release.wait(30)


def test_a_second_run_in_a_dir_in_use_is_refused_naming_the_holder(tmp_path):
    work = tmp_path / "run"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(work, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(MmtuneError, match=rf"in use by a running `mmtune train` \(pid {holder.pid}\)"):
            with claim_work_dir(work, resume=None, overwrite=False):
                pass
    finally:
        release.set()
        holder.join(30)
    time.sleep(0.1)
    with claim_work_dir(work, resume=None, overwrite=False):  # free again once the holder ended
        pass


def test_the_cli_refuses_in_one_line_and_overwrite_passes(recipe, tmp_path, capsys):
    from mmtune.cli.main import main
    from mmtune.config.load import dump_config

    config = tmp_path / "r.yaml"
    config.write_text(dump_config(recipe))
    work = str(tmp_path / "w")
    assert main(["train", str(config), "--work-dir", work]) == 0
    assert main(["train", str(config), "--work-dir", work]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(config), "--work-dir", work, "--overwrite"]) == 0
