"""`mmtune train` with its memory savers (`train.chunked_loss`, `train.fused_layers`, both on by
default) trains the same model as without them.

A full fine-tune (the head trains too, so its weight gradient comes from the chunked loss; the norms
train through the fused RMSNorm) on packed rows, 12 steps, with both on and both off: the logged
losses and the final weights agree to float rounding, the loss falls, and train.log says what ran.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
from mmtune.train.run import run_training


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_qwen2_dir):
    root = tmp_path_factory.mktemp("savers")
    data = write_self_cognition(root / "self.jsonl")
    runs = {}
    for on in (True, False):
        recipe = self_cognition_recipe(
            tiny_qwen2_dir, data, method={"type": "full"},
            train={"max_steps": 12, "lr": 1e-3, "logging_steps": 1, "save_steps": 0, "chunked_loss": on,
                   "fused_layers": on},
            eval={"every_n_steps": 1000, "evaluation_inputs": []},
        )
        runs[on] = run_training(recipe, root / f"work-{on}")
    return runs


def losses(result) -> list[float]:
    return [entry["loss"] for entry in result.log_history if "loss" in entry]


def test_same_losses_and_weights_as_without_them(two_runs):
    ours, plain = losses(two_runs[True]), losses(two_runs[False])
    assert len(ours) == len(plain) == 12
    assert ours == pytest.approx(plain, rel=1e-4)
    assert sum(ours[-3:]) < sum(ours[:3]) - 0.5  # it learned
    a = load_file(two_runs[True].final_dir / "model.safetensors")
    b = load_file(two_runs[False].final_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-5, rtol=1e-3, msg=key)


def test_log_says_what_ran(two_runs):
    log_on, log_off = ((two_runs[on].work_dir / "train.log").read_text() for on in (True, False))
    assert "loss: chunked cross-entropy" in log_on and "chunked cross-entropy" not in log_off
    assert "fused layers: 9 RMSNorm and 4 SwiGLU MLP" in log_on and "fused layers" not in log_off
    saved = json.loads((two_runs[True].final_dir / "config.json").read_text())
    assert saved["architectures"] == ["Qwen2ForCausalLM"]  # the export is the plain class, not a patched one
