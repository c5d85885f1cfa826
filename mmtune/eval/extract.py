"""Which option a free-text answer picks: one public function, two rule sets.

    extract_choice("B. blue", {"A": "red", "B": "blue"})                  -> "B"
    extract_choice("A red circle", {...}, matching="vlmevalkit")          -> "A"  (VLMEvalKit reads option A)
    extract_choice("Cannot determine the answer", {...})                  -> None (a refusal: wrong)

`matching="vlmevalkit"` (the default) reproduces VLMEvalKit's `can_infer` exactly
(match_vlmevalkit.py names the release), so scores stand beside published ones.
`matching="lenient"` keeps mmtune's own rules (match_lenient.py): more answers matched, scores
not comparable with the leaderboard. docs/eval.md lists every difference.

`match_answer` says how the letter was found: "option" (a letter), "text" (an option's text),
"refusal" (VLMEvalKit's "Z": scored wrong and never sent to a judge), "judge", or None (unmatched).
"""

from __future__ import annotations

from dataclasses import dataclass

from mmtune.eval import match_lenient, match_vlmevalkit

MATCHING = ("vlmevalkit", "lenient")
DEFAULT_MATCHING = "vlmevalkit"


@dataclass(frozen=True)
class Extraction:
    letter: str | None  # the chosen option; None when unmatched or refused
    method: str | None  # "option", "text", "judge", "refusal"; None when unmatched

    @property
    def matched(self) -> bool:
        return self.letter is not None

    @property
    def refused(self) -> bool:
        return self.method == "refusal"

    @property
    def needs_judge(self) -> bool:
        """Unmatched and not a refusal: the answers a judge is asked about."""
        return self.letter is None and not self.refused


UNMATCHED = Extraction(None, None)
REFUSED = Extraction(None, "refusal")


def check_matching(matching: str) -> str:
    if matching not in MATCHING:
        raise ValueError(f"matching must be one of {', '.join(MATCHING)}, not {matching!r}")
    return matching


def match_answer(answer, options: dict[str, str], matching: str = DEFAULT_MATCHING) -> Extraction:
    """The option `answer` picks and how it was found (see the module docstring)."""
    if check_matching(matching) == "lenient":
        answer = str(answer or "")
        for method, rule in (("option", match_lenient.infer_option), ("text", match_lenient.infer_text)):
            letter = rule(answer, options)
            if letter is not None:
                return Extraction(letter, method)
        return UNMATCHED
    answer = match_vlmevalkit.as_read_back(answer)
    letter = match_vlmevalkit.infer_letter(answer, options)
    if letter == "Z" and "Z" not in options:
        return REFUSED
    if letter is not None:
        return Extraction(letter, "option")
    letter = match_vlmevalkit.infer_text(answer, options)
    return Extraction(letter, "text") if letter is not None else UNMATCHED


def extract_choice(answer, options: dict[str, str], matching: str = DEFAULT_MATCHING) -> str | None:
    """The chosen option letter; None when unmatched (a refusal counts as unmatched)."""
    return match_answer(answer, options, matching).letter
