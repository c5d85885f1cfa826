"""What mmtune checks of a checkpoint's own modeling code (mmtune.models.remote_code), on toy
checkpoints whose code misbehaves one way each (mmtune.testing.remote_code)."""

from __future__ import annotations

import pytest
import torch

from mmtune.errors import MmtuneError
from mmtune.models.load import load_pretrained
from mmtune.models.remote_code import check_first_forward, is_remote_code, packing_problem
from mmtune.testing.remote_code import write_remote_model


def load(path):
    from transformers import AutoModelForCausalLM

    return load_pretrained(AutoModelForCausalLM, path, "the model", trust_remote_code=True)


def test_a_well_behaved_remote_model_passes_both_checks(tmp_path):
    model = load(write_remote_model(tmp_path / "ok"))
    assert is_remote_code(model)
    check_first_forward(model)
    assert packing_problem(model) is None


def test_code_that_lets_packed_samples_see_each_other_is_found(tmp_path):
    model = load(write_remote_model(tmp_path / "leaky", leaks_across_samples=True)).train()
    problem = packing_problem(model)
    assert problem and "samples packed in one row attend to each other" in problem and "modeling_toy" in problem
    assert model.training  # the probe leaves the mode as it found it


def test_transformers_own_models_are_not_probed(tiny_qwen2_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    assert not is_remote_code(model) and packing_problem(model) is None


def test_non_finite_logits_on_the_first_forward_are_a_clear_error(tmp_path):
    model = load(write_remote_model(tmp_path / "nan", nan=True))
    with pytest.raises(MmtuneError, match=r"own code .*non-finite logits on its first forward.*attn_implementation"):
        check_first_forward(model)


def test_a_missing_package_names_it_and_the_install_command(tmp_path):
    with pytest.raises(MmtuneError) as info:
        load(write_remote_model(tmp_path / "pkg", needs_package="mmtune_missing_pkg"))
    message = info.value.format()
    assert "mmtune_missing_pkg" in message and "pip install mmtune_missing_pkg" in message and "\n" not in message


def test_an_error_inside_the_models_own_code_says_so(tmp_path):
    with pytest.raises(MmtuneError) as info:
        load(write_remote_model(tmp_path / "init", fail_on_init=True))
    message = info.value.format()
    assert "the model's own code (modeling_toy.py:" in message and "KeyError: 'sdpa'" in message
    assert "attn_implementation: eager" in message


def test_training_refuses_packing_for_leaky_code_and_trains_it_unpacked(tmp_path):
    from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
    from mmtune.train.run import run_training

    model = write_remote_model(tmp_path / "leaky", leaks_across_samples=True)
    data = write_self_cognition(tmp_path / "d.jsonl", repeat=1)
    recipe = self_cognition_recipe(model, data, model={"path": str(model), "trust_remote_code": True,
                                                       "attn_implementation": None, "dtype": "float32"},
                                   method={"type": "full"}, train={"max_steps": 2, "save_steps": 0})
    with pytest.raises(MmtuneError, match=r"packed rows cannot train this model.*pack_to_max_length: false"):
        run_training(recipe, tmp_path / "packed")
    unpacked = recipe.model_copy(update={"data": recipe.data.model_copy(update={"pack_to_max_length": False})})
    result = run_training(unpacked, tmp_path / "unpacked")
    assert torch.isfinite(torch.tensor([h["loss"] for h in result.log_history if "loss" in h])).all()
