"""`load_pretrained`: the one way mmtune calls from_pretrained, with one user-error line when it fails."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from mmtune.errors import MmtuneError
from mmtune.models.load import load_pretrained


def test_loads_what_from_pretrained_loads(tiny_qwen2_dir):
    model = load_pretrained(AutoModelForCausalLM, tiny_qwen2_dir, "the model")
    assert type(model).__name__ == "Qwen2ForCausalLM"


def test_a_missing_local_path_is_named(tmp_path):
    with pytest.raises(MmtuneError, match=r"path '.*nowhere' does not exist \(give a local directory or a hub id\)"):
        load_pretrained(AutoTokenizer, tmp_path / "nowhere", "the tokenizer")


def test_a_directory_without_a_model_is_one_line_naming_what_and_where(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MmtuneError) as info:
        load_pretrained(AutoModelForCausalLM, tmp_path / "empty", "the base model", hint="point at a model dir")
    message = info.value.format()
    assert message.startswith(f"cannot load the base model from '{tmp_path / 'empty'}': ")
    assert message.endswith("(point at a model dir)") and "\n" not in message
