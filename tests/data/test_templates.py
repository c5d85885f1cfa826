"""Every named template renders exactly what the model's own chat template renders.

References are the official `chat_template` strings from the models' tokenizer_config.json, kept
in tests/data/fixtures/chat_templates/ (provenance in SOURCES.md and in each file's first line).
Each is put on the tiny tokenizer, with the bos/eos tokens the real tokenizer has, and rendered
with `apply_chat_template` — the same call transformers users make.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest

from mmtune.data.conversation import Message
from mmtune.data.templates import TEMPLATES, Template, TokenizerTemplate, get_template
from mmtune.errors import ConfigError
from mmtune.testing.tiny import tiny_tokenizer_dir

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"

# template name -> (reference fixture, bos_token, eos_token of the reference model's tokenizer)
REFERENCES = {
    "chatml": ("chatml.jinja", None, "<|im_end|>"),  # teknium/OpenHermes-2.5-Mistral-7B
    "qwen_chat": ("qwen_chat.jinja", None, "<|im_end|>"),  # Qwen/Qwen2.5-*-Instruct
    "internlm2_chat": ("internlm2_chat.jinja", "<s>", "</s>"),  # internlm/internlm2-chat-*
    "llama3_chat": ("llama3_chat.jinja", "<|begin_of_text|>", "<|eot_id|>"),  # Meta-Llama-3-8B-Instruct
    "phi3_chat": ("phi3_chat.jinja", "<s>", "<|endoftext|>"),  # microsoft/Phi-3-mini-4k-instruct
    "vicuna": ("vicuna.jinja", "<s>", "</s>"),  # FastChat vicuna_v1.1 / LLaVA-1.5 "v1"
}

# What each template trains for an answer: (text before the content, strip content?, end of turn).
ANSWER = {
    "chatml": ("", False, "<|im_end|>"),
    "qwen_chat": ("", False, "<|im_end|>"),
    "internlm2_chat": ("", False, "<|im_end|>"),
    "llama3_chat": ("", True, "<|eot_id|>"),
    "phi3_chat": ("", False, "<|end|>"),
    # "ASSISTANT:" is the generation prompt, so the space after it is generated (and byte-level BPE
    # merges it into the answer's first token): it belongs to the answer.
    "vicuna": (" ", False, "</s>"),
    "default": ("", False, "</s>"),
}

CONVERSATIONS = {
    "single_turn": [("user", "Hi"), ("assistant", "Hello! How can I help?")],
    "multi_turn": [("user", "Hi"), ("assistant", "Hello!"), ("user", "What is 2+2?"), ("assistant", "4")],
    "with_system": [("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello.")],
    "system_multi_turn": [
        ("system", "You are terse."),
        ("user", "Hi"),
        ("assistant", "Hello."),
        ("user", "名字?"),
        ("assistant", "我是小助手。"),
    ],
    "empty_system": [("system", ""), ("user", "Hi"), ("assistant", "Hello.")],
    "whitespace": [("user", "  two\nlines  "), ("assistant", " spaced answer \n")],
}
PROMPTS = {  # conversations that end with the user: what chat / serve render for generation
    "prompt": [("user", "Hi")],
    "prompt_with_system": [("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello."), ("user", "Bye")],
}


def messages(conv) -> list[Message]:
    return [Message(role, content) for role, content in conv]


def dicts(conv) -> list[dict]:
    return [{"role": role, "content": content} for role, content in conv]


def read_reference(name: str) -> str:
    """The fixture without its provenance line (a jinja comment that renders nothing anyway)."""
    text = (FIXTURES / REFERENCES[name][0]).read_text(encoding="utf-8")
    header, body = text.split("\n", 1)
    assert header.startswith("{#-") and header.endswith("-#}")
    return body


@functools.lru_cache(maxsize=1)
def _base_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir())


def tokenizer_with(chat_template: str, bos: str | None = None, eos: str | None = None):
    tok = copy.deepcopy(_base_tokenizer())
    tok.bos_token = bos
    tok.eos_token = eos
    tok.chat_template = chat_template
    return tok


def reference_tokenizer(name: str):
    _, bos, eos = REFERENCES[name]
    return tokenizer_with(read_reference(name), bos, eos)


def apply(tok, conv, add_generation_prompt: bool) -> str:
    return tok.apply_chat_template(dicts(conv), tokenize=False, add_generation_prompt=add_generation_prompt)


ALL_CONVS = {**CONVERSATIONS, **PROMPTS}


# --- named templates == the official template -------------------------------------------------


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("conv", list(ALL_CONVS))
@pytest.mark.parametrize("name", list(REFERENCES))
def test_render_equals_official_template(name, conv, add_generation_prompt):
    # Phi-3's official template appends eos_token ("<|endoftext|>") when add_generation_prompt is
    # false; phi3_chat reproduces it through `closing` (untrained), so equality is exact everywhere.
    tok = reference_tokenizer(name)
    expected = apply(tok, ALL_CONVS[conv], add_generation_prompt)
    text, _ = get_template(name).render(messages(ALL_CONVS[conv]), add_generation_prompt)
    assert text == expected


def test_every_named_template_is_checked():
    assert set(TEMPLATES) == set(ANSWER)
    assert set(REFERENCES) == set(TEMPLATES) - {"default"}  # "default" is ours: no model to match


def test_official_renderings_spot_check():
    """A few renderings written out in full, so a wrong fixture cannot hide behind itself."""
    conv = messages([("user", "Hi"), ("assistant", "Hello")])
    assert get_template("qwen_chat").render(conv)[0] == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    )
    assert get_template("llama3_chat").render(conv, add_generation_prompt=False)[0] == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
    )
    assert get_template("phi3_chat").render(conv)[0] == "<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>\n<|endoftext|>"
    assert get_template("internlm2_chat").render(conv[:1], add_generation_prompt=True)[0] == (
        "<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert get_template("vicuna").render(conv[:1], add_generation_prompt=True)[0] == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
        "helpful, detailed, and polite answers to the user's questions. USER: Hi ASSISTANT:"
    )


# --- the Vicuna reference is FastChat's own prompt builder ---------------------------------------

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def fastchat_vicuna_prompt(conv, add_generation_prompt: bool) -> str:
    """lm-sys/FastChat fastchat/conversation.py: template "vicuna_v1.1" (roles USER/ASSISTANT, sep " ",
    sep2 "</s>") and `Conversation.get_prompt` for SeparatorStyle.ADD_COLON_TWO, line for line.
    LLaVA's conv_vicuna_v1 (SeparatorStyle.TWO) builds the same string."""
    system, rest = VICUNA_SYSTEM, list(conv)
    if rest and rest[0][0] == "system":
        system = rest.pop(0)[1]
    roles = {"user": "USER", "assistant": "ASSISTANT"}
    turns = [[roles[role], content] for role, content in rest]
    if add_generation_prompt:
        turns.append(["ASSISTANT", None])  # FastChat: conv.append_message(conv.roles[1], None)
    seps = [" ", "</s>"]
    ret = system + seps[0]
    for i, (role, message) in enumerate(turns):
        if message:
            ret += role + ": " + message + seps[i % 2]
        else:
            ret += role + ":"
    return ret


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("conv", list(ALL_CONVS))
def test_vicuna_reference_is_fastchat(conv, add_generation_prompt):
    tok = reference_tokenizer("vicuna")
    assert apply(tok, ALL_CONVS[conv], add_generation_prompt) == fastchat_vicuna_prompt(ALL_CONVS[conv], add_generation_prompt)


