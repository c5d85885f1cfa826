"""Answer -> option, on answers the way real models write them.

The default rules are VLMEvalKit's; they are checked against VLMEvalKit's own decisions in
test_match_vlmevalkit.py. This file pins the lenient rules (`matching="lenient"`) and the public API.
"""

from __future__ import annotations

from functools import partial

import pytest

from mmtune.eval.extract import extract_choice as public_extract_choice
from mmtune.eval.extract import match_answer
from mmtune.eval.match_lenient import infer_option, infer_text

extract_choice = partial(match_answer, matching="lenient")

SHAPES = {"A": "blue square", "B": "red circle", "C": "green star", "D": "yellow diamond"}


@pytest.mark.parametrize("answer", [
    "B", "(B)", "B.", "B)", "Answer: B", "The answer is B", "The answer is B.", "**B**", "B. red circle",
    "The correct option is (B).", "b", "(b)", "the answer is b", "B\n", "Option B", "B is correct.",
])
def test_letter_answers(answer):
    assert extract_choice(answer, SHAPES).letter == "B"
    assert extract_choice(answer, SHAPES).method == "option"


def test_answer_colon_b_is_b_not_a():
    """'Answer' starts with A; only whole tokens count."""
    assert extract_choice("Answer: B", SHAPES).letter == "B"
    assert extract_choice("ANSWER: B", SHAPES).letter == "B"


@pytest.mark.parametrize("answer", [
    "The answer is the red circle", "red circle", "Red circle.", "It is a red circle.", "A red circle",
    "a red circle", "I see a red circle.",
])
def test_option_text_answers(answer):
    got = extract_choice(answer, SHAPES)
    assert (got.letter, got.method) == ("B", "text"), answer


def test_article_a_versus_letter_a():
    assert extract_choice("I think it's A", SHAPES).letter == "A"
    assert extract_choice("A", SHAPES).letter == "A"
    assert extract_choice("A.", SHAPES).letter == "A"
    assert extract_choice("A is the right one", SHAPES).letter == "A"
    # "A" as the article, and an option text that follows it
    assert extract_choice("A red circle", SHAPES).letter == "B"
    assert extract_choice("A green star on the left.", SHAPES).letter == "C"
    # a lone lower-case "a" inside a sentence is the article, never option A
    assert infer_option("it is a red circle", SHAPES) is None
    assert infer_option("the answer is a", SHAPES) == "A"


@pytest.mark.parametrize("answer", ["A or B", "B or C, not sure", "A and B", "Either (A) or (C)."])
def test_ambiguous_letters_are_unmatched(answer):
    got = extract_choice(answer, SHAPES)
    assert got.letter is None and got.method is None and not got.matched


def test_unmatched_answers():
    for answer in ["", "   ", "I don't know.", "a purple hexagon", "E"]:
        assert not extract_choice(answer, SHAPES).matched, answer
    # two option texts named: ambiguous
    assert not extract_choice("red circle or green star", SHAPES).matched


def test_chinese_answers():
    zh = {"A": "红色的圆", "B": "蓝色的方块", "C": "绿色的星"}
    for answer in ["选B", "答案是B。", "B选项", "答案：B", "（B）", "选b"]:
        assert extract_choice(answer, zh).letter == "B", answer
    assert extract_choice("一个蓝色的方块", zh).letter == "B"
    assert extract_choice("蓝色的方块", zh).method == "text"


def test_longer_option_wins_over_its_part():
    options = {"A": "circle", "B": "red circle", "C": "square"}
    assert infer_text("a red circle", options) == "B"
    assert infer_text("a circle", options) == "A"


def test_whole_words_only():
    options = {"A": "one", "B": "two", "C": "three"}
    assert infer_text("None of them", options) is None  # "one" inside "None"
    assert extract_choice("There are two.", options).letter == "B"
    yes_no = {"A": "yes", "B": "no"}
    assert extract_choice("Yes, there is.", yes_no).letter == "A"
    assert extract_choice("No.", yes_no).letter == "B"


def test_long_explanations_are_not_text_matched():
    """Like VLMEvalKit: a long explanation names wrong options too, so no text match."""
    long = "Looking at the picture, the shape is clearly round and its colour is a bright red. " * 3 + "red circle"
    assert infer_text(long, SHAPES) is None


def test_public_function_returns_the_letter_and_defaults_to_vlmevalkit():
    assert public_extract_choice("B. red circle", SHAPES) == "B"
    # the forms the issue names: VLMEvalKit rejects them, lenient takes them
    for answer in ["b", "选B", "答案是B"]:
        assert public_extract_choice(answer, SHAPES) is None, answer
        assert public_extract_choice(answer, SHAPES, matching="lenient") == "B", answer
    # a leading article: VLMEvalKit reads option A
    assert public_extract_choice("A red circle", SHAPES) == "A"
    assert public_extract_choice("A red circle", SHAPES, matching="lenient") == "B"
    # punctuation VLMEvalKit turns into spaces
    for answer in ["Answer:B", "Answer:B.", "\\boxed{B}"]:
        assert public_extract_choice(answer, SHAPES) == "B", answer


def test_a_refusal_is_unmatched_and_marked():
    got = match_answer("Cannot determine the answer", SHAPES)
    assert got.letter is None and got.refused and not got.needs_judge
    assert public_extract_choice("Cannot determine the answer", SHAPES) is None
    unmatched = match_answer("a purple hexagon", SHAPES)
    assert unmatched.needs_judge and not unmatched.refused


def test_unknown_matching_is_refused():
    with pytest.raises(ValueError, match="vlmevalkit"):
        public_extract_choice("B", SHAPES, matching="strict")
