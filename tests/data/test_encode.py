"""Conversation -> input_ids + labels, checked against the tokenizer itself.

For every named template (on the tiny tokenizer, which has all their special tokens as single
tokens): the ids are exactly `tokenizer(rendered text)` and exactly what `apply_chat_template`
gives when the tokenizer carries `template.to_jinja()`; the trained tokens are exactly the
assistant answers plus their end-of-turn marker, and agree with transformers' own
`return_assistant_tokens_mask` from the `{% generation %}` blocks.
"""

from __future__ import annotations

import copy

import pytest

from mmtune.data.conversation import Conversation, Message
from mmtune.constants import IGNORE_INDEX
from mmtune.data.encode import ConversationEncoder, with_system
from mmtune.data.templates import TEMPLATES, get_template

CONVERSATIONS = {
    "single_turn": [("user", "Hi"), ("assistant", "Hello! How can I help?")],
    "multi_turn": [
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "What is two and two?"),
        ("assistant", "Four."),
        ("user", "Thanks"),
        ("assistant", "You are welcome."),
    ],
    "with_system": [("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello.")],
    "chinese": [("system", "你是小助手。"), ("user", "你叫什么名字?"), ("assistant", "我是小助手。"), ("user", "谢谢"), ("assistant", "不客气!")],
    "spaces": [("user", "two\nlines"), ("assistant", " leading space and\nnewline")],
}


def conversation(turns) -> Conversation:
    return Conversation([Message(role, content) for role, content in turns])


def dicts(messages) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in messages]


def trained_runs(sample) -> list[list[int]]:
    """Maximal runs of consecutive trained tokens."""
    runs, current = [], []
    for label in sample.labels:
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    if current:
        runs.append(current)
    return runs


