"""`mmtune data preview`: the first samples exactly as the model sees them, trained spans marked.

The samples are the recipe's first conversations encoded by the run's own encoder (tokenizer,
template, system prompt, length policy: mmtune.builders), so what this prints is what trains."""

from __future__ import annotations

import json
import sys

from mmtune.constants import IGNORE_INDEX
from mmtune.data.encode import EncodedSample

START, END = "\u27e6", "\u27e7"  # ⟦ trained text ⟧ when the output is not a colour terminal


def segments(tokenizer, sample: EncodedSample) -> list[tuple[str, bool]]:
    """Consecutive runs of (decoded text, trained?)."""
    runs: list[tuple[list[int], bool]] = []
    for tok, lab in zip(sample.input_ids, sample.labels):
        trained = lab != IGNORE_INDEX
        if runs and runs[-1][1] == trained:
            runs[-1][0].append(tok)
        else:
            runs.append(([tok], trained))
    return [(tokenizer.decode(ids, skip_special_tokens=False), trained) for ids, trained in runs]


def run_preview(config: str, *, n: int = 3, as_json: bool = False, overrides=()) -> int:
    from rich.console import Console
    from rich.text import Text

    from mmtune.builders.data import encoder as run_encoder
    from mmtune.builders.tokenizer import tokenizer_and_template
    from mmtune.config.load import load_config
    from mmtune.data.dataset import load_conversations

    recipe = load_config(config, overrides)
    tokenizer, _ = tokenizer_and_template(recipe)
    encoder = run_encoder(recipe, tokenizer)
    convs = load_conversations(recipe.data)[:n]
    items = []
    for conv in convs:
        full = encoder.encode_full(conv)
        sample = encoder.encode(conv)
        items.append((conv, full, sample))
    if as_json:
        out = [{
            "source": conv.source,
            "tokens": len(full.input_ids),
            "trained_tokens": sample.n_trained if sample else 0,
            "status": "ok" if len(full.input_ids) <= encoder.max_length else ("truncated" if sample else "dropped"),
            "input_ids": (sample or full).input_ids,
            "labels": (sample or full).labels,
        } for conv, full, sample in items]
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return 0
    console = Console(highlight=False, soft_wrap=True)
    colour = console.is_terminal
    console.print(f"template {recipe.data.template!r}, max_length {encoder.max_length}; "
                  + ("trained tokens in green" if colour else f"trained text between {START} and {END}"))
    for conv, full, sample in items:
        status = "" if len(full.input_ids) <= encoder.max_length else (" TRUNCATED" if sample else " DROPPED (too long)")
        trained = sample.n_trained if sample else 0
        console.print(f"\n--- {conv.source}: {len(full.input_ids)} tokens, {trained} trained{status}")
        text = Text()
        for piece, is_trained in segments(tokenizer, sample or full):
            if colour:
                text.append(piece, style="bold green" if is_trained else "")
            else:
                text.append(f"{START}{piece}{END}" if is_trained else piece)
        console.print(text)
    sys.stdout.flush()
    return 0
