"""Text evaluation: loss / perplexity on the answer tokens, and exact / contains match of the last answer.

    metrics = evaluate_text(model, tokenizer, template, conversations)   # an in-memory model (callbacks)
    metrics["loss"], metrics["perplexity"], metrics["exact_match"], metrics["contains_match"]

* loss: token-mean negative log-likelihood over every token training would put a loss on (the
  `ConversationEncoder` labels: all assistant answers and their end-of-turn tokens), summed over
  the whole set and divided by the token count; perplexity = exp(loss).
* exact_match / contains_match: the model answers the conversation up to its last assistant
  message (greedy); the reply equals / contains the reference last answer once both are normalised
  (Unicode NFKC, lower case, punctuation dropped, whitespace collapsed).
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path
from typing import Callable, Sequence

import torch

from mmtune.data.conversation import Conversation
from mmtune.constants import IGNORE_INDEX
from mmtune.data.encode import ConversationEncoder, with_system
from mmtune.infer.engine import GenerationSettings


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def match_scores(prediction: str, reference: str) -> tuple[bool, bool]:
    """(exact, contains) after normalising both."""
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    return pred == ref, bool(ref) and ref in pred


def _batched(seq: Sequence, size: int):
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def answer_nll(model, samples: Sequence[tuple[list[int], list[int]]], batch_size: int = 8) -> list[tuple[float, int]]:
    """(summed NLL, trained-token count) per (input_ids, labels) sample; right-padded batches."""
    device = next(model.parameters()).device
    pad = 0
    out: list[tuple[float, int]] = []
    for batch in _batched(list(samples), max(1, batch_size)):
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (x, y) in enumerate(batch):
            ids[row, :len(x)] = torch.tensor(x)
            labels[row, :len(y)] = torch.tensor(y)
            mask[row, :len(x)] = 1
        ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                ignore_index=IGNORE_INDEX, reduction="none").view(target.shape)
        counted = target != IGNORE_INDEX
        for row in range(len(batch)):
            out.append((float(nll[row][counted[row]].sum()), int(counted[row].sum())))
    return out


def evaluate_text(model, tokenizer, template, conversations: Sequence[Conversation], *, max_new_tokens: int = 64,
                  max_length: int = 2048, system: str | None = None, batch_size: int = 8, generate: bool = True,
                  on_batch: Callable[[int], None] | None = None) -> dict:
    """Metrics of `model` on `conversations` (see the module docstring) and one detail dict per sample.

    Works on a model in memory (e.g. from a training callback): it switches to eval mode and back.
    Conversations longer than `max_length` tokens are cut like training cuts them.
    `on_batch(n)` is called after each batch of `n` generations (progress bars)."""
    from mmtune.infer.engine import generate_replies

    encoder = ConversationEncoder(tokenizer, template, max_length, "truncate", system)
    was_training = model.training
    model.eval()
    try:
        encoded = [encoder.encode(conv) for conv in conversations]
        with torch.no_grad():
            scored = iter(answer_nll(model, [(e.input_ids, e.labels) for e in encoded if e is not None], batch_size))
        nll = [next(scored) if e is not None else (0.0, 0) for e in encoded]
        replies: list[str | None] = [None] * len(conversations)
        if generate:
            settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)
            prompts = [with_system(_last_prompt(conv), system) for conv in conversations]
            for start in range(0, len(prompts), max(1, batch_size)):
                chunk = prompts[start:start + max(1, batch_size)]
                replies[start:start + len(chunk)] = generate_replies(model, tokenizer, template, chunk, settings)
                if on_batch:
                    on_batch(len(chunk))
    finally:
        model.train(was_training)
    samples = []
    for conv, (loss_sum, n_tok), reply in zip(conversations, nll, replies):
        reference = conv.messages[-1].content
        sample = {"source": conv.source, "question": _last_prompt(conv)[-1].content, "reference": reference,
                  "loss": loss_sum / n_tok if n_tok else None, "n_tokens": n_tok}
        if reply is not None:
            exact, contains = match_scores(reply, reference)
            sample.update(prediction=reply, exact_match=exact, contains_match=contains)
        samples.append(sample)
    total_nll = sum(s for s, _ in nll)
    total_tok = sum(n for _, n in nll)
    loss = total_nll / total_tok if total_tok else None
    metrics = {"n": len(conversations), "n_tokens": total_tok, "loss": loss,
               "perplexity": math.exp(min(loss, 700.0)) if loss is not None else None}
    if generate and samples:
        metrics["exact_match"] = sum(s["exact_match"] for s in samples) / len(samples)
        metrics["contains_match"] = sum(s["contains_match"] for s in samples) / len(samples)
    metrics["samples"] = samples
    return metrics


def _last_prompt(conv: Conversation):
    """The messages before the last assistant answer (conversations end with one)."""
    return list(conv.messages[:-1])


def run_text_eval(model_path: str, data: str | Path, work_dir: str | Path, *, adapter: str | None = None,
                  format: str = "auto", template: str | None = None, max_new_tokens: int = 64,
                  max_length: int = 2048, batch_size: int = 8, system: str | None = None, device: str = "auto",
                  trust_remote_code: bool = False, progress: bool = True) -> dict:
    """`mmtune eval text`: load, evaluate, write summary.json and predictions.jsonl; the summary."""
    import json

    from rich.console import Console
    from rich.progress import Progress

    from mmtune.data.formats import read_file
    from mmtune.errors import DataError
    from mmtune.eval.report import write_json
    from mmtune.infer.load import load_for_inference

    conversations, _ = read_file(data, format)
    if not conversations:
        raise DataError("no conversations to evaluate", where=str(data))
    loaded = load_for_inference(model_path, adapter=adapter, template=template, device=device,
                                trust_remote_code=trust_remote_code)
    with Progress(console=Console(stderr=True), disable=not progress) as bar:
        task = bar.add_task("answering", total=len(conversations))
        metrics = evaluate_text(loaded.model, loaded.tokenizer, loaded.template, conversations,
                                max_new_tokens=max_new_tokens, max_length=max_length, system=system,
                                batch_size=batch_size, on_batch=lambda n: bar.advance(task, n))
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    samples = metrics.pop("samples")
    with (work_dir / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample, ensure_ascii=False) + "\n")
    summary = {"model": model_path, "adapter": adapter, "data": str(data), "template": loaded.template.name, **metrics}
    write_json(summary, work_dir / "summary.json")
    return summary
