"""Byte-level BPE through tiktoken: the tokenizer's own ids, about 3x faster to compute.

Qwen2, Llama 3 and GPT-style tokenizers (and the ones `mmtune make-tiny` trains) are byte-level BPE:
a regex cuts the text into pieces and each piece's UTF-8 bytes are merged. tiktoken runs that
algorithm in Rust with far less overhead than `tokenizers` (which tracks offsets and alignments for
every character); on our CPU it encoded chat texts ~5x faster per core, with character offsets
recovered here from each token's byte length.

Used only for bulk tokenization of training data (`data.fast_bpe`), and only where it can agree:
- `FastBPE.from_tokenizer` returns None unless the live tokenizer is plain byte-level BPE: no dropout,
  byte fallback or word suffixes, no normalizer but NFC (a text not already NFC goes to the
  tokenizer), a GPT-2 or Split-regex pre-tokenizer, added tokens matched as plain text.
- One difference remains possible: tiktoken merges any two neighbours whose concatenation is in the
  vocabulary (lowest id first) where `tokenizers` merges only listed pairs. For vocabularies trained
  by BPE the two agree unless a pair missing from the merge list can actually occur, so every
  `verify_every`-th call is also encoded by the tokenizer and compared (ids and offsets); on a
  difference `mismatch` is set and the caller must re-encode everything with the tokenizer. Even then
  the tiktoken ids decode to the same text (a different segmentation, never different content).
"""

from __future__ import annotations

import json
import logging
import threading
import unicodedata
from itertools import chain

import numpy as np

log = logging.getLogger(__name__)

# tokenizers' ByteLevel(use_regex=True) pattern (GPT-2)
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _byte_decoder() -> dict[str, int]:
    """The byte-level alphabet: printable stand-in character -> byte (GPT-2's bytes_to_unicode)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _pattern(pre_tokenizer: dict | None) -> str | None:
    """The piece regex when the pre-tokenizer is byte-level with a regex tiktoken can run, else None."""
    if not pre_tokenizer:
        return None
    if pre_tokenizer.get("type") == "ByteLevel":
        ok = pre_tokenizer.get("use_regex", True) and not pre_tokenizer.get("add_prefix_space", False)
        return GPT2_PATTERN if ok else None
    parts = pre_tokenizer.get("pretokenizers") if pre_tokenizer.get("type") == "Sequence" else None
    if not parts or len(parts) != 2:
        return None
    split, byte_level = parts
    if not (split.get("type") == "Split" and split.get("behavior") == "Isolated" and not split.get("invert")
            and "Regex" in (split.get("pattern") or {})):
        return None
    if not (byte_level.get("type") == "ByteLevel" and not byte_level.get("use_regex", True)
            and not byte_level.get("add_prefix_space", False)):
        return None
    return split["pattern"]["Regex"]


def _why_not(spec: dict) -> str | None:
    """Why this tokenizer.json cannot be run by tiktoken exactly, or None when it can."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return f"model {model.get('type')} is not BPE"
    if model.get("dropout") or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
            or model.get("end_of_word_suffix"):
        return "BPE with dropout, byte fallback or word affixes"
    if spec.get("normalizer") not in (None, {"type": "NFC"}):
        return f"normalizer {spec['normalizer'].get('type')}"
    if _pattern(spec.get("pre_tokenizer")) is None:
        return "pre-tokenizer is not plain byte-level"
    post = spec.get("post_processor") or {}
    if post.get("type") == "ByteLevel" and post.get("trim_offsets"):
        return "offsets are trimmed"  # would move token starts; not worth replicating
    added = spec.get("added_tokens") or []
    if any(a.get("lstrip") or a.get("rstrip") or a.get("single_word") for a in added):
        return "added tokens strip or match whole words"
    contents = [a["content"] for a in added]
    if any(a != b and b.startswith(a) for a in contents for b in contents):
        return "an added token is a prefix of another"  # tiktoken takes the first alternative, not the longest
    return None


