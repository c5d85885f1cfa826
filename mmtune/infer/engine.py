"""The one generate path: messages -> prompt via the chat template -> tokens -> text.

Used by `mmtune chat`, the training-time sample-chat callback, evaluation and the server, so they
all stop on the same words and decode the same way: `generate_reply` (one conversation),
`stream_reply` (the same, in pieces) and `generate_replies` (many conversations in one left-padded
`generate` call, for evaluation; with one conversation it is `generate_reply`).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from mmtune.data.conversation import Message
from mmtune.data.templates import ChatFormat


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # keep special tokens in the text (tool-call markers such as InternLM2's <|action_start|> are
    # special tokens); the template's end-of-turn marker is cut off either way
    keep_special_tokens: bool = False


@dataclass
class GenerationControl:
    """Optional link between a caller and one generation (the server uses it).

    Set `cancel` from any thread to stop the generation after the current token (a client that
    went away); the counts and `finish_reason` ("stop", "length" or "cancelled") are filled in
    as it runs, for OpenAI's `usage` and `finish_reason`.
    """

    cancel: threading.Event = field(default_factory=threading.Event)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


class _Watch(StoppingCriteria):
    """A stopping criterion: stops on `cancel` or `halt` and counts the generated tokens."""

    def __init__(self, control: GenerationControl, prompt_len: int):
        self.control, self.prompt_len = control, prompt_len
        self.halt = threading.Event()  # set by stream_reply when its reader is gone or a stop string was seen
        self.last_token: int | None = None

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        self.control.completion_tokens = input_ids.shape[1] - self.prompt_len
        self.last_token = int(input_ids[0, -1])
        stop = self.control.cancel.is_set() or self.halt.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    def finish(self, eos_ids: Sequence[int], max_new_tokens: int, stopped_by_text: bool = False) -> None:
        c = self.control
        if c.cancel.is_set():
            c.finish_reason = "cancelled"
        elif not stopped_by_text and c.completion_tokens >= max_new_tokens and self.last_token not in eos_ids:
            c.finish_reason = "length"
        else:
            c.finish_reason = "stop"


def _watch(control: GenerationControl | None, input_ids: torch.Tensor, kwargs: dict) -> _Watch:
    watch = _Watch(control or GenerationControl(), input_ids.shape[1])
    watch.control.prompt_tokens = input_ids.shape[1]
    kwargs["stopping_criteria"] = StoppingCriteriaList([watch])
    return watch


def context_length(model) -> int | None:
    """The longest sequence the model takes (prompt + answer), when its config says."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config  # a VLM's language model
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) else None


def stop_token_ids(tokenizer, template: ChatFormat, model=None) -> list[int]:
    """Token ids generation stops at: the template's stop words (its end-of-turn marker) that are
    single tokens, the tokenizer's eos, and the eos ids the checkpoint's generation config names."""
    ids = []
    for word in [*template.stop_words(tokenizer), tokenizer.eos_token]:
        if not word:
            continue
        tok_id = tokenizer.convert_tokens_to_ids(word)
        if isinstance(tok_id, int) and tok_id != tokenizer.unk_token_id and tok_id >= 0:
            ids.append(tok_id)
    declared = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += [declared] if isinstance(declared, int) else [i for i in declared or () if isinstance(i, int)]
    return list(dict.fromkeys(ids))


def _generate_kwargs(model, tokenizer, template, settings: GenerationSettings) -> dict:
    kwargs = dict(
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=stop_token_ids(tokenizer, template, model) or None,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )
    if settings.temperature > 0:
        kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def _prompt_ids(tokenizer, template, messages: Sequence[Message], device, tools=None) -> torch.Tensor:
    prompt, _ = template.render(messages, add_generation_prompt=True, tools=tools)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    return ids.to(device)


