"""QLoRA (bitsandbytes 4-bit on CPU), full fine-tune with gradient checkpointing, bf16: each learns
and exports to a directory plain transformers loads."""

from __future__ import annotations

import pytest
import torch

from mmtune.errors import MmtuneError
from mmtune.export.merge import merge_adapter
from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
from mmtune.train.run import run_training


def loss_curve(result) -> list[float]:
    return [h["loss"] for h in result.log_history if "loss" in h]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_self_cognition(tmp_path_factory.mktemp("methods") / "self.jsonl", repeat=1)


def test_qlora_trains_4bit_base_on_cpu_and_merges(tiny_llama_dir, data_file, tmp_path):
    import bitsandbytes as bnb

    # Sample chats stay on: their eval-mode forward once repacked the 4-bit weights for bitsandbytes'
    # CPU inference kernel, which crashed on the tiny model's 352-wide MLP and has no backward
    # (mmtune.models.load.keep_4bit_layers_unpacked).
    recipe = self_cognition_recipe(tiny_llama_dir, data_file, method={"type": "qlora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0}},
                                   train={"max_steps": 12, "logging_steps": 2, "save_steps": 100},
                                   eval={"evaluation_inputs": ["who are you?"], "every_n_steps": 6, "max_new_tokens": 8})
    seen = {}

    from transformers import TrainerCallback

    class Inspect(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["4bit"] = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())

        def on_step_end(self, args, state, control, model=None, **kwargs):  # after the step-0 sample chat
            seen.setdefault("packed", 0)
            seen["packed"] += sum(getattr(m.weight.quant_state, "packing_format_for_cpu", False)
                                  for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))

    result = run_training(recipe, tmp_path / "work", extra_callbacks=[Inspect()])
    assert seen["4bit"] >= 4 * 7  # every linear layer of the 4 decoder layers is 4-bit
    assert [s["step"] for s in result.samples] == [0, 6, 12]
    assert seen["packed"] == 0  # trained through the kernel that has a backward
    curve = loss_curve(result)
    assert curve[-1] < curve[0] * 0.7, curve
    adapter = checkpoint_to_hf(recipe, result.final_dir, tmp_path / "adapter")
    merged = merge_adapter(recipe.model.path, adapter, tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_full_finetune_with_gradient_checkpointing_exports_full_model(tiny_qwen2_dir, data_file, tmp_path):
    from transformers import AutoModelForCausalLM

    recipe = self_cognition_recipe(tiny_qwen2_dir, data_file, method={"type": "full"},
                                   train={"max_steps": 12, "logging_steps": 2, "save_steps": 12, "lr": 1e-3,
                                          "gradient_checkpointing": True},
                                   eval={"evaluation_inputs": []})
    result = run_training(recipe, tmp_path / "work")
    curve = loss_curve(result)
    assert curve[-1] < curve[0] * 0.7, curve
    out = checkpoint_to_hf(recipe, result.work_dir / "checkpoint-12", tmp_path / "hf")
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    exported = AutoModelForCausalLM.from_pretrained(out)
    trained = AutoModelForCausalLM.from_pretrained(result.final_dir)
    base = AutoModelForCausalLM.from_pretrained(recipe.model.path)
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        a, b, c = (m.eval()(ids).logits for m in (exported, trained, base))
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)
    assert exported.config.use_cache is True


def test_bf16_lora_runs_on_cpu(tiny_qwen2_dir, data_file, tmp_path):
    recipe = self_cognition_recipe(tiny_qwen2_dir, data_file, model={"path": str(tiny_qwen2_dir), "dtype": "auto"},
                                   train={"max_steps": 8, "logging_steps": 2, "save_steps": 100, "precision": "bf16"},
                                   eval={"evaluation_inputs": []})
    curve = loss_curve(run_training(recipe, tmp_path / "work"))
    assert all(torch.isfinite(torch.tensor(curve))) and curve[-1] < curve[0], curve


def test_fp16_on_cpu_is_a_clear_error(tiny_qwen2_dir, data_file, tmp_path):
    recipe = self_cognition_recipe(tiny_qwen2_dir, data_file, train={"precision": "fp16"})
    with pytest.raises(MmtuneError, match="fp16 training needs a CUDA GPU"):
        run_training(recipe, tmp_path / "work")


def test_qlora_stops_before_loading_when_bitsandbytes_cannot_run(tiny_llama_dir, data_file, tmp_path, monkeypatch):
    import bitsandbytes as bnb

    from mmtune.models import load

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(bnb.nn, "Linear4bit", broken)
    loaded = []
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: loaded.append(a))
    recipe = self_cognition_recipe(tiny_llama_dir, data_file, method={"type": "qlora"})
    with pytest.raises(MmtuneError, match="cannot run 4-bit layers on cpu"):
        run_training(recipe, tmp_path / "work")
    assert loaded == []
    assert load.check_bitsandbytes  # the check is the public hook


def test_qlora_without_bitsandbytes_names_the_extra(tiny_llama_dir, data_file, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed: import raises ImportError
    loaded = []
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: loaded.append(a))
    recipe = self_cognition_recipe(tiny_llama_dir, data_file, method={"type": "qlora"})
    with pytest.raises(MmtuneError, match="QLoRA needs bitsandbytes") as err:
        run_training(recipe, tmp_path / "work")
    assert "mmtune[qlora]" in err.value.hint and loaded == []


@pytest.mark.parametrize("save_steps, checkpoints", [(0, []), (2, ["checkpoint-2", "checkpoint-4"])])
def test_save_steps_zero_writes_no_checkpoints_but_the_final_model(save_steps, checkpoints, tiny_qwen2_dir, data_file, tmp_path):
    recipe = self_cognition_recipe(tiny_qwen2_dir, data_file,
                                   train={"max_steps": 4, "logging_steps": 2, "save_steps": save_steps, "save_total_limit": 5},
                                   eval={"evaluation_inputs": []})
    result = run_training(recipe, tmp_path / "work")
    assert sorted(p.name for p in (tmp_path / "work").glob("checkpoint-*")) == checkpoints
    assert (result.final_dir / "adapter_model.safetensors").is_file()