class FastBPE:
    def __init__(self, encoding, byte_lengths: np.ndarray, nfc: bool, verify_every: int):
        self.encoding = encoding
        self.byte_lengths = byte_lengths
        self.nfc = nfc
        self.verify_every = verify_every
        self.specials = set(encoding.special_tokens_set)
        self.mismatch: str | None = None
        self._calls = 0
        self._lock = threading.Lock()

    @classmethod
    def from_tokenizer(cls, tokenizer, verify_every: int = 10) -> "FastBPE | None":
        """A FastBPE giving what `tokenizer` gives, or None (logged) when tiktoken cannot."""
        from mmtune.data.encode import _direct_backend

        backend = _direct_backend(tokenizer)
        if backend is None:
            return None
        try:
            import tiktoken
        except ImportError:
            log.info("tiktoken is not installed: tokenizing with the tokenizer itself")
            return None
        spec = json.loads(backend.to_str())
        reason = _why_not(spec)
        if reason is None:
            to_byte = _byte_decoder()
            vocab = spec["model"]["vocab"]
            if any(ch not in to_byte for token in vocab for ch in token):
                reason = "vocabulary is not byte-level"
            elif len({to_byte[t] for t in vocab if len(t) == 1}) < 256:
                reason = "vocabulary lacks some single bytes"
        if reason is not None:
            log.info("fast BPE not used (%s): tokenizing with the tokenizer itself", reason)
            return None
        specials = {a["content"]: a["id"] for a in spec.get("added_tokens") or []}
        # an added token is matched as a whole before BPE, never made by merges: not a mergeable rank
        as_bytes = ((bytes(to_byte[ch] for ch in token), i) for token, i in vocab.items())
        ranks = {b: i for b, i in as_bytes if b.decode("utf-8", "replace") not in specials}
        size = max(chain(ranks.values(), specials.values())) + 1
        try:
            encoding = tiktoken.Encoding("mmtune-fast-bpe", pat_str=_pattern(spec["pre_tokenizer"]),
                                         mergeable_ranks=ranks, special_tokens=specials)
        except Exception as e:  # a regex tiktoken's engine rejects, duplicate ranks...
            log.info("fast BPE not used (%s): tokenizing with the tokenizer itself", e)
            return None
        byte_lengths = np.zeros(size, np.int64)
        for b, i in ranks.items():
            byte_lengths[i] = len(b)
        for text, i in specials.items():
            byte_lengths[i] = len(text.encode())
        return cls(encoding, byte_lengths, spec.get("normalizer") is not None, verify_every)

    def encode(self, texts: list[str]) -> tuple[list[list[int]], np.ndarray] | None:
        """(ids of each text, start character of each token, all texts flat), or None when the
        tokenizer must do it (texts not NFC under an NFC normalizer)."""
        if self.nfc and not all(t.isascii() or unicodedata.is_normalized("NFC", t) for t in texts):
            return None
        encode = self.encoding.encode
        ids = [encode(t, allowed_special=self.specials, disallowed_special=()) for t in texts]
        return ids, self.starts(texts, ids)

    def starts(self, texts: list[str], ids: list[list[int]]) -> np.ndarray:
        counts = np.fromiter(map(len, ids), np.int64, len(ids))
        flat = np.fromiter(chain.from_iterable(ids), np.int64, int(counts.sum()))
        ends = np.cumsum(self.byte_lengths[flat])
        first = np.cumsum(counts) - counts  # index of each text's first token
        before = np.concatenate([[0], ends])[first]  # bytes of the earlier texts
        starts = ends - self.byte_lengths[flat] - np.repeat(before, counts)
        for i, text in enumerate(texts):
            if not text.isascii():  # byte offsets -> character offsets
                raw = np.frombuffer(text.encode(), np.uint8)
                char_of_byte = np.cumsum((raw & 0xC0) != 0x80) - 1
                part = slice(first[i], first[i] + counts[i])
                starts[part] = char_of_byte[starts[part]]
        return starts

    def should_verify(self) -> bool:
        with self._lock:
            self._calls += 1
            return (self._calls - 1) % self.verify_every == 0

    def check(self, texts: list[str], fast: tuple, reference: tuple) -> None:
        """Compare a call's (ids, starts) with the tokenizer's; note the first difference."""
        for i, (a, b) in enumerate(zip(fast[0], reference[0])):
            if a != b:
                at = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                self.mismatch = (f"text {i} differs at token {at}: tiktoken {a[at:at + 3]}, "
                                 f"tokenizer {b[at:at + 3]} ({texts[i][:60]!r}...)")
                return
        if not np.array_equal(fast[1], reference[1]):
            self.mismatch = "token offsets differ"
