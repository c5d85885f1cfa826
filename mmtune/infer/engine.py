"""The one generate path: messages -> prompt via the chat template -> tokens -> text.

Used by `mmtune chat`, the training-time sample-chat callback, evaluation and the server, so they
all stop on the same words and decode the same way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from mmtune.data.conversation import Message
from mmtune.data.templates import ChatFormat


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


def stop_token_ids(tokenizer, template: ChatFormat) -> list[int]:
    ids = []
    for word in [*template.stop_words(tokenizer), tokenizer.eos_token]:
        if not word:
            continue
        tok_id = tokenizer.convert_tokens_to_ids(word)
        if isinstance(tok_id, int) and tok_id != tokenizer.unk_token_id and tok_id >= 0:
            ids.append(tok_id)
    return list(dict.fromkeys(ids))


def _generate_kwargs(tokenizer, template, settings: GenerationSettings) -> dict:
    kwargs = dict(
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=stop_token_ids(tokenizer, template) or None,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    if settings.temperature > 0:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def _prompt_ids(tokenizer, template, messages: Sequence[Message], device) -> torch.Tensor:
    prompt, _ = template.render(messages, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    return ids.to(device)


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cut)], True) if cut else (text, False)


def stream_reply(model, tokenizer, template: ChatFormat, messages: Sequence[Message], settings: GenerationSettings) -> Iterator[str]:
    """Yield the reply in pieces as they are generated."""
    from transformers import TextIteratorStreamer

    device = next(model.parameters()).device
    input_ids = _prompt_ids(tokenizer, template, messages, device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = _generate_kwargs(tokenizer, template, settings)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    errors: list[BaseException] = []

    def work():
        try:
            with torch.no_grad():
                model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer, **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    produced, emitted = "", 0
    for piece in streamer:
        produced += piece
        text, stopped = _cut_at_stop(produced, settings.stop)
        if len(text) > emitted:
            yield text[emitted:]
            emitted = len(text)
        if stopped:
            break
    thread.join()
    if errors:
        raise errors[0]


def generate_reply(model, tokenizer, template: ChatFormat, messages: Sequence[Message], settings: GenerationSettings | None = None) -> str:
    """The whole reply as one string."""
    settings = settings or GenerationSettings()
    device = next(model.parameters()).device
    input_ids = _prompt_ids(tokenizer, template, messages, device)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **_generate_kwargs(tokenizer, template, settings))
    finally:
        model.train(was_training)
    text = tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True)
    return _cut_at_stop(text, settings.stop)[0].strip()
