"""A tiny Qwen2 that can read: pre-trained for about nine CPU minutes (once, then cached) to copy names and
numbers from a sentence into JSON, as any pretrained model can.

Why: a random-init model of 1M parameters fine-tuned on tool data learns which tool to call but not to
copy the question's values into the call (it writes training's cities instead); copying needs
attention heads that a real base brings from pre-training and a tiny one cannot grow from a few
hundred tool conversations. So the agent tests and demo start from this base, as real fine-tunes
start from a pretrained model. The corpus is generic on purpose: its sentences, keys, made-up names
and numbers are its own (none of `mmtune data tools`' phrasings, tools or cities), so what the
fine-tune then shows on held-out tool questions is learned from the tool data.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from mmtune.constants import IGNORE_INDEX

_ONSETS = [*"bcdfghjklmnpqrstvwxyz", "ch", "sh", "th", "qu", "br", "cr", "dr", "gr", "pr", "tr", "bl", "cl", "fl",
           "pl", "sl", "st", "sp", "sk", "sm", "sn", "sw", "wh", "ph"]
_NUCLEI = [*"aeiouy", "ai", "au", "ea", "ee", "ei", "ie", "oa", "oo", "ou", "ue"]
_CODAS = [*"bcdgklmnprstxz", "ng", "nk", "nd", "nt", "st", "rd", "rk", "rn", "ck", "ch", "sh", "th", "ll", "ss"]
_ADJECTIVES = "red green blue big small old new fast slow open closed left right".split()
# (sentence, {key: slot}): x, y made-up names; n, m numbers; w an adjective
FACTS = [
    ("I live in {x}.", {"city": "x"}), ("{x} is where my friend {y} lives.", {"place": "x", "friend": "y"}),
    ("My name is {x} and I am {n} years old.", {"name": "x", "age": "n"}),
    ("Send {n} boxes to {x}.", {"count": "n", "to": "x"}), ("The train goes from {x} to {y}.", {"from": "x", "to": "y"}),
    ("Take {n} and {m}.", {"a": "n", "b": "m"}), ("Pick {m}, then {n}.", {"first": "m", "second": "n"}),
    ("{x} paid {n} coins for a {w} hat.", {"buyer": "x", "price": "n", "color": "w"}),
    ("The {w} box weighs {n}.", {"item": "w", "value": "n"}), ("Is the {w} car in {x}?", {"place": "x", "car": "w"}),
    ("We met {x} near {y} at {n}.", {"person": "x", "where": "y", "time": "n"}),
    ("Look up {x} please.", {"query": "x"}), ("Between {n} and {m}.", {"low": "n", "high": "m"}),
    ("{n} is the code for {x}.", {"code": "n", "name": "x"}), ("Set it to {n}.", {"value": "n"}),
    ("Find the {w} door in {x}.", {"kind": "w", "city": "x"}), ("{x} scored {n}, {y} scored {m}.", {"x": "n", "y": "m"}),
    ("Where is {x}?", {"place": "x"}), ("How far is {x} from {y}?", {"from": "y", "to": "x"}),
    ("Who is {x}!", {"who": "x"}), ("{n} of them went to {x}, {m} stayed.", {"went": "n", "stayed": "m", "where": "x"}),
]
ASKS = ["As JSON:", "JSON:", "Fill in the fields.", "Give the values.", ""]


class CopyCorpus:
    """Text for the pre-training: plain lines (10%), sentences followed by their facts as JSON (30%) and
    the same as a ChatML user/assistant exchange (60%)."""

    def __init__(self, plain_lines: list[str], seed: int = 0, avoid_names: frozenset[str] = frozenset()):
        self.rng = random.Random(seed)
        self.plain = plain_lines
        self.avoid = avoid_names  # names never generated (the tool data's cities)

    def name(self) -> str:
        """A made-up name of 2-3 English-like syllables (onset, vowel, coda; each may be two letters)."""
        rng = self.rng

        def part(options: list[str], single: float) -> str:  # one letter, or more letters less often
            letters = [o for o in options if len(o) == 1]
            return rng.choice(letters if rng.random() < single else [o for o in options if len(o) > 1])

        def syllable() -> str:
            return ((part(_ONSETS, 0.75) if rng.random() < 0.85 else "") + part(_NUCLEI, 0.85)
                    + (part(_CODAS, 0.7) if rng.random() < 0.3 else ""))

        while (name := "".join(syllable() for _ in range(rng.randint(2, 3))).capitalize()) in self.avoid:
            pass
        return name

    def number(self) -> int:
        r = self.rng.random()
        return self.rng.randint(0, 9) if r < 0.2 else self.rng.randint(10, 999) if r < 0.8 else self.rng.randint(1000, 99999)

    def fact(self) -> tuple[str, str]:
        """(a sentence, its facts as a JSON object)."""
        values = {"x": self.name(), "y": self.name(), "n": self.number(), "m": self.number(),
                  "w": self.rng.choice(_ADJECTIVES)}
        while values["y"] == values["x"]:
            values["y"] = self.name()
        sentence, keys = self.rng.choice(FACTS)
        return sentence.format(**values), json.dumps({k: values[slot] for k, slot in keys.items()}, ensure_ascii=False)

    def piece(self) -> tuple[str, str]:
        """(context, what is learned): a plain line is learned whole; for a fact, only its JSON."""
        r = self.rng.random()
        if r < 0.1:
            return "", self.rng.choice(self.plain) + "\n"
        sentence, facts = self.fact()
        if r < 0.4:
            return f"{sentence} {self.rng.choice(ASKS)}", f" {facts}\n"
        return (f"<|im_start|>user\n{sentence} {self.rng.choice(ASKS)}<|im_end|>\n<|im_start|>assistant\n",
                f"{facts}<|im_end|>\n")

    def row(self, tokenizer, length: int) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one row of pieces; the labels hide contexts (IGNORE_INDEX)."""
        ids: list[int] = []
        labels: list[int] = []
        while len(ids) < length:
            context, learned = self.piece()
            context_ids = tokenizer(context, add_special_tokens=False).input_ids if context else []
            learned_ids = tokenizer(learned, add_special_tokens=False).input_ids
            ids += context_ids + learned_ids
            labels += [IGNORE_INDEX] * len(context_ids) + learned_ids
        return ids[:length], labels[:length]


