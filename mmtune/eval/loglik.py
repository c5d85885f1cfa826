"""Log-likelihood answering (`mmtune eval mcq --mode loglik`): the option letter whose continuation
of the prompt the model finds most likely, as lm-evaluation-harness scores MMLU.

The prompt is scored as plain text (no chat template, the tokenizer's own special tokens such as
BOS); each option's continuation is `answer_prefix + letter` (" A" after "Answer:", "A" after "答案：").
Continuation tokens are those of prompt + continuation beyond the prompt's when the prompt's tokens
are a prefix of them (else the continuation tokenized alone). When every continuation is one token,
one forward per prompt gives all options (the last position's log-softmax); otherwise each
prompt + continuation is scored in full. Batches are right-padded.
"""

from __future__ import annotations

from typing import Sequence

import torch


def continuation_ids(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    context = tokenizer(prompt).input_ids
    whole = tokenizer(prompt + continuation).input_ids
    if whole[: len(context)] == context and len(whole) > len(context):
        return context, whole[len(context):]
    return context, tokenizer(continuation, add_special_tokens=False).input_ids


def _forward(model, rows: list[list[int]], pad_id: int) -> torch.Tensor:
    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)


def option_logprobs(model, tokenizer, prompt: str, letters: Sequence[str], prefix: str = " ") -> dict[str, float]:
    """log P(prefix + letter | prompt) for each letter (batched over a single prompt)."""
    return batch_option_logprobs(model, tokenizer, [(prompt, list(letters), prefix)])[0]


def batch_option_logprobs(model, tokenizer, questions: Sequence[tuple[str, list[str], str]]) -> list[dict[str, float]]:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    split = [[continuation_ids(tokenizer, prompt, prefix + letter) for letter in letters]
             for prompt, letters, prefix in questions]
    was_training = model.training
    model.eval()
    try:
        if all(len(cont) == 1 and ctx == q[0][0] for q in split for ctx, cont in q):
            logp = _forward(model, [q[0][0] for q in split], pad_id)
            return [{letter: float(logp[i, len(q[0][0]) - 1, cont[0]]) for letter, (_, cont) in zip(letters, q)}
                    for i, ((_, letters, _), q) in enumerate(zip(questions, split))]
        rows = [ctx + cont for q in split for ctx, cont in q]
        logp = _forward(model, rows, pad_id)
        scores, k = [], 0
        for (_, letters, _), q in zip(questions, split):
            scores.append({})
            for letter, (ctx, cont) in zip(letters, q):
                positions = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
                scores[-1][letter] = float(sum(logp[k, p, t] for p, t in zip(positions, cont)))
                k += 1
        return scores
    finally:
        model.train(was_training)


def loglik_answerer(model, tokenizer):
    """An answer function returning, per item, the letter with the highest log-probability."""
    def answer(items) -> list[str]:
        scores = batch_option_logprobs(model, tokenizer, [(it.prompt, list(it.options), it.answer_prefix)
                                                          for it in items])
        return [max(s, key=s.get) for s in scores]

    return answer
