"""tiktoken-backed encoding (mmtune.data.fast_bpe) gives exactly the tokenizer's ids and offsets, is
refused for tokenizers it cannot run, and a disagreement found by the spot checks sends the whole
dataset back through the tokenizer."""

from __future__ import annotations

import copy
import json
import logging
import random

import numpy as np
import pytest
from tokenizers import normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import mmtune.data.encode as encode_module
from mmtune.config.load import validate_recipe
from mmtune.data.dataset import encode_datasets
from mmtune.data.encode import ConversationEncoder
from mmtune.data.fast_bpe import FastBPE
from mmtune.data.templates import TEMPLATES, get_template

from tests.data.test_encode_batch import TURNS, conversation, one_by_one, write_records

PIECES = ["the", " cat", "Hello", "  ", "\n", "\n\n", "\t", "\r\n", "123", "4567", "'s", "'LL", "don't", "?!",
          "...", "你好", "世界", "🐱", "🐶🐶", "é", "ß", "Ωmega", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
          "<s>", "</s>", "[INST]", " [/INST]", "<|begin_of_text|>", "<|start_header_id|>", "x" * 40, " ", "ǅ"]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.fixture
def fast(tiny_tokenizer):
    fast = FastBPE.from_tokenizer(tiny_tokenizer)
    assert fast is not None
    return fast


def test_ids_and_offsets_equal_the_tokenizers_on_mixed_text(tiny_tokenizer, fast):
    """ASCII, CJK, emoji, whitespace runs, digits, contractions and special tokens, in random mixes."""
    texts = random_texts(600)
    got = fast.encode(texts)
    assert got is not None
    ids, starts = encode_module._tokenize_with(tiny_tokenizer, texts)
    assert got[0] == ids
    np.testing.assert_array_equal(got[1], starts)
    assert any(tiny_tokenizer.convert_tokens_to_ids("<|im_start|>") in x for x in ids)  # specials are single ids


def test_text_not_in_nfc_goes_to_the_tokenizer(tiny_tokenizer):
    """Under an NFC normalizer (transformers' Qwen2Tokenizer sets one) a text NFC would change is left
    to the tokenizer; the offsets of NFC text are the tokenizer's."""
    nfc = with_backend(tiny_tokenizer, lambda b: setattr(b, "normalizer", normalizers.NFC()))
    fast = FastBPE.from_tokenizer(nfc)
    assert fast.nfc
    assert fast.encode(["plain", "a\u0301 composed by NFC"]) is None
    texts = ["plain", "á already composed", *random_texts(50, seed=1)]
    got, ref = fast.encode(texts), encode_module._tokenize_with(nfc, texts)
    assert got[0] == ref[0]
    np.testing.assert_array_equal(got[1], ref[1])


@pytest.mark.parametrize("name", ["auto", *TEMPLATES])
def test_fast_encoder_equals_the_tokenizer_for_every_template(name, tiny_tokenizer, monkeypatch):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = TEMPLATES["chatml"].to_jinja()
    plain = ConversationEncoder(tok, get_template(name, tok), max_length=4096)
    convs = [conversation(t) for t in TURNS if "\u0301" not in "".join(c for _, c in t)]  # all NFC: fast path
    expected = plain.encode_batch(convs)

    fast_encoder = ConversationEncoder(tok, get_template(name, tok), max_length=4096)
    fast_encoder.fast = FastBPE.from_tokenizer(tok, verify_every=10**9)
    fast_encoder.fast.should_verify()  # spend the one verified call: what follows is tiktoken only
    monkeypatch.setattr(encode_module, "_tokenize_with", lambda *a: pytest.fail("the tokenizer was called"))
    got = fast_encoder.encode_batch(convs)
    np.testing.assert_array_equal(got.input_ids, expected.input_ids)
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_array_equal(got.offsets, expected.offsets)


def with_backend(tokenizer, change) -> PreTrainedTokenizerFast:
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    change(backend)
    return PreTrainedTokenizerFast(tokenizer_object=backend)


@pytest.mark.parametrize("change", [
    lambda b: setattr(b, "normalizer", normalizers.Lowercase()),
    lambda b: setattr(b, "pre_tokenizer", pre_tokenizers.Whitespace()),
    lambda b: setattr(b, "pre_tokenizer", pre_tokenizers.ByteLevel(add_prefix_space=True)),
], ids=["lowercase-normalizer", "whitespace-pre-tokenizer", "prefix-space"])
def test_refused_for_tokenizers_it_cannot_run(change, tiny_tokenizer):
    assert FastBPE.from_tokenizer(with_backend(tiny_tokenizer, lambda b: None)) is not None  # the control
    assert FastBPE.from_tokenizer(with_backend(tiny_tokenizer, change)) is None


def without_a_used_merge(tokenizer):
    """The tokenizer with one merge taken out of its list (its token stays in the vocabulary): the
    tokenizer no longer makes that token, tiktoken still does, so the two disagree."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    merges = spec["model"]["merges"]
    drop = next(i for i, m in enumerate(merges) if (m if isinstance(m, str) else " ".join(m)) == "Ġ t")
    del merges[drop]
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))


def recipe_for(model_dir, path, fast_bpe=True):
    return validate_recipe({
        "model": {"path": str(model_dir)},
        "data": {"datasets": [{"path": str(path), "format": "openai"}], "template": "chatml", "max_length": 64,
                 "num_proc": 2, "fast_bpe": fast_bpe},
    })


def test_a_disagreement_reencodes_everything_with_the_tokenizer(tiny_qwen2_dir, tiny_tokenizer, tmp_path,
                                                                 isolated_dataset_cache, caplog):
    broken = without_a_used_merge(tiny_tokenizer)
    fast = FastBPE.from_tokenizer(broken)
    assert fast is not None
    texts = ["the cat sat on the mat", "to tell the truth"]
    got, ref = fast.encode(texts), encode_module._tokenize_with(broken, texts)
    assert got[0] != ref[0]  # the control: this tokenizer really differs from tiktoken

    path, records = write_records(tmp_path, 40)
    with caplog.at_level(logging.WARNING):
        encoded, stats = encode_datasets(recipe_for(tiny_qwen2_dir, path).data, broken, use_cache=False)
    assert "disagreed with the tokenizer" in caplog.text
    assert [(ids, labels) for ids, labels in zip(encoded["input_ids"], encoded["labels"])] == one_by_one(broken, records)
    assert stats.records == len(records) and stats.samples == len(encoded)


def test_fast_bpe_false_never_uses_tiktoken(tiny_qwen2_dir, tiny_tokenizer, tmp_path, isolated_dataset_cache,
                                            monkeypatch):
    monkeypatch.setattr(FastBPE, "encode", lambda *a: pytest.fail("tiktoken was used"))
    path, records = write_records(tmp_path, 20)
    encoded, _ = encode_datasets(recipe_for(tiny_qwen2_dir, path, fast_bpe=False).data, tiny_tokenizer, use_cache=False)
    assert [(ids, labels) for ids, labels in zip(encoded["input_ids"], encoded["labels"])] == one_by_one(
        tiny_tokenizer, records)
