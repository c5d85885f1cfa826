"""The agent base's copy pre-training: what it learns from is generic (nothing of the tool data it is
later scored on), and only the copied JSON is learned, never the sentence it is copied from."""

from __future__ import annotations

import json
import re

from transformers import AutoTokenizer

from mmtune.constants import IGNORE_INDEX
from mmtune.data.synth import tools
from mmtune.testing.tiny import tiny_tokenizer_dir
from mmtune.testing.tiny_pretrain import CopyCorpus


def test_the_corpus_holds_nothing_of_the_tool_data():
    cities = set(tools.TRAIN_CITIES) | set(tools.HELDOUT_CITIES)
    corpus = CopyCorpus(["a plain line"], seed=3, avoid_names=frozenset(cities))
    text = "\n".join(context + learned for context, learned in (corpus.piece() for _ in range(3000)))
    tool_words = {t["function"]["name"] for t in tools.TOOLS} | {"from_unit", "to_unit", "operation"}
    phrasings = {a.split("{")[0].strip() for asks in (tools.WEATHER_ASKS, tools.CALC_ASKS, tools.CONVERT_ASKS)
                 for split in asks.values() for a in split if len(a.split("{")[0].strip()) > 8}
    words = set(re.findall(r"\w+", text))
    assert not cities & words and not [w for w in tool_words | phrasings if w in text]


def test_only_the_json_is_learned_and_it_holds_the_sentences_values():
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir(tool_words=True))
    corpus = CopyCorpus(["a plain line"], seed=0)
    ids, labels = corpus.row(tokenizer, 512)
    assert len(ids) == len(labels) == 512
    learned = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels)) and 0 < len(learned) < len(ids)
    assert "<|im_start|>user" not in tokenizer.decode(learned)  # contexts are never learned
    for _ in range(200):  # every value of a JSON answer is in its sentence
        sentence, facts = corpus.fact()
        assert all(str(v) in sentence for v in json.loads(facts).values()), (sentence, facts)


def test_pretraining_runs_until_the_copy_check_passes_then_cools_down():
    import torch
    from transformers import AutoModelForCausalLM

    from mmtune.testing.tiny import tiny_lm_dir
    from mmtune.testing.tiny_pretrain import pretrain_to_copy

    src = tiny_lm_dir("qwen2", tool_words=True)
    tokenizer = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    before = [p.detach().clone() for p in model.parameters()]
    # a check that always passes stops at the first one (min_steps), then the cool-down runs and is checked
    passed = pretrain_to_copy(model, tokenizer, ["a plain line"], ready=0.0, min_steps=2, max_steps=50, cooldown=1,
                              check_every=1, batch=2, length=128, check_sentences=4)
    assert passed.steps == 3 and [step for step, _ in passed.checks] == [2, 3]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # one that never passes runs to max_steps
    failed = pretrain_to_copy(model, tokenizer, ["a plain line"], ready=1.01, min_steps=1, max_steps=3, cooldown=0,
                              check_every=2, batch=2, length=128, check_sentences=4)
    assert failed.steps == 3 and [step for step, _ in failed.checks] == [2, 3]
