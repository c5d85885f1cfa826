"""`mmtune chat`: template from what export stored, streaming, multi-turn memory, clear/exit."""

from __future__ import annotations

import io
import logging

import pytest

from mmtune.data.templates import TokenizerTemplate
from mmtune.errors import MmtuneError
from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.infer.chat import chat_loop
from mmtune.infer.engine import GenerationSettings
from mmtune.infer.load import load_for_inference
from mmtune.testing.runs import NAME, lora_run


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    recipe, result = lora_run()
    return recipe, checkpoint_to_hf(recipe, result.final_dir, tmp_path_factory.mktemp("chat") / "adapter")


def test_chat_uses_stored_template_and_remembers_turns(adapter_dir):
    recipe, adapter = adapter_dir
    loaded = load_for_inference(recipe.model.path, adapter=str(adapter), device="cpu")
    assert isinstance(loaded.template, TokenizerTemplate)
    stdin = io.StringIO("who are you?\n\nwho are you?\nclear\nexit\nnever read\n")
    stdout = io.StringIO()
    seen = []
    original = loaded.template.render

    def spy(messages, add_generation_prompt=False, tools=None):
        seen.append(len(messages))
        return original(messages, add_generation_prompt, tools)

    loaded.template.render = spy
    chat_loop(loaded, GenerationSettings(max_new_tokens=24), stdin=stdin, stdout=stdout)
    out = stdout.getvalue()
    assert out.count("Assistant:") == 2
    assert NAME in out.split("Assistant:")[1]
    assert "(conversation cleared)" in out
    assert seen == [1, 3]  # the second question saw the first turn


def chat_output(adapter_dir, lines: str) -> str:
    """What the terminal chat prints for these input lines, with the trained adapter loaded."""
    recipe, adapter = adapter_dir
    loaded = load_for_inference(recipe.model.path, adapter=str(adapter), device="cpu")
    stdout = io.StringIO()
    chat_loop(loaded, GenerationSettings(max_new_tokens=4), stdin=io.StringIO(lines), stdout=stdout)
    return stdout.getvalue()


def test_text_model_refuses_image_command(adapter_dir):
    out = chat_output(adapter_dir, "/image a.png\n/exit\nnever\n")
    assert "/image" not in out.splitlines()[0]  # no vision help for a text model
    assert "error: this is a text-only model" in out and "Assistant:" not in out


def test_image_command_is_a_word_and_takes_quoted_paths():
    from mmtune.infer.chat import image_paths

    assert image_paths("a.png 'my photos/b c.png'") == ["a.png", "my photos/b c.png"]
    assert image_paths("") == []
    with pytest.raises(MmtuneError, match="No closing quotation"):
        image_paths("'a.png")


def test_slash_words_that_are_not_commands_are_questions(adapter_dir):
    out = chat_output(adapter_dir, "/images of cats?\n/exit\n")
    assert "error:" not in out and out.count("Assistant:") == 1  # asked, not taken for /image


def test_template_mismatch_warns(adapter_dir, caplog):
    recipe, adapter = adapter_dir
    with caplog.at_level(logging.WARNING):
        load_for_inference(recipe.model.path, adapter=str(adapter), template="llama3_chat", device="cpu")
    assert "differs from the chat template stored" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_for_inference(recipe.model.path, adapter=str(adapter), template="chatml", device="cpu")
    assert "differs" not in caplog.text


def test_chat_cli_query_and_errors(adapter_dir, capsys):
    from mmtune.cli.main import main

    recipe, adapter = adapter_dir
    assert main(["chat", recipe.model.path, "--adapter", str(adapter), "--query", "who are you?", "--max-new-tokens", "24"]) == 0
    assert NAME in capsys.readouterr().out
    assert main(["chat", "./no/such/model"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["chat", recipe.model.path, "--prompt-template", "nope"]) == 2
    assert "unknown template 'nope'" in capsys.readouterr().err


def test_sampling_settings_are_used(adapter_dir):
    from mmtune.data.conversation import Message
    from mmtune.infer.engine import generate_reply

    recipe, adapter = adapter_dir
    loaded = load_for_inference(recipe.model.path, adapter=str(adapter), device="cpu")
    msgs = [Message("user", "who are you?")]
    greedy = {generate_reply(loaded.model, loaded.tokenizer, loaded.template, msgs, GenerationSettings(max_new_tokens=12)) for _ in range(2)}
    assert len(greedy) == 1
    hot = GenerationSettings(max_new_tokens=12, temperature=5.0, top_p=1.0)
    sampled = {generate_reply(loaded.model, loaded.tokenizer, loaded.template, msgs, hot) for _ in range(4)}
    assert len(sampled) > 1
    with pytest.raises(MmtuneError):
        load_for_inference(recipe.model.path, adapter=str(adapter) + "-missing", device="cpu")
