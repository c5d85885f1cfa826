"""Every built-in recipe loads, validates and says what it promises (torchtune's `test_configs`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mmtune.cli.cfg import list_recipes
from mmtune.config.load import builtin_recipes, load_config, load_raw, recipes_root
from mmtune.data.templates import template_names

PUBLIC = sorted(name for name in builtin_recipes() if not name.startswith("_"))
BASES = sorted(name for name in builtin_recipes() if name.startswith("_"))
TEXT = sorted(p.stem for p in (recipes_root() / "text").glob("*.yaml") if not p.stem.startswith("_"))

# name -> (model path, template, trust_remote_code); InternLM2 loads natively (mmtune.models.internlm2)
MODELS = {
    "internlm2_chat_1_8b": ("internlm/internlm2-chat-1_8b", "internlm2_chat", False),
    "internlm3_8b_instruct": ("internlm/internlm3-8b-instruct", "auto", False),
    "qwen2_5_0_5b_instruct": ("Qwen/Qwen2.5-0.5B-Instruct", "qwen_chat", False),
    "qwen2_5_1_5b_instruct": ("Qwen/Qwen2.5-1.5B-Instruct", "qwen_chat", False),
    "llama3_8b_instruct": ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3_chat", False),
}
EXPECTED_TEXT = [
    *(f"internlm2_chat_1_8b_{m}" for m in ("lora", "qlora", "full")),
    *(f"qwen2_5_0_5b_instruct_{m}" for m in ("lora", "qlora", "full")),
    *(f"qwen2_5_1_5b_instruct_{m}" for m in ("lora", "qlora", "full")),
    "llama3_8b_instruct_qlora",
    *(f"internlm3_8b_instruct_{m}" for m in ("lora", "qlora")),
]


def split_name(name: str) -> tuple[str, str]:
    model, _, method = name.rpartition("_")
    return model, method


def test_the_promised_recipes_ship():
    assert set(EXPECTED_TEXT) <= set(TEXT)
    assert "tiny_self_cognition_lora" in PUBLIC


def test_recipe_names_are_unique_across_folders():
    stems = [p.stem for p in recipes_root().rglob("*.yaml")]
    assert len(stems) == len(set(stems)), "two built-in recipes share a name; one would hide the other"


@pytest.mark.parametrize("name", PUBLIC)
def test_builtin_recipe_loads_and_validates(name):
    recipe = load_config(name)
    assert recipe.name == name
    assert recipe.description and "\n" not in recipe.description
    assert recipe.data.template in template_names()
    assert recipe.data.datasets
    assert recipe.eval.evaluation_inputs, "a recipe should show the model learning"


@pytest.mark.parametrize("name", PUBLIC)
def test_method_matches_the_name(name):
    recipe = load_config(name)
    method = split_name(name)[1]
    if recipe.model.vision is not None:  # LLaVA recipes are named by stage
        assert recipe.method.stage == method
        return
    assert recipe.method.type == method
    if method == "full" and not name.startswith("tiny_"):  # the tiny demos train random weights from scratch
        assert recipe.train.lr <= 5e-5, "full fine-tuning needs a lower lr than LoRA"
        assert recipe.train.gradient_checkpointing
    if method == "qlora":
        assert recipe.train.precision in ("bf16", "fp16"), "4-bit layers compute in half precision"


@pytest.mark.parametrize("name", TEXT)
def test_text_recipe_model_and_template(name):
    model, _ = split_name(name)
    path, template, remote_code = MODELS[model]
    recipe = load_config(name)
    assert recipe.model.path == path
    assert recipe.data.template == template
    assert recipe.model.trust_remote_code is remote_code


@pytest.mark.parametrize("name", TEXT)
def test_text_recipe_follows_the_xtuner_personal_assistant_tutorial(name):
    r = load_config(name)
    assert [(d.path, d.format) for d in r.data.datasets] == [("data/personal_assistant.jsonl", "openai")]
    assert r.data.max_length == 2048 and r.data.pack_to_max_length
    assert (r.train.micro_batch_size, r.train.gradient_accumulation) == (1, 16)
    assert (r.train.scheduler, r.train.warmup_ratio, r.train.precision) == ("cosine", 0.03, "bf16")
    assert (r.train.save_steps, r.train.save_total_limit, r.eval.every_n_steps) == (300, 2, 300)
    assert {"请你介绍一下你自己", "你是谁", "你是我的小助手吗"} <= set(r.eval.evaluation_inputs)
    if r.method.type in ("lora", "qlora"):
        assert r.train.lr == 2e-4
        assert (r.method.lora.r, r.method.lora.alpha, r.method.lora.dropout) == (64, 16, 0.1)


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_model_size_is_an_override(method):
    """The 1.5B recipes are the 0.5B ones with another model path, nothing else."""
    small = load_config(f"qwen2_5_0_5b_instruct_{method}").model_dump()
    large = load_config(f"qwen2_5_1_5b_instruct_{method}").model_dump()
    for d in (small, large):
        del d["name"], d["description"], d["model"]["path"]
    assert small == large
    overridden = load_config(f"qwen2_5_0_5b_instruct_{method}", ["model.path=Qwen/Qwen2.5-1.5B-Instruct"])
    assert overridden.model == load_config(f"qwen2_5_1_5b_instruct_{method}").model


def test_shared_bases_are_hidden_from_list_cfg_but_resolve():
    assert BASES, "the text recipes inherit a shared _base"
    listed = {name for name, _ in list_recipes()}
    assert listed == set(PUBLIC)
    for name in BASES:
        assert isinstance(load_raw(name), dict)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_recipe_files_state_their_own_name_and_description(name):
    """list-cfg reads the file itself (not its bases), so each file carries both."""
    data = yaml.safe_load(Path(builtin_recipes()[name]).read_text(encoding="utf-8"))
    assert data["name"] == name
    assert data["description"]
