"""Batched greedy replies for evaluation: many conversations, left-padded, one `generate` call.

Built on the engine's pieces (prompt rendering through the chat template, stop tokens, stop
strings, generation kwargs) so a batched reply is the reply `generate_reply` gives one by one;
with `batch_size=1` it simply calls `generate_reply`. (A candidate to move into infer/engine.py.)
"""

from __future__ import annotations

from typing import Sequence

import torch

from mmtune.data.conversation import Message
from mmtune.data.templates import ChatFormat
from mmtune.infer.engine import GenerationSettings, _cut_at_stop, _generate_kwargs, generate_reply


def generate_replies(model, tokenizer, template: ChatFormat, conversations: Sequence[Sequence[Message]],
                     settings: GenerationSettings | None = None) -> list[str]:
    """One reply per conversation, all generated together (left padding, greedy unless settings sample)."""
    settings = settings or GenerationSettings()
    if len(conversations) == 1:
        return [generate_reply(model, tokenizer, template, conversations[0], settings)]
    if not conversations:
        return []
    prompts = [template.render(list(msgs), add_generation_prompt=True)[0] for msgs in conversations]
    device = next(model.parameters()).device
    kwargs = _generate_kwargs(tokenizer, template, settings)
    pad_id = kwargs["pad_token_id"]
    if pad_id is None:  # a tokenizer without a pad token (e.g. straight from training): any id works under the mask
        pad_id = kwargs["pad_token_id"] = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    ids = tokenizer(prompts, add_special_tokens=False).input_ids
    width = max(len(x) for x in ids)
    # left padding, done here so the shared tokenizer's padding_side is never touched
    input_ids = torch.tensor([[pad_id] * (width - len(x)) + list(x) for x in ids], device=device)
    attention_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    finally:
        model.train(was_training)
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [_cut_at_stop(text, settings.stop)[0].strip() for text in texts]
