"""The default matcher agrees with VLMEvalKit on every case of a corpus whose expected answers
VLMEvalKit's own code produced (tests/data/fixtures/vlmevalkit/make_matching_corpus.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from mmtune.eval.extract import match_answer
from mmtune.eval.match_vlmevalkit import PANDAS_NA, as_read_back

CORPUS = Path(__file__).parents[1] / "data/fixtures/vlmevalkit/matching_corpus.jsonl"


def _cases() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]


def test_corpus_is_big_and_varied():
    cases = _cases()
    assert len(cases) >= 300
    outcomes = {c["expected"] for c in cases}
    assert {None, "Z", "A", "B", "C", "D"} <= outcomes
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in c["answer"]) for c in cases)  # Chinese forms


def test_every_corpus_case_agrees_with_vlmevalkit():
    disagreements = []
    for case in _cases():
        got = match_answer(case["answer"], case["options"])
        letter = "Z" if got.refused else got.letter
        if letter != case["expected"]:
            disagreements.append((case["answer"], case["options"], case["expected"], letter))
    assert disagreements == []


def test_lenient_rules_differ_from_vlmevalkit():
    """The two modes are really different rule sets (else --matching would be a no-op)."""
    cases = _cases()
    differ = sum(1 for c in cases if match_answer(c["answer"], c["options"], "lenient").letter
                 != match_answer(c["answer"], c["options"]).letter)
    assert differ > 50


def test_na_strings_are_what_pandas_reads_as_missing():
    text = "x\n" + "\n".join(sorted(PANDAS_NA - {""})) + "\nB\n"
    read = pd.read_csv(io.StringIO(text))["x"]
    assert read.isna().sum() == len(PANDAS_NA) - 1 and read.iloc[-1] == "B"
    assert as_read_back("") == "nan" and as_read_back("None") == "nan" and as_read_back(" B") == " B"
