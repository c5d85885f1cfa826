"""Shipped DeepSpeed configs: names, files, and "auto" fields the transformers Trainer fills from the recipe."""

from __future__ import annotations

import json
import types

import pytest

from mmtune.errors import MmtuneError
from mmtune.testing.runs import self_cognition_recipe
from mmtune.config.strategy import (
    DEEPSPEED_CONFIGS, available_deepspeed_configs, load_deepspeed_config, resolve_deepspeed, zero_stage,
)

HERE = DEEPSPEED_CONFIGS


def unresolved(config: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields still "auto" in a DeepSpeed config."""
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += unresolved(value, f"{prefix}{key}.")
        elif value == "auto":
            out.append(prefix + key)
    return out

SHIPPED = ["zero1", "zero2", "zero2_offload", "zero3", "zero3_offload"]


@pytest.fixture
def recipe(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("")
    return self_cognition_recipe(tmp_path, data, train={"micro_batch_size": 3, "gradient_accumulation": 5, "lr": 1e-4,
                                                        "weight_decay": 0.01, "max_grad_norm": 0.5, "precision": "bf16",
                                                        "warmup_ratio": 0.1})


def test_shipped_configs():
    assert available_deepspeed_configs() == SHIPPED
    for name in SHIPPED:
        config = load_deepspeed_config(name)
        assert zero_stage(config) == int(name[4])
        assert {"train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                "gradient_clipping", "bf16.enabled", "fp16.enabled"} <= set(unresolved(config))
    z3o = load_deepspeed_config("zero3_offload")["zero_optimization"]
    assert z3o["offload_optimizer"]["device"] == z3o["offload_param"]["device"] == "cpu"
    assert load_deepspeed_config("zero3")["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_the_trainer_fills_every_auto_field_from_the_recipe(recipe, tmp_path):
    """The shipped configs leave batch, clipping, precision and optimizer fields "auto"; transformers'
    own HfTrainerDeepSpeedConfig (what the Trainer runs) fills them all from mmtune's arguments."""
    pytest.importorskip("deepspeed")
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from mmtune.builders.arguments import training_arguments

    args = training_arguments(recipe, tmp_path, "cpu")
    for name in SHIPPED:
        hf = HfTrainerDeepSpeedConfig(load_deepspeed_config(name))
        hf.trainer_config_process(args)
        hf.trainer_config_finalize(args, types.SimpleNamespace(config=types.SimpleNamespace(hidden_size=64)),
                                   num_training_steps=50)
        assert unresolved(hf.config) == [], name
        assert hf.config["train_micro_batch_size_per_gpu"] == 3 and hf.config["gradient_accumulation_steps"] == 5
        assert hf.config["gradient_clipping"] == 0.5 and hf.config["bf16"]["enabled"] is True


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
