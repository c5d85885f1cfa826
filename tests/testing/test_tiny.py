"""Tiny models are real transformers architectures loaded with from_pretrained, with a local tokenizer."""

from __future__ import annotations

import json

import pytest

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mmtune.testing.catalog import copy_tiny
from mmtune.testing.tiny import SPECIAL_TOKENS


def test_tiny_models_are_real_architectures(tiny_qwen2_dir, tiny_llama_dir):
    for path, arch in ((tiny_qwen2_dir, "Qwen2ForCausalLM"), (tiny_llama_dir, "LlamaForCausalLM")):
        config = json.loads((path / "config.json").read_text())
        assert config["architectures"] == [arch]
        model = AutoModelForCausalLM.from_pretrained(path)
        assert type(model).__name__ == arch
        assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 5e6
        tok = AutoTokenizer.from_pretrained(path)
        assert tok.is_fast and len(tok) == config["vocab_size"]
        assert tok.chat_template and tok.eos_token == "<|im_end|>"
        with torch.no_grad():
            out = model(**tok("hello world", return_tensors="pt"))
        assert out.logits.shape[-1] == len(tok)


def test_tokenizer_has_chat_specials_as_single_tokens(tiny_tokenizer):
    for special in SPECIAL_TOKENS:
        assert len(tiny_tokenizer(special, add_special_tokens=False).input_ids) == 1, special
    # byte-level: any text round-trips, Chinese included
    text = "Who are you? 你是谁？ émoji 🙂"
    assert tiny_tokenizer.decode(tiny_tokenizer(text, add_special_tokens=False).input_ids) == text


def test_make_tiny_cli_copies_a_loadable_model(tmp_path, capsys):
    from mmtune.cli.main import main

    assert main(["make-tiny", "llama", str(tmp_path / "m")]) == 0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "m").config.model_type == "llama"
    assert not (tmp_path / "m" / ".complete").exists()
    copy_tiny("tokenizer", tmp_path / "t")
    assert AutoTokenizer.from_pretrained(tmp_path / "t").eos_token == "<|im_end|>"


@pytest.mark.parametrize("kind, model_type", [("clip", "clip_vision_model"), ("siglip", "siglip_vision_model")])
def test_make_tiny_cli_writes_a_vision_encoder_with_its_processor(tmp_path, kind, model_type):
    from transformers import AutoConfig, AutoImageProcessor

    from mmtune.cli.main import main

    assert main(["make-tiny", kind, str(tmp_path / "v")]) == 0
    assert AutoConfig.from_pretrained(tmp_path / "v").model_type == model_type
    assert AutoImageProcessor.from_pretrained(tmp_path / "v").size  # the processor travels with the encoder
