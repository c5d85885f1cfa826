"""Conversation -> input_ids and labels.

The template renders the whole conversation once and says which characters are trained; the
tokenizer encodes the whole text once with offsets; a token is trained when it starts inside a
trained span. So ids equal what `apply_chat_template` gives, and labels are -100 everywhere but
exactly the assistant answers and their end-of-turn tokens.

`encode_rendered` does this for a whole batch at once (one Rust `encode_batch` call, labels from
the offsets with numpy, samples kept flat in `EncodedBatch`); a single conversation is a batch of one.
Bulk encoding of training data may go through tiktoken instead (`ConversationEncoder.fast`, see
mmtune.data.fast_bpe), which gives the same ids and offsets.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from itertools import chain
from typing import Sequence

import numpy as np

from mmtune.constants import IGNORE_INDEX
from mmtune.data.conversation import Conversation, Message
from mmtune.data.templates import ChatFormat, Span, get_template
from mmtune.errors import ConfigError

OK, TRUNCATED, DROPPED = 0, 1, 2  # status codes of EncodedBatch.fit_lengths (the statuses of fit_length)


@dataclass
class EncodedSample:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def fit_length(sample: EncodedSample, max_length: int, overlong: str,
               keep_whole: int = 0) -> tuple[EncodedSample | None, str]:
    """Apply the length policy: (sample or None, "ok" | "truncated" | "dropped").

    The first `keep_whole` tokens hold images and are never cut through (a sample whose images end
    past max_length is dropped), and a cut that leaves nothing to train drops the sample."""
    if len(sample.input_ids) <= max_length:
        return sample, "ok"
    if overlong == "drop" or keep_whole > max_length:
        return None, "dropped"
    cut = EncodedSample(sample.input_ids[:max_length], sample.labels[:max_length])
    return (cut, "truncated") if cut.n_trained else (None, "dropped")


@dataclass
class EncodedBatch:
    """Samples stored flat: sample i is `input_ids[offsets[i]:offsets[i + 1]]` (same for labels)."""

    input_ids: np.ndarray  # int32
    labels: np.ndarray  # int32, IGNORE_INDEX where not trained
    offsets: np.ndarray  # int64, len(samples) + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sample(self, i: int) -> EncodedSample:
        a, b = self.offsets[i], self.offsets[i + 1]
        return EncodedSample(self.input_ids[a:b].tolist(), self.labels[a:b].tolist())

    def fit_lengths(self, max_length: int, overlong: str) -> tuple["EncodedBatch", np.ndarray]:
        """`fit_length` for every sample (text only: no image tokens), vectorized.

        (every sample, cut where needed and empty when dropped; status of each: OK, TRUNCATED or DROPPED)."""
        lengths = self.lengths
        over = lengths > max_length
        cut = np.minimum(lengths, max_length)
        trained = self._trained_before()
        starts = self.offsets[:-1]
        keep = ~over if overlong == "drop" else ~over | (trained[starts + cut] > trained[starts])
        status = np.where(keep, np.where(over, TRUNCATED, OK), DROPPED).astype(np.int8)
        new_lengths = np.where(keep, cut, 0)
        position = np.arange(len(self.input_ids)) - np.repeat(starts, lengths)
        take = position < np.repeat(new_lengths, lengths)
        offsets = np.concatenate([[0], np.cumsum(new_lengths)]).astype(np.int64)
        return EncodedBatch(self.input_ids[take], self.labels[take], offsets), status

    def trained_counts(self) -> np.ndarray:
        trained = self._trained_before()
        return trained[self.offsets[1:]] - trained[self.offsets[:-1]]

    def _trained_before(self) -> np.ndarray:
        """Trained tokens before each flat position: trained[j] counts labels[:j] (len(labels) + 1 values)."""
        return np.concatenate([[0], np.cumsum(self.labels != IGNORE_INDEX)])


def _direct_backend(tokenizer):
    """The Rust tokenizer, when calling it directly gives what `tokenizer(texts, add_special_tokens=False)`
    gives: transformers' own call path (not overridden), no truncation or padding set on the backend,
    special-token splitting as the tokenizer would set it. Else None (use the tokenizer call)."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # another transformers layout: take the ordinary path
        return None
    cls = type(tokenizer)
    if not (isinstance(tokenizer, TokenizersBackend) and cls._encode_plus is TokenizersBackend._encode_plus
            and cls.__call__ is PreTrainedTokenizerBase.__call__ and not hasattr(tokenizer, "_switch_to_input_mode")):
        return None
    backend = tokenizer.backend_tokenizer
    if backend.truncation is not None or backend.padding is not None:
        return None
    if backend.encode_special_tokens != bool(getattr(tokenizer, "split_special_tokens", False)):
        return None
    return backend


_CALL_LOCK = threading.Lock()