# --- to_jinja() is the same format ---------------------------------------------------------------


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_to_jinja_renders_like_render(name, add_generation_prompt):
    template = TEMPLATES[name]
    tok = tokenizer_with(template.to_jinja())  # bos/eos are literals in to_jinja(): none needed
    for conv in ALL_CONVS.values():
        text, _ = template.render(messages(conv), add_generation_prompt)
        assert apply(tok, conv, add_generation_prompt) == text


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_to_jinja_generation_blocks_mark_the_trained_spans(name):
    """`{% generation %}` in the exported template marks the tokens mmtune trains (encode.py rule:
    a token is trained when it starts inside a trained span)."""
    template = TEMPLATES[name]
    tok = tokenizer_with(template.to_jinja())
    for conv in CONVERSATIONS.values():
        out = tok.apply_chat_template(
            dicts(conv), tokenize=True, return_dict=True, return_assistant_tokens_mask=True, add_generation_prompt=False
        )
        text, spans = template.render(messages(conv))
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert list(out["input_ids"]) == list(enc["input_ids"])
        ours = [int(any(s <= start < e for s, e in spans)) for start, _ in enc["offset_mapping"]]
        assert list(out["assistant_masks"]) == ours


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_to_jinja_takes_list_content_as_processors_send_it(name):
    """[{"type": "image"}, {"type": "text", ...}] renders as the text training saw: "<image>\\nWhat is it?"."""
    tok = tokenizer_with(TEMPLATES[name].to_jinja())
    as_text = [{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "<image>\nWhat is it?"}, {"role": "assistant", "content": "A cat."},
               {"role": "user", "content": "And <image> this?\n<image>"}]
    as_parts = [as_text[0],
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
                {"role": "user", "content": [{"type": "text", "text": "And <image> this?"},
                                             {"type": "image_url", "image_url": {"url": "b.png"}}]}]
    for gen in (False, True):
        assert (tok.apply_chat_template(as_parts, tokenize=False, add_generation_prompt=gen)
                == tok.apply_chat_template(as_text, tokenize=False, add_generation_prompt=gen))


