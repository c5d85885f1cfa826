"""Export checks what it is given and what it writes: the run's own recipe by default, no other
base model or method, a new or empty output dir, whole weights files; merge keeps to the adapter's base."""

from __future__ import annotations

import json

import pytest

from mmtune.cli.main import main
from mmtune.config.load import dump_config
from mmtune.errors import MmtuneError
from mmtune.export.checks import check_safetensors
from mmtune.export.merge import merge_adapter
from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.testing.runs import self_cognition_recipe, write_self_cognition
from mmtune.train.run import run_training


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_qwen2_dir):
    tmp = tmp_path_factory.mktemp("export-checks")
    data = write_self_cognition(tmp / "self.jsonl", repeat=1)
    recipe = self_cognition_recipe(tiny_qwen2_dir, data, train={"max_steps": 2, "save_steps": 0},
                                   eval={"evaluation_inputs": []})
    return recipe, run_training(recipe, tmp / "work").final_dir


def test_to_hf_without_a_recipe_uses_the_runs_own(run, tmp_path, capsys):
    recipe, final = run
    assert main(["convert", "to-hf", str(final), str(tmp_path / "hf")]) == 0
    assert "exported to" in capsys.readouterr().out
    config = json.loads((tmp_path / "hf" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == recipe.model.path
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(dump_config(recipe))
    assert main(["convert", "to-hf", str(recipe_file), str(final), str(tmp_path / "hf2")]) == 0  # the old form
    assert main(["convert", "to-hf", str(final), str(tmp_path / "hf3"), "--set", "train.lr=1"]) == 2
    assert "--set changes a recipe, and none was given" in capsys.readouterr().err


def test_a_recipe_for_another_base_or_method_is_refused(run, tmp_path, tiny_llama_dir):
    recipe, final = run
    other = recipe.model_copy(update={"model": recipe.model.model_copy(update={"path": str(tiny_llama_dir)})})
    with pytest.raises(MmtuneError, match="is not the one .* was trained on") as info:
        checkpoint_to_hf(other, final, tmp_path / "hf")
    assert str(tiny_llama_dir) in str(info.value) and recipe.model.path in str(info.value)
    full = recipe.model_copy(update={"method": recipe.method.model_copy(update={"type": "full"})})
    with pytest.raises(MmtuneError, match="the recipe's method 'full' is not the one"):
        checkpoint_to_hf(full, final, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_the_output_dir_must_be_new_or_empty(run, tmp_path):
    recipe, final = run
    out = tmp_path / "hf"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"an older full model")  # would be loaded beside the adapter
    with pytest.raises(MmtuneError, match="is not empty") as info:
        checkpoint_to_hf(recipe, final, out)
    assert "--overwrite" in info.value.hint
    checkpoint_to_hf(recipe, final, out, overwrite=True)
    assert not (out / "model.safetensors").exists() and (out / "adapter_model.safetensors").exists()
    with pytest.raises(MmtuneError, match="holds the checkpoint being exported"):
        checkpoint_to_hf(recipe, final, final.parent, overwrite=True)
    assert (final / "adapter_model.safetensors").exists()


def test_a_truncated_adapter_is_refused_not_exported(run, tmp_path):
    recipe, final = run
    broken = tmp_path / "work" / "final"
    broken.parent.mkdir()
    import shutil

    shutil.copytree(final, broken)
    shutil.copy(final.parent / "config.yaml", broken.parent / "config.yaml")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(MmtuneError, match="is truncated"):
        checkpoint_to_hf(None, broken, tmp_path / "hf")
    assert not (tmp_path / "hf" / "adapter_model.safetensors").exists()
    with pytest.raises(MmtuneError, match="not a readable safetensors file"):
        (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01")
        check_safetensors(tmp_path / "junk.safetensors")


def test_merge_keeps_to_the_adapters_base_unless_forced(run, tmp_path, tiny_llama_dir, tiny_qwen2_dir):
    recipe, final = run
    adapter = checkpoint_to_hf(recipe, final, tmp_path / "adapter")
    with pytest.raises(MmtuneError, match="the adapter was trained on") as info:
        merge_adapter(str(tiny_llama_dir), adapter, tmp_path / "merged")
    assert "--force" in info.value.hint and not (tmp_path / "merged").exists()
    alias = tmp_path / "same-base"
    alias.symlink_to(tiny_qwen2_dir)  # the same model under another path
    with pytest.raises(MmtuneError, match="the adapter was trained on"):
        merge_adapter(str(tmp_path / "elsewhere"), adapter, tmp_path / "merged")
    merge_adapter(str(alias), adapter, tmp_path / "merged")  # resolves to the adapter's base
    with pytest.raises(MmtuneError, match="is not empty"):
        merge_adapter(str(tiny_qwen2_dir), adapter, tmp_path / "merged")
    merge_adapter(str(tiny_qwen2_dir), adapter, tmp_path / "merged", overwrite=True)
    assert (tmp_path / "merged" / "model.safetensors").exists()
