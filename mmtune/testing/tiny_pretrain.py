"""A tiny Qwen2 that can read: pre-trained on a CPU (once, then cached) until it copies names and numbers
from a sentence into JSON, as any pretrained model can (2,250 steps, about 6 minutes, when measured; at
most 5,500 steps, about 14).

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
from dataclasses import dataclass
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


@dataclass
class PretrainResult:
    checks: list[tuple[int, float]]  # (step, copy accuracy) at each check; the last one is after the cool-down

    @property
    def steps(self) -> int:
        return self.checks[-1][0]

    @property
    def accuracy(self) -> float:  # on new sentences, when it stopped
        return self.checks[-1][1]


def pretrain_to_copy(model, tokenizer, plain_lines: list[str], *, ready: float = 0.8, min_steps: int = 1000,
                     max_steps: int = 5000, cooldown: int = 500, check_every: int = 250, lr: float = 3e-3,
                     batch: int = 8, length: int = 256, seed: int = 0, check_sentences: int = 50,
                     avoid_names: frozenset[str] = frozenset()) -> PretrainResult:
    """Pre-train `model` in place (full, AdamW): warm-up, then a constant rate until it copies `ready` of
    new sentences' facts exactly (checked every `check_every` steps from `min_steps` on), then
    `cooldown` steps of a rate falling to zero, which make the copies exact.

    Why "until", not a step count: copying appears suddenly (attention heads that find a value and copy
    it token by token form between ~1,200 and ~3,000 steps here), and when depends on the CPU's float
    rounding: one fixed count gave a base that copies 100% on one machine and 30% on another. Small
    batches: it is the number of steps, more than the tokens seen, that makes those heads form."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    corpus = CopyCorpus(plain_lines, seed, avoid_names)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    checks: list[tuple[int, float]] = []

    def check(step: int) -> float:
        checks.append((step, copy_accuracy(model, tokenizer, CopyCorpus(plain_lines, seed + 1, avoid_names),
                                            n=check_sentences)))
        return checks[-1][1]

    def train_step(rate: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = rate
        rows, labels = zip(*(corpus.row(tokenizer, length) for _ in range(batch)))
        loss = model(input_ids=torch.tensor(rows), labels=torch.tensor(labels)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}", copy=f"{checks[-1][1]:.2f}" if checks else "-", refresh=False)

    model.train()
    bar = tqdm(total=max_steps + cooldown, desc="pre-training the tiny agent base to copy", unit="step", mininterval=5)
    step = 0
    while step < max_steps:
        step += 1
        train_step(lr * min(1.0, step / 50))
        if step >= min_steps and step % check_every == 0 and check(step) >= ready:
            break
    bar.total = step + cooldown
    for i in range(cooldown):
        train_step(lr * (1 - i / cooldown))
    bar.close()
    check(step + cooldown)
    result = PretrainResult(checks)
    tqdm.write(f"tiny agent base: after {result.steps} steps it copies new sentences' facts into JSON exactly "
               f"{100 * result.accuracy:.0f}% of the time")
    return result


def write_provenance(out: Path, result: PretrainResult) -> None:
    checks = ", ".join(f"{step}: {accuracy:.2f}" for step, accuracy in result.checks)
    (out / "PRETRAINING.md").write_text(
        f"Pre-trained by mmtune.testing.tiny_pretrain: {result.steps} steps on a generic corpus of sentences whose "
        f"facts are copied into JSON (none of the tool data's phrasings, tools or cities), until it copied new "
        f"sentences' facts exactly: {result.accuracy:.2f}.\nCopy accuracy at each check (step: accuracy): {checks}.\n",
        encoding="utf-8")