def test_list_content_preamble_is_applied_once():
    from mmtune.data.templates import with_content_parts

    jinja = TEMPLATES["chatml"].to_jinja()
    assert with_content_parts(jinja) == jinja


# --- trained spans ------------------------------------------------------------------------------


def expected_answers(name: str, conv) -> list[str]:
    before, strip, end = ANSWER[name]
    return [before + (c.strip() if strip else c) + end for role, c in conv if role == "assistant"]


@pytest.mark.parametrize("conv", list(CONVERSATIONS))
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_trained_spans_are_answers_and_end_of_turn(name, conv):
    text, spans = get_template(name).render(messages(CONVERSATIONS[conv]))
    assert [text[s:e] for s, e in spans] == expected_answers(name, CONVERSATIONS[conv])


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_prompt_only_has_no_trained_span(name):
    _, spans = get_template(name).render(messages(PROMPTS["prompt"]), add_generation_prompt=True)
    assert spans == []


def test_chatml_span_is_answer_plus_im_end():
    text, spans = get_template("chatml").render(messages([("user", "Q"), ("assistant", "Hi")]))
    assert [text[s:e] for s, e in spans] == ["Hi<|im_end|>"]
    assert text[spans[0][1] :] == "\n"  # the newline after <|im_end|> is not trained


# --- `auto`: the tokenizer's own template ----------------------------------------------------------


@pytest.mark.parametrize("conv", list(CONVERSATIONS))
@pytest.mark.parametrize("name", list(REFERENCES))
def test_auto_finds_the_named_templates_spans(name, conv):
    tok = reference_tokenizer(name)
    auto = get_template("auto", tok)
    assert isinstance(auto, TokenizerTemplate)
    msgs = messages(CONVERSATIONS[conv])
    assert auto.render(msgs) == get_template(name).render(msgs)


@pytest.mark.parametrize("name", list(REFERENCES))
def test_auto_generation_prompt(name):
    tok = reference_tokenizer(name)
    msgs = messages(PROMPTS["prompt_with_system"])
    assert get_template("auto", tok).render(msgs, add_generation_prompt=True) == get_template(name).render(
        msgs, add_generation_prompt=True
    )


def test_auto_rejects_a_template_that_is_not_incremental():
    # Renders the last assistant turn differently from earlier ones: spans cannot be found.
    jinja = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}[old]{{ m['content'] }}"
        "{% else %}<{{ m['role'] }}>{{ m['content'] }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    tok = tokenizer_with(jinja)
    with pytest.raises(ConfigError, match="incrementally"):
        get_template("auto", tok).render(messages(CONVERSATIONS["multi_turn"]))


def test_auto_needs_a_chat_template():
    tok = tokenizer_with(None)
    with pytest.raises(ConfigError, match="no"):
        get_template("auto", tok)
    with pytest.raises(ConfigError):
        get_template("auto")


# --- lookup ---------------------------------------------------------------------------------------


def test_unknown_template_suggests_the_close_name():
    with pytest.raises(ConfigError) as info:
        get_template("qwen_caht")
    assert "'qwen_chat'" in str(info.value)
    assert "qwen_caht" in str(info.value)


def test_named_templates_are_templates():
    for name, template in TEMPLATES.items():
        assert isinstance(template, Template) and template.name == name
        assert get_template(name) is template
