"""VLMEvalKit's answer -> option rules (`can_infer`), reproduced rule for rule.

Matched release: VLMEvalKit main at commit e8e78f05 (2026-08-18, `git describe`: v0.3rc1-342), the
first version with the "answer is X" rule; vlmeval/utils/matching_util.py. Re-written from its
behaviour and checked against it on a corpus (tests/eval/test_match_vlmevalkit.py); not copied.

`infer(answer, options)` gives the letter, "Z" (a refusal: scored wrong, never sent to a judge) or
None (unmatched: a judge may be asked). Rules, in order:

1. an answer containing "Failed to obtain answer via API" skips the letter rules;
2. an answer containing one of four refusal sentences is "Z";
3. `.()[],:;!*#{}` become spaces and the answer is split on whitespace; when exactly one option
   letter (case-sensitive) is among the words and it is one of the last 4 words, it is the answer;
   when no option letter is there but the word "Z" is, the answer is "Z";
4. otherwise the first "answer is X" / "correct answer is X" (any case, X one of A-D, `**` allowed
   around it, no word boundary: "the answer is about" reads A) picks X when X is an option;
5. otherwise, when the lower-cased answer is at most twice as long as all option texts together,
   the one option whose lower-cased text is a substring of it; several or none: unmatched.

Options are those VLMEvalKit sees: texts read by pandas, so "None", "NA", "" ... are missing
(`read_options`), numbers written back as pandas prints them. Predictions are read back as from
its .xlsx: an empty or NA-like answer becomes "nan" (`as_read_back`).
"""

from __future__ import annotations

import re

# pandas' default NA strings (read_csv / read_excel `na_values`); tests check this against pandas.
PANDAS_NA = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                       "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
API_FAILURE = "Failed to obtain answer via API"
REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
            "I'm sorry, but without the image provided", "Cannot determine the answer")
_SPACED = str.maketrans({ch: " " for ch in ".()[],:;!*#{}"})
_ANSWER_IS = re.compile(r"(?:correct\s+)?answer\s+is\s+\**([ABCD])\**", re.IGNORECASE)
LAST_WORDS = 4  # an option letter counts only among the last 4 words


def as_read_back(answer) -> str:
    """The prediction as VLMEvalKit scores it after its .xlsx round trip (NA-like -> "nan")."""
    text = "" if answer is None else str(answer)
    return "nan" if text in PANDAS_NA else text


def infer_letter(answer: str, options: dict[str, str]) -> str | None:
    """Rules 1-4: an option letter, "Z", or None."""
    if API_FAILURE in answer:
        return None
    if any(sentence in answer for sentence in REFUSALS):
        return "Z"
    words = answer.translate(_SPACED).split()
    present = [letter for letter in options if letter in words]
    if len(present) == 1:
        letter = present[0]
        if words.index(letter) > len(words) - 1 - LAST_WORDS:
            return letter
    elif not present and "Z" in words:
        return "Z"
    found = _ANSWER_IS.search(answer)
    if found and found.group(1).upper() in options:
        return found.group(1).upper()
    return None


def infer_text(answer: str, options: dict[str, str]) -> str | None:
    """Rule 5: the one option whose text is inside the (short enough) answer, case-insensitive."""
    said = answer.lower()
    if len(said) > 2 * sum(len(str(v)) for v in options.values()):
        return None
    hits = [letter for letter, text in options.items() if str(text).lower() in said]
    return hits[0] if len(hits) == 1 else None


def infer(answer, options: dict[str, str]) -> str | None:
    """The option letter, "Z" for a refusal, or None when unmatched (VLMEvalKit's `can_infer`)."""
    answer = str(answer)
    return infer_letter(answer, options) or infer_text(answer, options)
