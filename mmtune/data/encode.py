"""Conversation -> input_ids and labels.

The template renders the whole conversation once and says which characters are trained; the
tokenizer encodes the whole text once with offsets; a token is trained when it starts inside a
trained span. So ids equal what `apply_chat_template` gives, and labels are -100 everywhere but
exactly the assistant answers and their end-of-turn tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mmtune.data.conversation import Conversation, Message
from mmtune.data.templates import ChatFormat, get_template

IGNORE_INDEX = -100


@dataclass
class EncodedSample:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def fit_length(sample: EncodedSample, max_length: int, overlong: str,
               image_token_id: int | None = None) -> tuple[EncodedSample | None, str]:
    """Apply the length policy: (sample or None, "ok" | "truncated" | "dropped").

    A sample is never cut through its image tokens, and a cut that leaves nothing to train drops it."""
    if len(sample.input_ids) <= max_length:
        return sample, "ok"
    last_image = max((i for i, t in enumerate(sample.input_ids) if t == image_token_id), default=-1)
    if overlong == "drop" or last_image >= max_length:
        return None, "dropped"
    cut = EncodedSample(sample.input_ids[:max_length], sample.labels[:max_length])
    return (cut, "truncated") if cut.n_trained else (None, "dropped")


def with_system(messages: Sequence[Message], system: str | None) -> list[Message]:
    """Add `system` in front when the conversation has no system message of its own."""
    msgs = list(messages)
    if system is not None and not (msgs and msgs[0].role == "system"):
        msgs.insert(0, Message("system", system))
    return msgs


class ConversationEncoder:
    def __init__(self, tokenizer, template: ChatFormat, max_length: int, overlong: str = "truncate", system: str | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("mmtune needs a fast (Rust) tokenizer for exact loss masks; this one is not fast")
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.overlong = overlong
        self.system = system

    def render(self, conv: Conversation) -> tuple[str, list[tuple[int, int]]]:
        return self.template.render(with_system(conv.messages, self.system))

    def encode_full(self, conv: Conversation) -> EncodedSample:
        """Encode without any length limit."""
        text, spans = self.render(conv)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        labels = []
        span_i = 0
        for tok_id, (start, _end) in zip(enc["input_ids"], enc["offset_mapping"]):
            while span_i < len(spans) and spans[span_i][1] <= start:
                span_i += 1
            inside = span_i < len(spans) and spans[span_i][0] <= start < spans[span_i][1]
            labels.append(tok_id if inside else IGNORE_INDEX)
        return EncodedSample(list(enc["input_ids"]), labels)

    def encode(self, conv: Conversation) -> EncodedSample | None:
        """Encode and apply the length policy; None when the sample must be dropped."""
        return fit_length(self.encode_full(conv), self.max_length, self.overlong)[0]

    def length(self, conv: Conversation) -> int:
        return len(self.encode_full(conv).input_ids)


def encoder_from_recipe(recipe, tokenizer) -> ConversationEncoder:
    template = get_template(recipe.data.template, tokenizer)
    return ConversationEncoder(tokenizer, template, recipe.data.max_length, recipe.data.overlong, recipe.data.system)


def length_fn_from_config(config_path: str, overrides: Sequence[str] = ()):
    """(length_fn, max_length) for `mmtune data check --config`."""
    from mmtune.config.load import load_config
    from mmtune.models.load import load_tokenizer

    recipe = load_config(config_path, overrides)
    encoder = encoder_from_recipe(recipe, load_tokenizer(recipe.model))
    return encoder.length, recipe.data.max_length
