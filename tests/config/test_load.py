"""load_config: YAML + `base:` inheritance + `--set` overrides + validation, with one-line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mmtune.config.load import apply_overrides, dump_config, load_config, load_raw, resolve_recipe_path
from mmtune.config.schema import Recipe
from mmtune.errors import ConfigError

MINIMAL = """\
model:
  path: some/model
data:
  datasets:
    - path: data.jsonl
      format: openai
"""


def write(dir: Path, name: str, text: str) -> Path:
    path = dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def minimal(tmp_path) -> Path:
    return write(tmp_path, "minimal.yaml", MINIMAL)


def config_error(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    message = info.value.format()
    assert "\n" not in message, "user errors are one line"
    return message


# ---------------------------------------------------------------- a plain file
def test_minimal_recipe_gets_defaults(minimal):
    recipe = load_config(minimal)
    assert isinstance(recipe, Recipe)
    assert recipe.model.path == "some/model"
    assert recipe.method.type == "lora" and recipe.train.lr == 2e-4


def test_dump_round_trips(minimal, tmp_path):
    recipe = load_config(minimal, ["train.lr=1e-4", "eval.evaluation_inputs=[你是谁]"])
    again = write(tmp_path, "dumped.yaml", dump_config(recipe))
    assert load_config(again) == recipe


# ---------------------------------------------------------------- unknown keys
@pytest.mark.parametrize(
    "yaml_text, key, suggestion",
    [
        (MINIMAL + "train:\n  lerning_rate: 1.0e-4\n", "train.lerning_rate", "train.lr"),
        (MINIMAL + "train:\n  learning_rate: 1.0e-4\n", "train.learning_rate", "train.lr"),
        (MINIMAL + "train:\n  gradient_accumulation_steps: 4\n", "train.gradient_accumulation_steps", "train.gradient_accumulation"),
        (MINIMAL.replace("data:\n", "data:\n  max_lenght: 512\n"), "data.max_lenght", "data.max_length"),
        (MINIMAL + "trian:\n  lr: 1.0e-4\n", "trian", "train"),
        (MINIMAL + "method:\n  lora:\n    lora_alpha: 32\n", "method.lora.lora_alpha", "method.lora.alpha"),
        (MINIMAL.replace("      format: openai", "      formt: openai"), "data.datasets.0.formt", "data.datasets.0.format"),
    ],
)
def test_unknown_key_names_it_and_suggests_the_closest(tmp_path, yaml_text, key, suggestion):
    path = write(tmp_path, "r.yaml", yaml_text)
    message = config_error(path)
    assert str(path) in message
    assert f"unknown key {key!r}" in message
    assert f"did you mean {suggestion!r}" in message


def test_unknown_key_without_a_close_match_lists_the_valid_ones(minimal):
    message = config_error(minimal, ["eval.zzzzzz=1"])
    assert "unknown key 'eval.zzzzzz'" in message
    assert "valid keys:" in message and "evaluation_inputs" in message


def test_every_error_is_reported_at_once(minimal):
    message = config_error(minimal, ["train.lerning_rate=1", "data.max_lenght=3"])
    assert "train.lerning_rate" in message and "data.max_lenght" in message


# ---------------------------------------------------------------- wrong types and values
def test_wrong_type_names_the_field_and_the_expected_type(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL + 'train:\n  micro_batch_size: "two"\n')
    message = config_error(path)
    assert "train.micro_batch_size" in message
    assert "valid integer" in message
    assert "'two'" in message


def test_wrong_choice_lists_the_choices(minimal):
    message = config_error(minimal, ["train.precision=bf32"])
    assert "train.precision" in message
    assert "'bf16'" in message and "'fp32'" in message and "'bf32'" in message


def test_out_of_range_value(minimal):
    message = config_error(minimal, ["train.micro_batch_size=0"])
    assert "train.micro_batch_size" in message and "greater than or equal to 1" in message


# ---------------------------------------------------------------- missing keys
def test_missing_required_section(tmp_path):
    path = write(tmp_path, "r.yaml", "data:\n  datasets: [{path: a.jsonl}]\n")
    assert "missing required key 'model'" in config_error(path)


def test_missing_required_field(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL.replace("  path: some/model\n", "  dtype: auto\n"))
    assert "missing required key 'model.path'" in config_error(path)


def test_empty_file_reports_the_missing_sections(tmp_path):
    message = config_error(write(tmp_path, "empty.yaml", ""))
    assert "missing required key 'model'" in message and "missing required key 'data'" in message


def test_empty_dataset_list(minimal):
    assert "data.datasets" in config_error(minimal, ["data.datasets=[]"])


# ---------------------------------------------------------------- invalid YAML
def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "model:\n  path: x\n data: [\n")
    message = config_error(path)
    assert f"{path}:3:" in message
    assert "invalid YAML" in message


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path, "list.yaml", "- model\n- data\n")
    assert "must be a mapping" in config_error(path)


# ---------------------------------------------------------------- --set overrides
def test_override_nested_values_with_yaml_parsing():
    data = apply_overrides(
        {"train": {"lr": 1.0}},
        [
            "train.micro_batch_size=4",
            "train.lr=3.0e-4",
            "data.pack_to_max_length=false",
            "eval.evaluation_inputs=[\"who are you?\", 你是谁]",
            "data.system=null",
            "model.path=Qwen/Qwen2.5-0.5B-Instruct",
            "eval.system=",
        ],
    )
    assert data["train"] == {"lr": 3.0e-4, "micro_batch_size": 4}
    assert data["data"] == {"pack_to_max_length": False, "system": None}
    assert data["eval"] == {"evaluation_inputs": ["who are you?", "你是谁"], "system": ""}
    assert data["model"] == {"path": "Qwen/Qwen2.5-0.5B-Instruct"}


@pytest.mark.parametrize(
    "raw, value",
    [
        ("You are Nova: a helpful assistant.", "You are Nova: a helpful assistant."),  # not a mapping
        ("issue #1", "issue #1"),  # not cut at a YAML comment
        ("'123'", "123"),  # quotes force a string
        ("123", 123),
        ("1.5", 1.5),
        ("true", True),
        ("~", None),
        ("{r: 8, alpha: 16}", {"r": 8, "alpha": 16}),
        ("[a, b", "[a, b"),  # not YAML: the text as typed
    ],
)
def test_override_value_parsing(raw, value):
    assert apply_overrides({}, [f"data.system={raw}"])["data"]["system"] == value


def test_override_keeps_everything_after_the_first_equals_sign():
    assert apply_overrides({}, ["data.system=a=b"])["data"]["system"] == "a=b"


def test_override_does_not_change_its_input():
    original = {"train": {"lr": 1.0}, "data": {"datasets": [{"path": "a"}]}}
    apply_overrides(original, ["train.lr=2.0", "data.datasets.0.path=b"])
    assert original == {"train": {"lr": 1.0}, "data": {"datasets": [{"path": "a"}]}}


def test_override_through_load_config(minimal):
    recipe = load_config(minimal, ["train.lr=1e-4", "train.epochs=2", "data.max_length=512", "train.gradient_checkpointing=true"])
    assert recipe.train.lr == 1e-4 and recipe.train.epochs == 2
    assert recipe.data.max_length == 512 and recipe.train.gradient_checkpointing is True


def test_override_creates_a_missing_section(minimal):
    recipe = load_config(minimal, ["eval.every_n_steps=7", "method.lora.r=8"])
    assert recipe.eval.every_n_steps == 7
    assert recipe.method.lora.r == 8 and recipe.method.lora.alpha == 16


def test_override_indexes_a_list(minimal):
    recipe = load_config(minimal, ["data.datasets.0.path=mine.jsonl", "data.datasets.0.repeat=3"])
    assert [(d.path, d.format, d.repeat) for d in recipe.data.datasets] == [("mine.jsonl", "openai", 3)]


def test_override_list_index_out_of_range(minimal):
    message = config_error(minimal, ["data.datasets.1.path=x"])
    assert "data.datasets" in message and "'1'" in message


def test_override_replaces_a_whole_list(minimal):
    recipe = load_config(minimal, ["data.datasets=[{path: a.jsonl}, {path: b.json, format: alpaca, repeat: 2}]"])
    assert [(d.path, d.format, d.repeat) for d in recipe.data.datasets] == [("a.jsonl", "auto", 1), ("b.json", "alpaca", 2)]


def test_override_without_equals_sign(minimal):
    assert "key.sub=value" in config_error(minimal, ["train.lr"])


def test_override_of_an_unknown_key_suggests(minimal):
    assert "did you mean 'train.lr'" in config_error(minimal, ["train.learning_rate=1e-4"])


# ---------------------------------------------------------------- base: inheritance
def test_base_merges_sections_and_the_child_wins(tmp_path):
    write(tmp_path, "base.yaml", MINIMAL + "train:\n  lr: 1.0e-3\n  epochs: 2\neval:\n  evaluation_inputs: [a, b]\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\ntrain:\n  lr: 5.0e-5\neval:\n  evaluation_inputs: [c]\n")
    recipe = load_config(child)
    assert recipe.train.lr == 5e-5 and recipe.train.epochs == 2  # siblings survive
    assert recipe.eval.evaluation_inputs == ["c"]  # lists are replaced, not appended
    assert recipe.model.path == "some/model"
    assert "base" not in load_raw(child)


def test_base_chain(tmp_path):
    write(tmp_path, "a.yaml", MINIMAL + "train:\n  epochs: 5\n")
    write(tmp_path, "b.yaml", "base: a.yaml\ntrain:\n  lr: 1.0e-3\n")
    write(tmp_path, "c.yaml", "base: b.yaml\nmethod:\n  type: full\n")
    recipe = load_config(tmp_path / "c.yaml")
    assert (recipe.train.epochs, recipe.train.lr, recipe.method.type) == (5, 1e-3, "full")


def test_base_is_found_next_to_the_recipe_not_in_the_cwd(tmp_path, monkeypatch):
    write(tmp_path / "recipes", "base.yaml", MINIMAL)
    child = write(tmp_path / "recipes", "child.yaml", "base: base.yaml\ntrain:\n  lr: 1.0e-3\n")
    write(tmp_path / "elsewhere", "base.yaml", "model:\n  path: WRONG\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_config(child).model.path == "some/model"


def test_base_in_a_sub_directory(tmp_path):
    write(tmp_path / "shared", "base.yaml", MINIMAL)
    child = write(tmp_path, "child.yaml", "base: shared/base.yaml\n")
    assert load_config(child).model.path == "some/model"


def test_base_can_be_a_builtin_recipe(tmp_path):
    child = write(tmp_path, "mine.yaml", "base: qwen2_5_0_5b_instruct_qlora\nname: mine\ndata:\n  datasets: [{path: me.jsonl, format: openai}]\n")
    recipe = load_config(child)
    assert recipe.method.type == "qlora" and recipe.model.path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert [d.path for d in recipe.data.datasets] == ["me.jsonl"]
    assert recipe.name == "mine"


def test_base_cycle(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    message = config_error(tmp_path / "a.yaml")
    assert "inherits from itself" in message
    assert "a.yaml" in message and "b.yaml" in message


def test_base_self_cycle(tmp_path):
    path = write(tmp_path, "self.yaml", "base: self.yaml\n" + MINIMAL)
    assert "inherits from itself" in config_error(path)


def test_missing_base_names_the_file_that_asks_for_it(tmp_path):
    path = write(tmp_path, "child.yaml", "base: nothere.yaml\n" + MINIMAL)
    message = config_error(path)
    assert str(path) in message and "nothere.yaml" in message


def test_base_must_be_a_string(tmp_path):
    path = write(tmp_path, "child.yaml", "base: [a.yaml, b.yaml]\n" + MINIMAL)
    assert "base" in config_error(path)


def test_overrides_apply_after_inheritance(tmp_path):
    write(tmp_path, "base.yaml", MINIMAL + "train:\n  lr: 1.0e-3\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\ntrain:\n  lr: 2.0e-3\n")
    assert load_config(child, ["train.lr=3.0e-3"]).train.lr == 3e-3


# ---------------------------------------------------------------- recipe names
def test_builtin_recipe_by_name_with_or_without_suffix():
    assert load_config("qwen2_5_0_5b_instruct_lora") == load_config("qwen2_5_0_5b_instruct_lora.yaml")


def test_unknown_recipe_name_suggests_the_closest():
    message = config_error("qwen2_5_0_5b_instruct_lroa")
    assert "'qwen2_5_0_5b_instruct_lroa'" in message
    assert "did you mean 'qwen2_5_0_5b_instruct_lora'" in message
    assert "list-cfg" in message


def test_unknown_recipe_name_without_a_close_match():
    with pytest.raises(ConfigError) as info:
        resolve_recipe_path("zzzz_nothing_like_it")
    assert "did you mean" not in info.value.format()
