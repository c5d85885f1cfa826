"""`mmtune data preview`: samples as the model sees them, trained spans marked, --json ids/labels."""

from __future__ import annotations

import json

import yaml

from mmtune.cli.main import main
from mmtune.cli.preview import END, START


def write_recipe(tmp_path, model_dir, max_length=256):
    data = tmp_path / "d.jsonl"
    rows = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello there"}]},
        {"messages": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "first"},
                      {"role": "user", "content": "two"}, {"role": "assistant", "content": "second"}]},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"path": str(model_dir)},
        "data": {"datasets": [{"path": str(data)}], "template": "chatml", "max_length": max_length},
    }))
    return recipe


def test_preview_marks_exactly_the_answers(tmp_path, tiny_qwen2_dir, capsys):
    recipe = write_recipe(tmp_path, tiny_qwen2_dir)
    assert main(["data", "preview", str(recipe), "-n", "2"]) == 0
    out = capsys.readouterr().out
    body = out.split("\n", 1)[1]  # after the legend line, which names the markers
    marked = [seg.split(END)[0] for seg in body.split(START)[1:]]
    assert marked == ["Hello there<|im_end|>", "first<|im_end|>", "second<|im_end|>"]
    assert "Be brief." in out and "record 1" in out and "tokens" in out


def test_preview_json_has_ids_and_labels(tmp_path, tiny_qwen2_dir, tiny_tokenizer, capsys):
    recipe = write_recipe(tmp_path, tiny_qwen2_dir)
    assert main(["data", "preview", str(recipe), "-n", "1", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    trained = [t for t, lab in zip(item["input_ids"], item["labels"]) if lab != -100]
    assert tiny_tokenizer.decode(trained) == "Hello there<|im_end|>"
    assert item["tokens"] == len(item["input_ids"]) and item["trained_tokens"] == len(trained)


def test_preview_reports_truncation(tmp_path, tiny_qwen2_dir, capsys):
    recipe = write_recipe(tmp_path, tiny_qwen2_dir, max_length=16)
    assert main(["data", "preview", str(recipe), "-n", "2", "--set", "data.overlong=drop"]) == 0
    assert "DROPPED" in capsys.readouterr().out
