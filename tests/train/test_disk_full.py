"""A full disk during a save: one line, the partial checkpoint removed, the earlier ones intact."""

from __future__ import annotations

import pytest
import torch

from mmtune.rundir import checkpoint_problem
from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
from mmtune.train.run import run_training
from mmtune.train.trainer import DiskFull


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 576 vs 470"),  # torch's zip writer
    OSError(28, "No space left on device"),
])
def test_a_full_disk_during_a_checkpoint_is_one_line_and_loses_nothing_saved(tiny_qwen2_dir, tmp_path, monkeypatch,
                                                                              failure):
    data = write_self_cognition(tmp_path / "self.jsonl", repeat=1)
    recipe = self_cognition_recipe(tiny_qwen2_dir, data, train={"max_steps": 6, "save_steps": 2, "logging_steps": 1},
                                   eval={"evaluation_inputs": []})
    save = torch.save

    def full_disk_at_step_4(obj, f, *args, **kwargs):
        if "checkpoint-4" in str(f):
            raise failure
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk_at_step_4)
    work = tmp_path / "work"
    with pytest.raises(DiskFull, match="no space left on the device while saving .*checkpoint-4") as info:
        run_training(recipe, work)
    assert "--resume auto" in info.value.hint
    assert not (work / "checkpoint-4").exists() and not (work / "final").exists()
    assert checkpoint_problem(work / "checkpoint-2") is None  # the earlier checkpoint is whole
