"""Recipe data -> encoded samples (cached on disk) -> training rows."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mmtune.config.load import validate_recipe
from mmtune.data.collate import FlatCollator
from mmtune.data.dataset import TrainRows, cache_key, encode_datasets
from mmtune.constants import IGNORE_INDEX
from mmtune.data.packing import pack_lengths
from mmtune.models.load import load_tokenizer

LONG_ANSWER = " ".join(["the red circle is left of the blue square"] * 20)
LONG_QUESTION = " ".join(["what color is the small triangle at the top"] * 20)


def chat(*turns) -> dict:
    roles = ["user", "assistant"]
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]}


GOOD = [
    chat("Hi", "Hello!"),
    chat("What is your name?", "I am a tiny assistant."),
    chat("Which color is the sky?", "Blue.", "And grass?", "Green."),
    chat("你好", "你好,我是小助手。"),
    chat("Count to three", "One two three."),
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                  {"role": "assistant", "content": "Hi."}]},
]
TRUNCATED = chat("Describe the picture.", LONG_ANSWER)  # answer starts early: cut, still trained
DROPPED = chat(LONG_QUESTION, "Green.")  # answer starts after max_length: dropped
BAD = {"messages": [{"role": "assistant", "content": "I speak first."}, {"role": "user", "content": "Hi"}]}


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture
def data_file(tmp_path) -> str:
    return write_jsonl(tmp_path / "train.jsonl", [*GOOD, TRUNCATED, BAD, DROPPED])


@pytest.fixture
def make_recipe(tiny_qwen2_dir):
    def make(path: str, **data):
        return validate_recipe({
            "model": {"path": str(tiny_qwen2_dir)},
            # the test file holds 1 bad record of 9: above the default 5% cap on bad records
            "data": {"datasets": [{"path": path, "format": "openai"}], "template": "chatml", "max_length": 64,
                     "max_bad_fraction": 0.2, **data},
        })

    return make


@pytest.fixture
def tokenizer(tiny_qwen2_dir):
    return load_tokenizer(validate_recipe({"model": {"path": str(tiny_qwen2_dir)}, "data": {"datasets": [{"path": "x"}]}}).model)


def rows_of(encoded) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    return [(tuple(i), tuple(l)) for i, l in zip(encoded["input_ids"], encoded["labels"])]


def test_encode_counts_samples_bad_records_and_overlong(data_file, make_recipe, tokenizer, isolated_dataset_cache):
    encoded, stats = encode_datasets(make_recipe(data_file).data, tokenizer)
    assert stats.records == 9
    assert stats.bad_records == 1
    assert stats.truncated == 1
    assert stats.dropped_overlong == 1
    assert stats.samples == len(encoded) == len(GOOD) + 1
    assert stats.from_cache is False
    lengths = [len(x) for x in encoded["input_ids"]]
    assert max(lengths) == 64  # the truncated sample
    assert stats.tokens == sum(lengths)
    assert stats.trained_tokens == sum(sum(t != IGNORE_INDEX for t in lab) for lab in encoded["labels"])
    for ids, labels in zip(encoded["input_ids"], encoded["labels"]):
        assert len(ids) == len(labels) and any(t != IGNORE_INDEX for t in labels)
    # The samples are the good records in file order, then the truncated one.
    first = tokenizer.decode(encoded["input_ids"][0], skip_special_tokens=False)
    assert first == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"


def test_drop_policy_drops_every_overlong_sample(data_file, make_recipe, tokenizer, isolated_dataset_cache):
    encoded, stats = encode_datasets(make_recipe(data_file, overlong="drop").data, tokenizer)
    assert (stats.truncated, stats.dropped_overlong, stats.samples, len(encoded)) == (0, 2, len(GOOD), len(GOOD))


def test_second_call_loads_the_cache(data_file, make_recipe, tokenizer, isolated_dataset_cache):
    recipe = make_recipe(data_file)
    first, stats1 = encode_datasets(recipe.data, tokenizer)
    assert [p.name for p in isolated_dataset_cache.iterdir()] == [cache_key(recipe.data, tokenizer)]
    second, stats2 = encode_datasets(recipe.data, tokenizer)
    assert stats2.from_cache is True
    assert rows_of(second) == rows_of(first)
    stats1.from_cache = True
    assert stats2 == stats1  # bad-record and overlong counts survive the cache
    # A fresh tokenizer object (same files) gives the same key.
    fresh = load_tokenizer(recipe.model)
    assert cache_key(recipe.data, fresh) == cache_key(recipe.data, tokenizer)


def test_use_cache_false_neither_reads_nor_writes(data_file, make_recipe, tokenizer, isolated_dataset_cache):
    encoded, stats = encode_datasets(make_recipe(data_file).data, tokenizer, use_cache=False)
    assert stats.from_cache is False and len(encoded) == len(GOOD) + 1
    assert not isolated_dataset_cache.exists() or not any(isolated_dataset_cache.iterdir())


def test_cache_key_follows_length_policy_data_and_template(data_file, make_recipe, tokenizer, tmp_path, isolated_dataset_cache):
    base = make_recipe(data_file)
    key = cache_key(base.data, tokenizer)
    assert cache_key(make_recipe(data_file).data, tokenizer) == key  # deterministic
    changed = {
        "max_length": make_recipe(data_file, max_length=512),
        "overlong": make_recipe(data_file, overlong="drop"),
        "template": make_recipe(data_file, template="qwen_chat"),
        "system": make_recipe(data_file, system="Be brief."),
    }
    keys = {name: cache_key(r.data, tokenizer) for name, r in changed.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keys)

    encode_datasets(base.data, tokenizer)
    longer, stats = encode_datasets(changed["max_length"].data, tokenizer)
    assert stats.from_cache is False
    assert stats.truncated == 0 and stats.dropped_overlong == 0 and len(longer) == len(GOOD) + 2

    # Changing the data file's contents (same path) changes the key: the cache is never stale.
    write_jsonl(tmp_path / "train.jsonl", [*GOOD, chat("One more", "Sure.")])
    assert cache_key(base.data, tokenizer) != key
    edited, stats = encode_datasets(base.data, tokenizer)
    assert stats.from_cache is False and stats.bad_records == 0 and len(edited) == len(GOOD) + 1


def test_repeat_repeats_samples(data_file, make_recipe, tokenizer, isolated_dataset_cache, tiny_qwen2_dir):
    recipe = validate_recipe({
        "model": {"path": str(tiny_qwen2_dir)},
        "data": {"datasets": [{"path": data_file, "format": "openai", "repeat": 2}], "template": "chatml", "max_length": 64,
                 "max_bad_fraction": 0.2},
    })
    assert cache_key(recipe.data, tokenizer) != cache_key(make_recipe(data_file).data, tokenizer)
    encoded, stats = encode_datasets(recipe.data, tokenizer)
    assert stats.samples == 2 * (len(GOOD) + 1)


def test_train_rows_packed_and_unpacked(data_file, make_recipe, tokenizer, isolated_dataset_cache):
    encoded, _ = encode_datasets(make_recipe(data_file, max_length=128).data, tokenizer)
    samples = rows_of(encoded)
    lengths = [len(ids) for ids, _ in samples]

    plain = TrainRows(encoded, pack=False, max_length=128)
    assert len(plain) == len(samples)
    assert [(tuple(r["input_ids"]), tuple(r["labels"])) for r in plain] == samples
    assert plain.row_lengths == lengths

    packed = TrainRows(encoded, pack=True, max_length=128, seed=0)
    assert len(packed) == len(pack_lengths(lengths, 128)) < len(samples)
    assert all(n <= 128 for n in packed.row_lengths)
    assert sum(packed.row_lengths) == sum(lengths)
    # Every token survives: cutting each packed row at its position-id restarts gives back exactly
    # the samples (first label of each masked), each once.
    pieces = []
    for row in packed:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"])
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
        for a, b in zip(starts, starts[1:]):
            assert row["position_ids"][a:b] == list(range(b - a))
            pieces.append((tuple(row["input_ids"][a:b]), tuple(row["labels"][a:b])))
    expected = [(ids, (IGNORE_INDEX, *labels[1:])) for ids, labels in samples]
    assert Counter(pieces) == Counter(expected)
    # Shuffled bin order depends on the seed only.
    assert TrainRows(encoded, pack=True, max_length=128, seed=0).rows == packed.rows

    # Collated packed rows train the same tokens as collated single samples.
    flat_packed = FlatCollator()(list(packed))
    flat_plain = FlatCollator()(list(plain))
    assert (flat_packed["labels"] != IGNORE_INDEX).sum() == (flat_plain["labels"] != IGNORE_INDEX).sum()
    assert sorted(flat_packed["input_ids"][0].tolist()) == sorted(flat_plain["input_ids"][0].tolist())


def test_losing_a_cache_race_keeps_the_winner_and_leaves_no_temp_dir(data_file, make_recipe, tokenizer,
                                                                       isolated_dataset_cache, monkeypatch):
    """Two processes tokenize the same data: the second one's rename fails; it must use the cached
    copy and remove its own temporary directory."""
    import os
    import shutil

    import mmtune.data.dataset as dataset

    recipe = make_recipe(data_file)

    class OsLosingTheRace:  # `os` as dataset.py sees it, with a rename that loses the race
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(src, dst):
            shutil.copytree(src, dst)  # the winner's identical cache appears just before our rename
            os.replace(src, dst)  # raises: the target is a non-empty directory

    monkeypatch.setattr(dataset, "os", OsLosingTheRace())
    encoded, stats = encode_datasets(recipe.data, tokenizer)
    monkeypatch.setattr(dataset, "os", os)
    assert stats.from_cache is False and len(encoded) == len(GOOD) + 1
    assert [p.name for p in isolated_dataset_cache.iterdir()] == [cache_key(recipe.data, tokenizer)]
    again, stats = encode_datasets(recipe.data, tokenizer)
    assert stats.from_cache is True and rows_of(again) == rows_of(encoded)