def _tokenize_with(tokenizer, texts: list[str]) -> tuple[list[list[int]], np.ndarray]:
    """(ids of each text, start character of each token, all texts flat), with no special tokens added."""
    backend = _direct_backend(tokenizer)
    if backend is not None:
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        ids, offsets = [e.ids for e in encodings], [e.offsets for e in encodings]
    else:
        with _CALL_LOCK:  # the call may first reset the backend's settings, which must not race an encode
            enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
    n = sum(map(len, ids))
    return ids, np.fromiter((s for offs in offsets for s, _ in offs), np.int64, n)


def _tokenize(tokenizer, texts: list[str], fast=None) -> tuple[list[list[int]], np.ndarray]:
    """`_tokenize_with`, through `fast` (a FastBPE) when given and usable; some of its calls are
    checked against the tokenizer (see mmtune.data.fast_bpe)."""
    if fast is None or fast.mismatch:
        return _tokenize_with(tokenizer, texts)
    result = fast.encode(texts)
    if result is None:
        return _tokenize_with(tokenizer, texts)
    if fast.should_verify():
        reference = _tokenize_with(tokenizer, texts)
        fast.check(texts, result, reference)
        return reference
    return result


def encode_rendered(tokenizer, rendered: Sequence[tuple[str, list[Span]]], fast=None) -> EncodedBatch:
    """Encode rendered texts with their trained character spans.

    A token is trained when its start offset lies inside a span. Spans are sorted and disjoint; the
    per-token rule of a single left-to-right pass (the span pointer only moves forward, so it is
    found from the running maximum of the starts) is applied to all tokens of the batch at once by
    laying the texts end to end, one character apart, and shifting offsets and spans alike."""
    texts = [text for text, _ in rendered]
    ids, starts = _tokenize(tokenizer, texts, fast)
    counts = np.fromiter(map(len, ids), np.int64, len(ids))
    flat_ids = np.fromiter(chain.from_iterable(ids), np.int32, int(counts.sum()))
    room = np.fromiter(map(len, texts), np.int64, len(texts)) + 1
    base = np.cumsum(room) - room  # where each text starts when laid end to end, one character apart
    starts = starts + np.repeat(base, counts)
    n_spans = np.fromiter((len(spans) for _, spans in rendered), np.int64, len(rendered))
    spans = np.fromiter(chain.from_iterable(chain.from_iterable(sp for _, sp in rendered)), np.int64,
                        2 * int(n_spans.sum())).reshape(-1, 2) + np.repeat(base, n_spans)[:, None]
    span_i = np.searchsorted(spans[:, 1], np.maximum.accumulate(starts), side="right")
    inside = span_i < len(spans)
    inside[inside] = spans[span_i[inside], 0] <= starts[inside]
    labels = np.where(inside, flat_ids, np.int32(IGNORE_INDEX)).astype(np.int32)
    return EncodedBatch(flat_ids, labels, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))


def with_system(messages: Sequence[Message], system: str | None) -> list[Message]:
    """Add `system` in front when the conversation has no system message of its own."""
    msgs = list(messages)
    if system is not None and not (msgs and msgs[0].role == "system"):
        msgs.insert(0, Message("system", system))
    return msgs


class ConversationEncoder:
    def __init__(self, tokenizer, template: ChatFormat, max_length: int, overlong: str = "truncate", system: str | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(f"the tokenizer ({type(tokenizer).__name__}) is a slow (Python) tokenizer; mmtune needs a "
                              "fast (Rust) one: its character offsets place the loss mask exactly",
                              hint="use a model whose tokenizer has a tokenizer.json, or convert it with "
                                   "AutoTokenizer.from_pretrained(path) and save_pretrained")
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.overlong = overlong
        self.system = system
        self.fast = None  # a FastBPE for bulk encoding (see mmtune.data.fast_bpe), set by the caller

    def render(self, conv: Conversation) -> tuple[str, list[tuple[int, int]]]:
        return self.template.render(with_system(conv.messages, self.system), tools=conv.tools)

    def encode_full(self, conv: Conversation) -> EncodedSample:
        """Encode without any length limit."""
        return self.encode_batch([conv]).sample(0)

    def encode_batch(self, convs: Sequence[Conversation]) -> EncodedBatch:
        """Encode many conversations at once, without any length limit."""
        return encode_rendered(self.tokenizer, [self.render(c) for c in convs], self.fast)

    def encode(self, conv: Conversation) -> EncodedSample | None:
        """Encode and apply the length policy; None when the sample must be dropped."""
        return fit_length(self.encode_full(conv), self.max_length, self.overlong)[0]

    def length(self, conv: Conversation) -> int:
        return len(self.encode_full(conv).input_ids)


def encoder_for(data_cfg, tokenizer, template: ChatFormat | None = None) -> ConversationEncoder:
    """The encoder a recipe's `data` section describes (template, max_length, overlong, system)."""
    template = template if template is not None else get_template(data_cfg.template, tokenizer)
    return ConversationEncoder(tokenizer, template, data_cfg.max_length, data_cfg.overlong, data_cfg.system)
