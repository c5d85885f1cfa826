"""A run that diverges stops at once, naming the step, with a hint; no NaN weights are saved."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
from mmtune.train.run import run_training
from mmtune.train.trainer import Diverged


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_self_cognition(tmp_path_factory.mktemp("diverge") / "self.jsonl", repeat=1)


def test_a_diverging_run_stops_with_the_step_and_saves_no_nan_weights(tiny_qwen2_dir, data_file, tmp_path):
    recipe = self_cognition_recipe(tiny_qwen2_dir, data_file, method={"type": "full"},
                                   train={"max_steps": 30, "logging_steps": 1, "save_steps": 1, "lr": 1e4,
                                          "warmup_ratio": 0.0},
                                   eval={"evaluation_inputs": []})
    with pytest.raises(Diverged) as info:
        run_training(recipe, tmp_path / "work")
    message = str(info.value)
    step = int(message.split("at step ")[1].split(":")[0])
    assert 1 <= step < 30 and ("the loss is" in message or "the gradient norm is" in message)
    assert "lower train.lr (now 10000)" in message
    work = tmp_path / "work"
    assert not (work / "final").exists()
    saved = sorted(work.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert all(int(p.name.split("-")[1]) < step for p in saved)
    for checkpoint in saved:  # every checkpoint left is finite: the NaN step never reached the weights on disk
        weights = load_file(checkpoint / "model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values()), checkpoint


def test_the_cli_says_it_in_one_line(tiny_qwen2_dir, data_file, tmp_path, capsys):
    from mmtune.cli.main import main
    from mmtune.config.load import dump_config

    recipe = self_cognition_recipe(tiny_qwen2_dir, data_file, method={"type": "full"},
                                   train={"max_steps": 30, "save_steps": 0, "lr": 1e4, "warmup_ratio": 0.0},
                                   eval={"evaluation_inputs": []})
    config = tmp_path / "r.yaml"
    config.write_text(dump_config(recipe))
    assert main(["train", str(config), "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "training diverged at step" in err and "Traceback" not in err
