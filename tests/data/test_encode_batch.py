"""The batched encoder gives exactly what encoding one conversation at a time gives.

The reference below is the original one-by-one encoder, kept here verbatim: one `tokenizer(text)`
call with offsets per conversation and a per-token pass that moves a span pointer forward. The
batched path (one Rust `encode_batch` call, labels computed with numpy over all samples laid end to
end, the length policy vectorized, and the chunks tokenized on several threads) must match it token
for token, so a regression in the fast path cannot hide behind tests that only use one sample.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import mmtune.data.encode as encode_module
from mmtune.config.load import validate_recipe
from mmtune.data.conversation import Conversation, Message, validate_conversation
from mmtune.data.dataset import encode_datasets, sample_lengths
from mmtune.constants import IGNORE_INDEX
from mmtune.data.encode import ConversationEncoder, EncodedSample, fit_length
from mmtune.data.templates import TEMPLATES, get_template

TURNS = [
    [("user", "Hi"), ("assistant", "Hello! How can I help?")],
    [("user", "Hi"), ("assistant", "Hello!"), ("user", "What is two and two?"), ("assistant", "Four.")],
    [("system", "You are terse."), ("user", "Hi"), ("assistant", "Hello.")],
    [("system", "你是小助手。"), ("user", "你叫什么名字?"), ("assistant", "我是小助手。"), ("user", "谢谢"), ("assistant", "不客气!")],
    [("user", "two\nlines"), ("assistant", " leading space and\nnewline")],
    [("user", "  spaces  around  "), ("assistant", "   ")],  # an answer of spaces only
    [("user", "emoji 🐱🐶"), ("assistant", "🐱 is a cat,\temoji\r\nend")],
    [("user", "combining marks"), ("assistant", "a\u0301\u0323 e\u0323\u0301 Å A\u030a")],  # NFC composes/reorders
    [("user", "tail\n\n"), ("assistant", "\n\nanswer between newlines\n\n")],
    [("user", "x"), ("assistant", "")],  # nothing to train but the end-of-turn marker
]


def conversation(turns) -> Conversation:
    return Conversation([Message(role, content) for role, content in turns])


def reference_encode(tokenizer, text: str, spans) -> EncodedSample:
    """The original per-conversation encoder (before batching), unchanged."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = []
    span_i = 0
    for tok_id, (start, _end) in zip(enc["input_ids"], enc["offset_mapping"]):
        while span_i < len(spans) and spans[span_i][1] <= start:
            span_i += 1
        inside = span_i < len(spans) and spans[span_i][0] <= start < spans[span_i][1]
        labels.append(tok_id if inside else IGNORE_INDEX)
    return EncodedSample(list(enc["input_ids"]), labels)


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = TEMPLATES["chatml"].to_jinja()
    return tok


@pytest.mark.parametrize("name", ["auto", *TEMPLATES])
def test_batch_equals_one_by_one_for_every_template(name, chat_tokenizer):
    encoder = ConversationEncoder(chat_tokenizer, get_template(name, chat_tokenizer), max_length=4096)
    convs = [conversation(t) for t in TURNS]
    batch = encoder.encode_batch(convs)
    assert len(batch) == len(convs)
    assert batch.input_ids.dtype == np.int32 and batch.labels.dtype == np.int32
    for i, conv in enumerate(convs):
        expected = reference_encode(chat_tokenizer, *encoder.render(conv))
        assert batch.sample(i) == expected, TURNS[i]
        assert encoder.encode_full(conv) == expected
        assert int(batch.trained_counts()[i]) == expected.n_trained


def test_batch_order_and_size_do_not_matter(tiny_tokenizer):
    encoder = ConversationEncoder(tiny_tokenizer, get_template("vicuna"), max_length=4096)
    convs = [conversation(t) for t in TURNS] * 3
    whole = encoder.encode_batch(convs)
    backwards = encoder.encode_batch(convs[::-1])
    n = len(convs)
    for i in range(n):
        assert whole.sample(i) == backwards.sample(n - 1 - i) == encoder.encode_batch([convs[i]]).sample(0)
    assert len(encoder.encode_batch([])) == 0


def test_direct_rust_call_equals_the_tokenizer_call(tiny_tokenizer, monkeypatch):
    """The fast path calls the Rust tokenizer directly; the tokenizer's own call must give the same."""
    encoder = ConversationEncoder(tiny_tokenizer, get_template("chatml"), max_length=4096)
    convs = [conversation(t) for t in TURNS]
    assert encode_module._direct_backend(tiny_tokenizer) is not None
    fast = encoder.encode_batch(convs)
    monkeypatch.setattr(encode_module, "_direct_backend", lambda tokenizer: None)
    slow = encoder.encode_batch(convs)
    assert [fast.sample(i) for i in range(len(convs))] == [slow.sample(i) for i in range(len(convs))]