def copy_accuracy(model, tokenizer, corpus: CopyCorpus, n: int = 50) -> float:
    """Share of new sentences whose facts the model writes as JSON exactly (greedy)."""
    import torch

    right = 0
    model.eval()
    with torch.no_grad():
        for _ in range(n):
            sentence, facts = corpus.fact()
            prompt = tokenizer(f"<|im_start|>user\n{sentence} JSON:<|im_end|>\n<|im_start|>assistant\n",
                               add_special_tokens=False).input_ids
            want = tokenizer(facts + "<|im_end|>", add_special_tokens=False).input_ids
            out = model.generate(torch.tensor([prompt]), max_new_tokens=len(want), do_sample=False)
            right += out[0, len(prompt):].tolist() == want
    model.train()
    return right / n


def pretrain_to_copy(model, tokenizer, plain_lines: list[str], *, steps: int, lr: float = 3e-3, batch: int = 16,
                     length: int = 256, seed: int = 0, avoid_names: frozenset[str] = frozenset()) -> float:
    """Pre-train `model` in place (full, AdamW, warm-up then linear decay); returns its copy accuracy."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    corpus = CopyCorpus(plain_lines, seed, avoid_names)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / steps))
    model.train()
    bar = tqdm(range(steps), desc="pre-training the tiny agent base to copy", unit="step", mininterval=5)
    for _ in bar:
        rows, labels = zip(*(corpus.row(tokenizer, length) for _ in range(batch)))
        loss = model(input_ids=torch.tensor(rows), labels=torch.tensor(labels)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    accuracy = copy_accuracy(model, tokenizer, CopyCorpus(plain_lines, seed + 1, avoid_names))
    tqdm.write(f"tiny agent base: copies new sentences' facts into JSON exactly {100 * accuracy:.0f}% of the time")
    return accuracy


def write_provenance(out: Path, steps: int, accuracy: float) -> None:
    (out / "PRETRAINING.md").write_text(
        f"Pre-trained by mmtune.testing.tiny_pretrain: {steps} steps on a generic corpus of sentences whose facts "
        f"are copied into JSON (none of the tool data's phrasings, tools or cities). Copies new sentences' facts "
        f"exactly: {accuracy:.2f}.\n", encoding="utf-8")
