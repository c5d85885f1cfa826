"""`--matching lenient`: mmtune's own answer -> option rules, kinder to chatty models than VLMEvalKit's.

    infer_option("Answer: B", {"A": "red", "B": "blue"})  -> "B"
    infer_text("the blue one", {"A": "red", "B": "blue"}) -> "B"
    infer_option("A or B", ...)                           -> None  (unmatched)

They accept forms VLMEvalKit rejects (a lone lower-case letter, "选B", a letter early in a long
sentence) and read a leading "A" before a lower-case word as the article; docs/eval.md lists every
difference. Scores made with them are not comparable with published (VLMEvalKit) numbers.

Step 1, option letters: the answer is cut into tokens after punctuation becomes spaces (and CJK
characters are split from Latin ones, so "选B" gives "选", "B"); exactly one distinct option letter
among the tokens is the choice. Two letters ("A or B") are ambiguous: unmatched, never the first.
"A" is also the English article (and "I", for 9+ options, the pronoun): an "A" that is neither
marked as an option ("A.", "(A)", "A:") nor last, and that is followed by an ordinary lower-case
word ("A red circle"), is read as the article; "A is correct" and "A or B" keep it a letter.
Lower-case letters are weak evidence ("a" is the article, "i" a pronoun): one counts only when it
is marked ("(b)", "b."), or is the last token ("the answer is b"), and only when no upper-case
option letter appears.

Step 2, option texts: exactly one option text appears in the answer as whole words, ignoring case
and punctuation (an option inside a longer matching option, "circle" in "red circle", yields to
it). Like VLMEvalKit, an answer more than twice as long as all option texts together (and longer
than TEXT_MATCH_MIN_CHARS) is not matched by text: a long explanation mentions wrong options too.

Anything else is unmatched; `--judge` can then ask an LLM (see judge.py).
"""

from __future__ import annotations

import re
import unicodedata

# A letter marked like this is an option, not a word: "A." "A)" "(A" "A:" "A," "[A]" "A：" ...
_MARKS = set(".():,;[]{}*#!?\"'`，。：；（）【】、")
# Words that may follow a bare option letter ("A is correct", "A or B"), so "A" is not the article.
_AFTER_LETTER = {"is", "was", "seems", "should", "would", "could", "or", "and", "because", "since", "as",
                 "option", "choice", "answer", "appears", "looks", "best", "correct", "right", "wrong"}
TEXT_MATCH_MIN_CHARS = 40  # short options ("yes"/"no") still match a short sentence ("Yes, there is.")
_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\u3000-\u303f\uff00-\uffef])")


def _tokens(answer: str) -> list[tuple[str, bool]]:
    """(bare token, marked) pairs: punctuation stripped off each whitespace-separated token,
    `marked` when punctuation was attached to it. CJK characters become tokens of their own."""
    text = unicodedata.normalize("NFKC", answer)
    text = _CJK.sub(r" \1 ", text)
    out = []
    for raw in text.split():
        bare = raw.strip("".join(_MARKS))
        if bare:
            out.append((bare, bare != raw))
        # a token made only of punctuation is dropped
    return out


def infer_option(answer: str, options: dict[str, str]) -> str | None:
    """The one option letter the answer names, or None (none, or several)."""
    letters = set(options)
    tokens = _tokens(answer)
    strong: set[str] = set()
    weak: set[str] = set()
    for i, (bare, marked) in enumerate(tokens):
        last = i == len(tokens) - 1
        if bare in letters:
            if bare in ("A", "I") and not marked and not last and _is_word(tokens, i):
                continue
            strong.add(bare)
        elif len(bare) == 1 and bare.upper() in letters and bare.islower():
            if marked or last or len(tokens) == 1:
                weak.add(bare.upper())
    found = strong or weak
    return next(iter(found)) if len(found) == 1 else None


def _is_word(tokens: list[tuple[str, bool]], i: int) -> bool:
    """Whether the bare "A" (or "I") at tokens[i] reads as the article (pronoun): an ordinary
    lower-case word follows ("A red circle", "I think it's B")."""
    following = tokens[i + 1][0]
    return following[:1].islower() and following.lower() not in _AFTER_LETTER


def _words(text: str) -> str:
    """Lower-case text with punctuation as spaces and CJK characters spaced, padded with spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _CJK.sub(r" \1 ", text)
    text = "".join(" " if (unicodedata.category(ch).startswith("P") or ch in "*#`") else ch for ch in text)
    return f" {' '.join(text.split())} "


def infer_text(answer: str, options: dict[str, str]) -> str | None:
    """The one option whose text the answer contains as whole words, or None."""
    if len(answer) > max(TEXT_MATCH_MIN_CHARS, 2 * sum(len(v) for v in options.values())):
        return None
    said = _words(answer)
    texts = {k: _words(v) for k, v in options.items()}
    hits = [k for k, t in texts.items() if t.strip() and t in said]
    # drop an option whose text lies inside another matching option's text ("circle" in "red circle")
    hits = [k for k in hits if not any(o != k and texts[k] in texts[o] and texts[k] != texts[o] for o in hits)]
    return hits[0] if len(hits) == 1 else None