def decode(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def expected_answers(template, messages) -> list[str]:
    clean = (lambda s: s.strip()) if template.strip_content else (lambda s: s)
    return [
        template.assistant.format(content=clean(m.content)) + template.assistant_suffix
        for m in messages
        if m.role == "assistant"
    ]


def ids_of(encoding) -> list[int]:
    """apply_chat_template(tokenize=True) returns a BatchEncoding in transformers 5, a list before."""
    if hasattr(encoding, "keys") and "input_ids" in encoding.keys():
        encoding = encoding["input_ids"]
    return list(encoding)


@pytest.fixture
def jinja_tokenizer(tiny_tokenizer):
    """tokenizer_for(template) -> a copy of the tiny tokenizer carrying template.to_jinja()."""

    def make(template):
        tok = copy.deepcopy(tiny_tokenizer)
        tok.chat_template = template.to_jinja()
        return tok

    return make


# --- ids are the tokenizer's own --------------------------------------------------------------------


@pytest.mark.parametrize("conv", list(CONVERSATIONS))
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_ids_equal_tokenizing_the_rendered_text_and_apply_chat_template(name, conv, tiny_tokenizer, jinja_tokenizer):
    template = TEMPLATES[name]
    c = conversation(CONVERSATIONS[conv])
    sample = ConversationEncoder(tiny_tokenizer, template, max_length=4096).encode(c)
    text, _ = template.render(c.messages)
    assert sample.input_ids == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    tok = jinja_tokenizer(template)
    assert sample.input_ids == ids_of(tok.apply_chat_template(dicts(c.messages), tokenize=True))
    assert len(sample.labels) == len(sample.input_ids)
    assert all(lab in (IGNORE_INDEX, tid) for lab, tid in zip(sample.labels, sample.input_ids))


def test_special_tokens_of_every_template_are_single_tokens(tiny_tokenizer):
    """The premise of these tests: markers like <|im_end|> are one token, never split."""
    for marker in ["<|im_start|>", "<|im_end|>", "<s>", "</s>", "<|begin_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
                   "<|endoftext|>"]:
        assert len(tiny_tokenizer(marker, add_special_tokens=False)["input_ids"]) == 1, marker


# --- labels are exactly the answers + end of turn ------------------------------------------------------


@pytest.mark.parametrize("conv", list(CONVERSATIONS))
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_trained_tokens_are_exactly_the_answers(name, conv, tiny_tokenizer):
    template = TEMPLATES[name]
    c = conversation(CONVERSATIONS[conv])
    sample = ConversationEncoder(tiny_tokenizer, template, max_length=4096).encode(c)
    runs = trained_runs(sample)
    # One run per answer (user turns sit between them), each decoding to the answer + end of turn.
    assert [decode(tiny_tokenizer, r) for r in runs] == expected_answers(template, c.messages)
    untrained = decode(tiny_tokenizer, [t for t, lab in zip(sample.input_ids, sample.labels) if lab == IGNORE_INDEX])
    for m in c.messages:
        if m.role in ("user", "system"):
            assert m.content.strip() in untrained  # system and user text is never trained
    assert sample.n_trained == sum(len(r) for r in runs)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_multi_turn_trains_every_answer_and_never_user_or_system(name, tiny_tokenizer):
    template = TEMPLATES[name]
    c = conversation([("system", "System text here.")] + CONVERSATIONS["multi_turn"])
    encoder = ConversationEncoder(tiny_tokenizer, template, max_length=4096)
    sample = encoder.encode(c)
    text, spans = encoder.render(c)
    enc = tiny_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    answers = [m.content for m in c.messages if m.role == "assistant"]
    assert len(trained_runs(sample)) == len(answers) == 3
    for (start, end), label in zip(enc["offset_mapping"], sample.labels):
        piece = text[start:end]
        inside = any(s <= start < e for s, e in spans)
        assert (label != IGNORE_INDEX) == inside, (piece, label)
    # Each user / system text lies wholly in untrained tokens.
    for m in c.messages:
        if m.role == "assistant":
            continue
        at = text.index(m.content)
        for (start, end), label in zip(enc["offset_mapping"], sample.labels):
            if start < at + len(m.content) and end > at:
                assert label == IGNORE_INDEX, (m.role, text[start:end])


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_labels_match_transformers_assistant_tokens_mask(name, tiny_tokenizer, jinja_tokenizer):
    template = TEMPLATES[name]
    tok = jinja_tokenizer(template)
    for turns in CONVERSATIONS.values():
        c = conversation(turns)
        sample = ConversationEncoder(tiny_tokenizer, template, max_length=4096).encode(c)
        out = tok.apply_chat_template(
            dicts(c.messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert list(out["input_ids"]) == sample.input_ids
        ours = [int(lab != IGNORE_INDEX) for lab in sample.labels]
        assert list(out["assistant_masks"]) == ours


def test_auto_template_encodes_like_the_named_one(tiny_tokenizer):
    # The tiny tokenizer carries chatml's to_jinja() as its own chat template.
    c = conversation(CONVERSATIONS["multi_turn"])
    auto = ConversationEncoder(tiny_tokenizer, get_template("auto", tiny_tokenizer), max_length=4096).encode(c)
    named = ConversationEncoder(tiny_tokenizer, get_template("chatml"), max_length=4096).encode(c)
    assert auto == named


# --- system prompt ---------------------------------------------------------------------------------------


def test_encoder_system_is_inserted_when_missing_and_never_trained(tiny_tokenizer, jinja_tokenizer):
    template = get_template("chatml")
    encoder = ConversationEncoder(tiny_tokenizer, template, max_length=4096, system="Be brief.")
    c = conversation(CONVERSATIONS["single_turn"])
    sample = encoder.encode(c)
    text, _ = encoder.render(c)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi")
    assert sample.input_ids == tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert sample.input_ids == ids_of(
        jinja_tokenizer(template).apply_chat_template(dicts(with_system(c.messages, "Be brief.")), tokenize=True)
    )
    assert [decode(tiny_tokenizer, r) for r in trained_runs(sample)] == ["Hello! How can I help?<|im_end|>"]
    # Without the system prompt the sample is the same minus the system block.
    plain = ConversationEncoder(tiny_tokenizer, template, max_length=4096).encode(c)
    n_system = len(sample.input_ids) - len(plain.input_ids)
    assert n_system > 0
    assert sample.input_ids[n_system:] == plain.input_ids
    assert sample.labels[n_system:] == plain.labels
    assert set(sample.labels[:n_system]) == {IGNORE_INDEX}


def test_a_conversations_own_system_wins_over_the_encoder_system(tiny_tokenizer):
    encoder = ConversationEncoder(tiny_tokenizer, get_template("chatml"), max_length=4096, system="Be brief.")
    text, _ = encoder.render(conversation(CONVERSATIONS["with_system"]))
    assert "You are terse." in text and "Be brief." not in text


def test_encoder_system_replaces_a_templates_default_system(tiny_tokenizer):
    template = get_template("qwen_chat")
    c = conversation(CONVERSATIONS["single_turn"])
    default_text, _ = ConversationEncoder(tiny_tokenizer, template, max_length=4096).render(c)
    assert template.default_system in default_text
    text, _ = ConversationEncoder(tiny_tokenizer, template, max_length=4096, system="Be brief.").render(c)
    assert "Be brief." in text and template.default_system not in text


# --- length policy -------------------------------------------------------------------------------------

LONG_ANSWER = " ".join(["the red circle is left of the blue square"] * 30)
LONG_QUESTION = " ".join(["what color is the small triangle at the top"] * 30)


def test_truncate_cuts_to_max_length_and_keeps_trained_tokens(tiny_tokenizer):
    c = conversation([("user", "Describe the picture."), ("assistant", LONG_ANSWER)])
    encoder = ConversationEncoder(tiny_tokenizer, get_template("chatml"), max_length=32, overlong="truncate")
    full = encoder.encode_full(c)
    assert len(full.input_ids) > 100
    cut = encoder.encode(c)
    assert cut is not None
    assert len(cut.input_ids) == len(cut.labels) == 32
    assert cut.input_ids == full.input_ids[:32] and cut.labels == full.labels[:32]
    assert cut.n_trained > 0
    assert encoder.length(c) == len(full.input_ids)


def test_truncate_drops_a_sample_whose_answer_starts_after_max_length(tiny_tokenizer):
    c = conversation([("user", LONG_QUESTION), ("assistant", "Green.")])
    encoder = ConversationEncoder(tiny_tokenizer, get_template("chatml"), max_length=32, overlong="truncate")
    assert encoder.encode_full(c).n_trained > 0
    assert encoder.encode(c) is None


def test_drop_policy(tiny_tokenizer):
    encoder = ConversationEncoder(tiny_tokenizer, get_template("chatml"), max_length=32, overlong="drop")
    assert encoder.encode(conversation([("user", "Describe the picture."), ("assistant", LONG_ANSWER)])) is None
    short = conversation(CONVERSATIONS["single_turn"])
    assert encoder.encode(short) == encoder.encode_full(short)
    # Exactly max_length tokens is kept.
    n = encoder.length(short)
    exact = ConversationEncoder(tiny_tokenizer, get_template("chatml"), max_length=max(16, n), overlong="drop")
    assert n >= 16 and exact.encode(short) is not None


def test_a_slow_tokenizer_is_a_user_error_with_the_fix():
    from mmtune.errors import ConfigError

    class Slow:
        is_fast = False

    with pytest.raises(ConfigError, match=r"Slow\) is a slow \(Python\) tokenizer.*tokenizer.json"):
        ConversationEncoder(Slow(), get_template("chatml"), max_length=64)
