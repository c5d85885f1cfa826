"""Exports hold what vLLM, SGLang and LMDeploy read (config, safetensors shards and index, tokenizer with
its chat template, generation config; an adapter's config and weights), and the check names what is
missing."""

from __future__ import annotations

import json
import shutil

from mmtune.export.servable import serving_problems
from mmtune.testing.tiny_vlm import tiny_vlm_dir


def test_exports_hold_what_the_engines_read(exported):
    _, _, adapter, merged = exported
    assert serving_problems(adapter) == []
    assert serving_problems(merged) == []
    assert len(list(merged.glob("model-*.safetensors"))) > 1  # the sharded case, with its index


def test_missing_pieces_are_named(exported, tmp_path):
    *_, merged = exported
    broken = shutil.copytree(merged, tmp_path / "broken")
    (broken / "chat_template.jinja").unlink()
    config = json.loads((broken / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (broken / "tokenizer_config.json").write_text(json.dumps(config))
    next(broken.glob("model-00002-*.safetensors")).unlink()
    (broken / "generation_config.json").unlink()
    problems = " | ".join(serving_problems(broken))
    assert "no chat template" in problems and "model-00002-of-00003.safetensors, which is missing" in problems
    assert "generation_config.json is missing" in problems


def test_a_vision_model_needs_its_processor(tmp_path):
    vlm = shutil.copytree(tiny_vlm_dir("qwen2_5_vl"), tmp_path / "vlm")
    assert not [p for p in serving_problems(vlm) if "preprocessor" in p]
    (vlm / "preprocessor_config.json").unlink()
    (vlm / "processor_config.json").unlink(missing_ok=True)
    assert any("preprocessor_config.json" in p for p in serving_problems(vlm))
