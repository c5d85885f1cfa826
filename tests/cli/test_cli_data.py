"""`mmtune data ...`: the parser built by `register`, and the functions behind each command."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import pytest

from mmtune.cli.data import register

FIXTURES = Path(__file__).parents[1] / "data" / "fixtures"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mmtune")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["data", *argv])


def run(*argv: str) -> int:
    args = parse(*argv)
    return args.func(args)


def test_check_good_files(capsys):
    assert run("check", str(FIXTURES / "llava.json"), str(FIXTURES / "openai.jsonl")) == 0
    out = capsys.readouterr().out
    assert "llava.json (llava): 3 records, 3 good, 0 bad" in out
    assert "openai.jsonl (openai): 2 records, 2 good, 0 bad" in out


def test_check_bad_file_exits_1(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {"conversations": [{"from": "gpt", "value": "b"}]},
    ]))
    assert run("check", str(FIXTURES / "llava.json"), str(path)) == 1
    out = capsys.readouterr().out
    assert "2 records, 1 good, 1 bad" in out
    assert f"{path}:record 1:conversations[0].from: first turn is from 'assistant', expected 'user'" in out
    assert run("check", str(tmp_path / "missing.json")) == 1
    assert "file not found" in capsys.readouterr().out


def test_check_with_config_measures_samples_with_the_recipe_and_its_overrides(tmp_path, tiny_qwen2_dir, capsys):
    """The recipe's tokenizer and template count the tokens; `--set` changes the recipe as for train."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "who are you? " * 8},
                                             {"role": "assistant", "content": "I am Nova. " * 8}]}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{path: {tiny_qwen2_dir}}}\ndata: {{datasets: [{{path: {data}}}], max_length: 2048}}\n")
    assert run("check", str(data), "--config", str(recipe)) == 0
    capsys.readouterr()
    assert run("check", str(data), "--config", str(recipe), "--set", "data.max_length=16") == 1
    out = capsys.readouterr().out
    assert "longer than max_length 16" in out and f"{data}:record 0" in out


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "minicpmv4_6", "llava"])
def test_check_with_a_vlm_config_counts_the_image_tokens_as_training_would(kind, tmp_path, capsys):
    """Image tokens per record come from the recipe's processor (settings included) or LLaVA's layout;
    a record whose images push it past max_length is flagged; counts equal what training encodes."""
    from mmtune.builders.data import sample_length_fn
    from mmtune.data.formats import read_file
    from mmtune.data.synth.shapes import make_shapes_dataset
    from mmtune.testing.tiny import tiny_lm_dir
    from mmtune.testing.tiny_vision import tiny_vision_dir
    from mmtune.testing.tiny_vlm import tiny_vlm_dir

    shapes = tmp_path / "shapes"
    make_shapes_dataset(shapes, n=10, seed=0, size=96)
    data = shapes / "finetune_minicpm.json"
    if kind == "llava":
        model = f"{{path: {tiny_lm_dir('qwen2')}, vision: {{path: {tiny_vision_dir('clip')}}}}}"
        extra = "template: chatml"
    else:
        model = f"{{path: {tiny_vlm_dir(kind)}}}"
        extra = "processor: {max_pixels: 3136}" if kind == "qwen2_5_vl" else "processor: {max_slice_nums: 2}"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {model}\ndata: {{datasets: [{{path: {data}}}], image_folder: {shapes}, "
                      f"max_length: 4096, {extra}}}\n")
    assert run("check", str(data), "--config", str(recipe)) == 0
    out = capsys.readouterr().out
    assert "image tokens per sample: median" in out
    length, _ = sample_length_fn(str(recipe))
    convs, _ = read_file(data)
    counts = [length(c) for c in convs]
    assert all(n_image > 0 for _, n_image in counts if _ is not None) and len({n for _, n in counts}) > 1
    two_images = [i for i, c in enumerate(convs) if len(c.images) == 2]
    one = [n for i, (_, n) in enumerate(counts) if i not in two_images and convs[i].images]
    assert two_images and max(counts[i][1] for i in two_images) > min(one)
    longest = max(n for n, _ in counts)
    assert run("check", str(data), "--config", str(recipe), "--set", f"data.max_length={longest - 1}") == 1
    assert f"sample is {longest} tokens, longer than max_length {longest - 1}" in capsys.readouterr().out


def test_check_format_choices():
    assert parse("check", "a.json", "--format", "minicpm").format == "minicpm"
    with pytest.raises(SystemExit):
        parse("check", "a.json", "--format", "csv")


def test_self_cognition_writes_file(tmp_path, capsys):
    out = tmp_path / "self.jsonl"
    assert run("self-cognition", "--name", "Mini", "--author", "Ada", "--lang", "en", "--repeat", "2",
               "-o", str(out)) == 0
    lines = out.read_text().splitlines()
    assert capsys.readouterr().out.strip() == f"wrote {len(lines)} conversations to {out}"
    assert len(lines) >= 50 and all("Mini" in json.loads(l)["messages"][1]["content"] for l in lines)


def test_preview_passes_arguments(monkeypatch):
    seen = {}

    def run_preview(config, *, n, as_json, overrides):
        seen.update(config=config, n=n, as_json=as_json, overrides=overrides)
        return 0

    monkeypatch.setitem(sys.modules, "mmtune.cli.preview", types.SimpleNamespace(run_preview=run_preview))
    assert run("preview", "demo.yaml", "-n", "5", "--json", "--set", "data.max_length=64", "--set", "a.b=c") == 0
    assert seen == {"config": "demo.yaml", "n": 5, "as_json": True, "overrides": ["data.max_length=64", "a.b=c"]}
    with pytest.raises(SystemExit):
        parse("preview", "demo.yaml", "--set", "no_equals_sign")


def test_help_has_examples():
    parser = argparse.ArgumentParser(prog="mmtune")
    sub = parser.add_subparsers()
    register(sub)
    data = sub.choices["data"]
    commands = next(a for a in data._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"check", "self-cognition", "preview", "shapes", "tools"}
    for command in commands.values():
        assert "examples:\n  mmtune data" in command.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["data"])  # a data command is required
