"""`mmtune list-cfg` and `mmtune copy-cfg`, run through the real entry point `mmtune.cli.main.main`."""

from __future__ import annotations

import pytest
import yaml

from mmtune.cli.main import main
from mmtune.config.load import builtin_recipes, load_config

PUBLIC = sorted(name for name in builtin_recipes() if not name.startswith("_"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- list-cfg
def test_list_cfg_lists_every_public_recipe_with_its_description(capsys):
    code, out, _ = run(capsys, "list-cfg")
    assert code == 0
    lines = out.splitlines()
    assert sorted(line.split()[0] for line in lines) == PUBLIC
    assert "_personal_assistant" not in out  # shared bases are not recipes to run
    row = next(line for line in lines if line.startswith("qwen2_5_0_5b_instruct_qlora "))
    assert load_config("qwen2_5_0_5b_instruct_qlora").description in row


def test_list_cfg_pattern_filters_case_insensitively(capsys):
    code, out, _ = run(capsys, "list-cfg", "-p", "QLoRA")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names and all("qlora" in n for n in names)
    assert sorted(names) == [n for n in PUBLIC if "qlora" in n]
    code, out, _ = run(capsys, "list-cfg", "--pattern", "qwen2_5_1_5b")
    names = sorted(line.split()[0] for line in out.splitlines())
    assert {f"qwen2_5_1_5b_instruct_{m}" for m in ("full", "lora", "qlora")} <= set(names)
    assert names == [n for n in PUBLIC if "qwen2_5_1_5b" in n]


def test_list_cfg_no_match_exits_1(capsys):
    code, out, _ = run(capsys, "list-cfg", "-p", "no-such-model")
    assert code == 1
    assert "no built-in recipe matches 'no-such-model'" in out


# ---------------------------------------------------------------- copy-cfg
def test_copy_cfg_into_a_directory(tmp_path, capsys):
    code, out, _ = run(capsys, "copy-cfg", "qwen2_5_0_5b_instruct_qlora", str(tmp_path))
    assert code == 0
    dest = tmp_path / "qwen2_5_0_5b_instruct_qlora.yaml"
    assert dest.is_file()
    assert str(dest) in out


def test_copy_cfg_to_a_file_name(tmp_path, capsys):
    dest = tmp_path / "my_recipe.yaml"
    code, _, _ = run(capsys, "copy-cfg", "internlm2_chat_1_8b_qlora", str(dest))
    assert code == 0
    assert dest.is_file()


def test_copy_cfg_accepts_the_yaml_suffix(tmp_path, capsys):
    code, _, _ = run(capsys, "copy-cfg", "qwen2_5_0_5b_instruct_lora.yaml", str(tmp_path / "x.yaml"))
    assert code == 0


@pytest.mark.parametrize("name", PUBLIC)
def test_copy_is_standalone_and_loads_to_the_same_recipe(name, tmp_path, capsys):
    dest = tmp_path / "copy.yaml"
    assert run(capsys, "copy-cfg", name, str(dest))[0] == 0
    data = yaml.safe_load(dest.read_text(encoding="utf-8"))
    assert "base" not in data, "the copy must not depend on files the user did not copy"
    assert load_config(dest) == load_config(name)


def test_copy_of_a_recipe_without_base_is_verbatim(tmp_path, capsys):
    dest = tmp_path / "demo.yaml"
    assert run(capsys, "copy-cfg", "tiny_self_cognition_lora", str(dest))[0] == 0
    assert dest.read_text(encoding="utf-8") == builtin_recipes()["tiny_self_cognition_lora"].read_text(encoding="utf-8")


def test_copy_onto_an_existing_file_is_an_error(tmp_path, capsys):
    dest = tmp_path / "mine.yaml"
    dest.write_text("my precious edits\n", encoding="utf-8")
    code, _, err = run(capsys, "copy-cfg", "qwen2_5_0_5b_instruct_lora", str(dest))
    assert code == 2
    assert "already exists" in err and str(dest) in err
    assert dest.read_text(encoding="utf-8") == "my precious edits\n"


def test_copy_into_a_directory_that_already_holds_the_recipe(tmp_path, capsys):
    assert run(capsys, "copy-cfg", "qwen2_5_0_5b_instruct_lora", str(tmp_path))[0] == 0
    code, _, err = run(capsys, "copy-cfg", "qwen2_5_0_5b_instruct_lora", str(tmp_path))
    assert code == 2 and "already exists" in err


def test_copy_unknown_name_suggests_and_has_no_traceback(tmp_path, capsys):
    code, out, err = run(capsys, "copy-cfg", "qwen2_5_0_5b_instruct_qlroa", str(tmp_path))
    assert code == 2
    assert err.startswith("mmtune: error:")
    assert "did you mean 'qwen2_5_0_5b_instruct_qlora'" in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_copy_a_file_path_that_is_not_a_builtin(tmp_path, capsys):
    own = tmp_path / "own.yaml"
    own.write_text("model: {path: x}\n", encoding="utf-8")
    code, _, err = run(capsys, "copy-cfg", str(own), str(tmp_path / "copy.yaml"))
    assert code == 2 and "not a built-in recipe" in err
