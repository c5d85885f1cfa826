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


@pytest.mark.parametrize("source", ["work_dirs/missing", "a/b/c", "./gone", "~/gone-model"])
def test_local_looking_paths_are_checked_locally_without_the_hub(tmp_path, monkeypatch, source):
    from mmtune.models import load

    monkeypatch.chdir(tmp_path)
    (tmp_path / "work_dirs").mkdir()  # `work_dirs/missing` is local: its first part is a local folder
    monkeypatch.setattr(load, "hub_reachable", lambda host: pytest.fail("the hub was asked about a local path"))
    with pytest.raises(MmtuneError, match=f"path '{source}' does not exist"):
        load.check_source(source)


def test_a_hub_id_with_the_hub_unreachable_is_one_line_suggesting_offline_mode(tmp_path, monkeypatch):
    from mmtune.models import load

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(load, "hub_reachable", lambda host: False)
    with pytest.raises(MmtuneError, match="'org/model' is not a local directory, and the Hugging Face hub") as info:
        load_pretrained(AutoTokenizer, "org/model", "the tokenizer")
    assert "HF_HUB_OFFLINE=1" in info.value.hint
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MmtuneError, match="neither a local directory nor in the Hugging Face cache"):
        load.check_source("org/model")
    monkeypatch.setattr(load, "hub_cached", lambda repo: True)  # a cached hub model loads offline
    load.check_source("org/model")
