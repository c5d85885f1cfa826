"""Shipped DeepSpeed configs, and their "auto" fields resolved from the recipe exactly as the
transformers Trainer resolves them."""

from __future__ import annotations

import json
import types

import pytest

from mmtune.errors import MmtuneError
from mmtune.testing.runs import self_cognition_recipe
from mmtune.train.deepspeed import (
    HERE, available, load_deepspeed_config, resolve_auto, resolve_deepspeed, unresolved, zero_stage,
)

SHIPPED = ["zero1", "zero2", "zero2_offload", "zero3", "zero3_offload"]


@pytest.fixture
def recipe(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("")
    return self_cognition_recipe(tmp_path, data, train={"micro_batch_size": 3, "gradient_accumulation": 5, "lr": 1e-4,
                                                        "weight_decay": 0.01, "max_grad_norm": 0.5, "precision": "bf16",
                                                        "warmup_ratio": 0.1})


def test_shipped_configs():
    assert available() == SHIPPED
    for name in SHIPPED:
        config = load_deepspeed_config(name)
        assert zero_stage(config) == int(name[4])
        assert {"train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                "gradient_clipping", "bf16.enabled", "fp16.enabled"} <= set(unresolved(config))
    z3o = load_deepspeed_config("zero3_offload")["zero_optimization"]
    assert z3o["offload_optimizer"]["device"] == z3o["offload_param"]["device"] == "cpu"
    assert load_deepspeed_config("zero3")["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_resolve_auto_fills_from_the_recipe(recipe):
    config = resolve_auto("zero3_offload", recipe, world_size=4, hidden_size=128, num_training_steps=200)
    assert unresolved(config) == []
    assert config["train_micro_batch_size_per_gpu"] == 3
    assert config["gradient_accumulation_steps"] == 5
    assert config["train_batch_size"] == 4 * 3 * 5
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"]["enabled"] is True and config["fp16"]["enabled"] is False
    assert config["optimizer"]["params"] == {"lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
    zero = config["zero_optimization"]
    assert zero["reduce_bucket_size"] == 128 * 128
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * 128 * 128)
    assert zero["stage3_param_persistence_threshold"] == 1280
    # without the model's hidden size those stay for the Trainer to fill
    assert "zero_optimization.reduce_bucket_size" in unresolved(resolve_auto("zero3", recipe))


def test_resolve_auto_rejects_values_that_contradict_the_recipe(recipe, tmp_path):
    config = load_deepspeed_config("zero2")
    config["train_micro_batch_size_per_gpu"] = 8
    with pytest.raises(MmtuneError, match="train_micro_batch_size_per_gpu=8 but train.micro_batch_size gives 3"):
        resolve_auto(config, recipe)
    config["train_micro_batch_size_per_gpu"] = 3  # agreeing explicit values are fine
    assert resolve_auto(config, recipe)["train_micro_batch_size_per_gpu"] == 3


def test_resolve_auto_matches_the_trainer(recipe, tmp_path):
    """Feed the same config through transformers' own HfTrainerDeepSpeedConfig (what the Trainer
    does at TrainingArguments creation and before deepspeed.initialize) and compare."""
    pytest.importorskip("deepspeed")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from mmtune.train.run import training_arguments

    for name in SHIPPED:
        args = training_arguments(recipe, tmp_path, "cpu", None)
        hf = HfTrainerDeepSpeedConfig(load_deepspeed_config(name))
        hf.trainer_config_process(args)
        model = types.SimpleNamespace(config=types.SimpleNamespace(hidden_size=64))
        hf.trainer_config_finalize(args, model, num_training_steps=50)
        ours = resolve_auto(name, recipe, world_size=1, hidden_size=64, num_training_steps=50)
        assert json.dumps(ours, sort_keys=True) == json.dumps(hf.config, sort_keys=True), name


def test_resolve_deepspeed_names_and_files(tmp_path):
    pytest.importorskip("deepspeed")
    assert resolve_deepspeed("zero2") == str(HERE / "zero2.json")
    assert resolve_deepspeed("deepspeed_zero3") == str(HERE / "zero3.json")  # XTuner's spelling
    own = tmp_path / "mine.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    assert resolve_deepspeed(str(own)) == str(own)
    with pytest.raises(MmtuneError, match="unknown DeepSpeed config 'zero4'"):
        resolve_deepspeed("zero4")
    with pytest.raises(MmtuneError, match="does not exist"):
        resolve_deepspeed(str(tmp_path / "missing.json"))