def test_a_backend_with_truncation_set_is_not_called_directly(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.backend_tokenizer.enable_truncation(8)
    assert encode_module._direct_backend(tok) is None
    tok.backend_tokenizer.no_truncation()
    assert encode_module._direct_backend(tok) is not None


@pytest.mark.parametrize("overlong", ["truncate", "drop"])
def test_vectorized_length_policy_equals_fit_length(overlong, tiny_tokenizer):
    long = " ".join(["the red circle is left of the blue square"] * 8)
    turns = [*TURNS, [("user", long), ("assistant", "Green.")], [("user", "Describe."), ("assistant", long)]]
    encoder = ConversationEncoder(tiny_tokenizer, get_template("chatml"), max_length=4096)
    batch = encoder.encode_batch([conversation(t) for t in turns])
    for max_length in (1, 5, 12, 20, 40, 80, 4096):
        fitted, status = batch.fit_lengths(max_length, overlong)
        for i in range(len(turns)):
            sample, state = fit_length(batch.sample(i), max_length, overlong)
            assert ["ok", "truncated", "dropped"][status[i]] == state, (max_length, i)
            assert fitted.sample(i) == (sample or EncodedSample([], [])), (max_length, i)


def write_records(tmp_path, n: int):
    """n records: the valid TURNS with a number appended to each user message, every 7th too long for 64."""
    long = " ".join(["what color is the small triangle at the top"] * 20)
    valid = [t for t in TURNS if not validate_conversation(conversation(t))]  # no empty answers here
    records = []
    for i in range(n):
        turns = valid[i % len(valid)] if i % 7 else [("user", f"{long} {i}"), ("assistant", "Green.")]
        records.append({"messages": [{"role": r, "content": f"{c} {i}" if r == "user" else c} for r, c in turns]})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path, records


def one_by_one(tokenizer, records) -> list[tuple[list[int], list[int]]]:
    encoder = ConversationEncoder(tokenizer, get_template("chatml"), max_length=64)
    expected = []
    for record in records:
        sample = encoder.encode(Conversation([Message(m["role"], m["content"]) for m in record["messages"]]))
        if sample is not None:
            expected.append((sample.input_ids, sample.labels))
    return expected


@pytest.fixture
def small_chunks(monkeypatch):
    """Tokenizer calls of 7 conversations, so that a few dozen records make many chunks for the threads."""
    import mmtune.data.dataset as dataset

    monkeypatch.setattr(dataset, "TEXT_CHUNK", 7)


def recipe_for(tiny_qwen2_dir, path, num_proc: int = 2):
    return validate_recipe({
        "model": {"path": str(tiny_qwen2_dir)},
        "data": {"datasets": [{"path": str(path), "format": "openai"}], "template": "chatml", "max_length": 64,
                 "num_proc": num_proc},
    })


@pytest.mark.parametrize("num_proc", [1, 3])
def test_dataset_on_threads_equals_encoding_one_by_one(num_proc, tiny_qwen2_dir, tmp_path, small_chunks,
                                                       isolated_dataset_cache):
    """Rows (in file order, dropped ones left out), lengths and stats are exactly the one-by-one encoding."""
    from mmtune.models.load import load_tokenizer

    path, records = write_records(tmp_path, 100)
    recipe = recipe_for(tiny_qwen2_dir, path, num_proc)
    tokenizer = load_tokenizer(recipe.model)
    encoded, stats = encode_datasets(recipe.data, tokenizer)

    expected = one_by_one(tokenizer, records)
    assert stats.bad_records == 0 and stats.dropped_overlong == len(records) - len(expected) > 0
    assert stats.samples == len(encoded) == len(expected)
    assert [(ids, labels) for ids, labels in zip(encoded["input_ids"], encoded["labels"])] == expected
    lengths = [len(ids) for ids, _ in expected]
    assert sample_lengths(encoded) == lengths == [len(x) for x in encoded["input_ids"]]
    assert stats.tokens == sum(lengths)
    assert stats.trained_tokens == sum(sum(t != IGNORE_INDEX for t in labels) for _, labels in expected)
    assert encoded.features["input_ids"].feature.dtype == "int32"


def test_threads_with_a_tokenizer_that_takes_the_ordinary_call(tiny_qwen2_dir, tmp_path, small_chunks,
                                                              isolated_dataset_cache):
    """A backend with truncation set is encoded through the tokenizer's own call (which resets it), safely
    from several threads, with the same result."""
    from mmtune.models.load import load_tokenizer

    path, records = write_records(tmp_path, 60)
    recipe = recipe_for(tiny_qwen2_dir, path, num_proc=4)
    tokenizer = load_tokenizer(recipe.model)
    tokenizer.backend_tokenizer.enable_truncation(8)
    encoded, _ = encode_datasets(recipe.data, tokenizer, use_cache=False)
    assert [(ids, labels) for ids, labels in zip(encoded["input_ids"], encoded["labels"])] == one_by_one(
        load_tokenizer(recipe.model), records)


@pytest.mark.parametrize("setting", [None, "true"])
def test_tokenizers_parallelism_is_off_while_tokenizing_and_restored_after(setting, tiny_qwen2_dir, tmp_path,
                                                                          monkeypatch, isolated_dataset_cache):
    """Our threads replace the Rust tokenizer's pool while they run; the user's setting comes back after."""
    import os

    from mmtune.models.load import load_tokenizer

    if setting is None:
        monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    else:
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", setting)
    seen = []
    real = encode_module.encode_rendered
    monkeypatch.setattr(encode_module, "encode_rendered",
                        lambda *a: seen.append(os.environ.get("TOKENIZERS_PARALLELISM")) or real(*a))
    path, _ = write_records(tmp_path, 20)
    recipe = recipe_for(tiny_qwen2_dir, path)
    encode_datasets(recipe.data, load_tokenizer(recipe.model), use_cache=False)
    assert seen and set(seen) == {"false"}
    assert os.environ.get("TOKENIZERS_PARALLELISM") == setting