def prompt_inputs(model, tokenizer, template, messages: Sequence[Message], images=None, vision=None,
                  tools=None) -> dict:
    """input_ids, attention_mask and, with images, the model's image tensors, built as in training
    (`vision`: the model's LlavaImages or ProcessorImages); `tools`: tool definitions for the prompt."""
    device = next(model.parameters()).device
    if not images:
        input_ids = _prompt_ids(tokenizer, template, messages, device, tools)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if vision is None:
        from mmtune.errors import MmtuneError

        raise MmtuneError("this model takes no images", hint="use a vision-language model for --image")
    prompt, _ = template.render(messages, add_generation_prompt=True)
    inputs = vision.prompt_inputs(prompt, list(images))
    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
    inputs.pop("attention_mask", None)
    return {**inputs, "attention_mask": torch.ones_like(inputs["input_ids"])}


@contextlib.contextmanager
def seeded(seed: int | None, model):
    """Sample from `seed` inside, leaving the process's random state as it was: a request's seed
    makes its own answer repeatable and does not change how the next requests sample."""
    if seed is None:
        yield
        return
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cut)], True) if cut else (text, False)


def _stop_prefix_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that begins a stop string: held back while streaming, since
    the next piece may complete the stop string (and nothing of it may be sent)."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


def stream_reply(model, tokenizer, template: ChatFormat, messages: Sequence[Message], settings: GenerationSettings,
                 *, control: GenerationControl | None = None, images=None, vision=None,
                 inputs: dict | None = None, tools=None) -> Iterator[str]:
    """Yield the reply in pieces as they are generated.

    Generation stops early when `control.cancel` is set, when a stop string appears, or when the
    caller closes this iterator (so an abandoned stream does not keep the model busy)."""
    from transformers import TextIteratorStreamer

    if inputs is None:  # `inputs`: prompt_inputs' result, prepared on another thread (the server's)
        inputs = prompt_inputs(model, tokenizer, template, messages, images, vision, tools)
    input_ids = inputs["input_ids"]
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = _generate_kwargs(model, tokenizer, template, settings)
    watch = _watch(control, input_ids, kwargs)
    errors: list[BaseException] = []

    def work():
        try:
            with torch.no_grad(), seeded(settings.seed, model):
                model.generate(**inputs, streamer=streamer, **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    produced, emitted, stopped = "", 0, False
    try:
        for piece in streamer:
            produced += piece
            text, stopped = _cut_at_stop(produced, settings.stop)
            ready = len(text) if stopped else len(text) - _stop_prefix_len(text, settings.stop)
            if ready > emitted:
                yield text[emitted:ready]
                emitted = ready
            if stopped:
                break
        if not stopped and len(produced) > emitted:  # the end: what was held back was no stop string
            yield produced[emitted:]
    finally:  # also runs when the caller stops iterating: stop the model, do not leave it running
        watch.halt.set()
        thread.join()
    watch.finish(kwargs["eos_token_id"] or (), settings.max_new_tokens, stopped_by_text=stopped)
    if errors:
        raise errors[0]


def generate_reply(model, tokenizer, template: ChatFormat, messages: Sequence[Message], settings: GenerationSettings | None = None,
                   *, control: GenerationControl | None = None, images=None, vision=None,
                   inputs: dict | None = None, tools=None) -> str:
    """The whole reply as one string (stops early when `control.cancel` is set).

    `images` (PIL) fill the `<image>` placeholders of the messages in order; `vision` (a
    LlavaImages or ProcessorImages, mmtune.infer.vision) says how the model takes them."""
    settings = settings or GenerationSettings()
    if inputs is None:  # `inputs`: prompt_inputs' result, prepared on another thread (the server's)
        inputs = prompt_inputs(model, tokenizer, template, messages, images, vision, tools)
    input_ids = inputs["input_ids"]
    kwargs = _generate_kwargs(model, tokenizer, template, settings)
    watch = _watch(control, input_ids, kwargs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), seeded(settings.seed, model):
            out = model.generate(**inputs, **kwargs)
    finally:
        model.train(was_training)
    text = _decode(tokenizer, template, out[0, input_ids.shape[1]:], settings)
    text, stopped = _cut_at_stop(text, settings.stop)
    watch.finish(kwargs["eos_token_id"] or (), settings.max_new_tokens, stopped_by_text=stopped)
    return text.strip()


def _decode(tokenizer, template, ids, settings: GenerationSettings) -> str:
    if not settings.keep_special_tokens:
        return tokenizer.decode(ids, skip_special_tokens=True)
    text = tokenizer.decode(ids, skip_special_tokens=False)
    ends = [w for w in [*template.stop_words(tokenizer), tokenizer.eos_token, tokenizer.pad_token] if w]
    cut = min((text.find(w) for w in ends if w in text), default=len(text))
    return text[:cut]


def _left_padded(inputs: Sequence[dict], pad_id: int, model) -> dict:
    """Per-prompt inputs (each a batch of one) as one left-padded batch: the sequence tensors
    (input_ids and anything shaped like it) padded on the left, the image tensors combined as the
    model's family combines them in training."""
    from mmtune.infer.vision import image_batch_for

    width = max(x["input_ids"].shape[1] for x in inputs)
    batch: dict = {}
    for key in inputs[0]:
        if inputs[0][key].shape != inputs[0]["input_ids"].shape:
            continue
        fill = pad_id if key == "input_ids" else 0
        batch[key] = torch.cat([torch.nn.functional.pad(x[key], (width - x[key].shape[1], 0), value=fill)
                                for x in inputs])
    images = [{k: v for k, v in x.items() if v.shape != x["input_ids"].shape} for x in inputs]
    return image_batch_for(model).add(batch, [{"image_inputs": [im]} for im in images if im])


def generate_replies(model, tokenizer, template: ChatFormat, conversations: Sequence[Sequence[Message]],
                     settings: GenerationSettings | None = None, *, images: Sequence | None = None,
                     vision=None, tools=None) -> list[str]:
    """One reply per conversation, all generated together (left padding, greedy unless settings sample).

    `images`: per conversation its PIL images (a vision-language model, `vision` as for
    generate_reply); the batch's image tensors are combined as the model's family does in training.
    `tools`: one list of tool definitions for every prompt, or one list per conversation."""
    settings = settings or GenerationSettings()
    if not conversations:
        return []
    images = list(images) if images is not None else [None] * len(conversations)
    per_tools = list(tools) if tools and isinstance(tools[0], list) else [tools] * len(conversations)
    if len(conversations) == 1:
        return [generate_reply(model, tokenizer, template, conversations[0], settings, images=images[0], vision=vision,
                               tools=per_tools[0])]
    kwargs = _generate_kwargs(model, tokenizer, template, settings)
    pad_id = kwargs["pad_token_id"]
    if pad_id is None:  # a tokenizer without a pad token (e.g. straight from training): any id works under the mask
        pad_id = kwargs["pad_token_id"] = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    if any(images):
        if not all(images):  # some prompts with images, some without: the families' forwards take one kind
            return [generate_reply(model, tokenizer, template, c, settings, images=im or None, vision=vision, tools=t)
                    for c, im, t in zip(conversations, images, per_tools)]
        inputs = _left_padded([prompt_inputs(model, tokenizer, template, c, im, vision, t)
                               for c, im, t in zip(conversations, images, per_tools)], pad_id, model)
    else:
        device = next(model.parameters()).device
        prompts = [template.render(list(msgs), add_generation_prompt=True, tools=t)[0]
                   for msgs, t in zip(conversations, per_tools)]
        ids = tokenizer(prompts, add_special_tokens=False).input_ids
        width = max(len(x) for x in ids)
        # left padding, done here so the shared tokenizer's padding_side is never touched
        inputs = {"input_ids": torch.tensor([[pad_id] * (width - len(x)) + list(x) for x in ids], device=device),
                  "attention_mask": torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)}
    width = inputs["input_ids"].shape[1]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), seeded(settings.seed, model):
            out = model.generate(**inputs, **kwargs)
    finally:
        model.train(was_training)
    texts = [_decode(tokenizer, template, row, settings) for row in out[:, width:]]
    return [_cut_at_stop(text, settings.stop)[0].strip() for text in texts]
