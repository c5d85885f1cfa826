"""Reading MMBench-format TSVs: prompts, hints, 2-6 options, Chinese, shared images, test splits."""

from __future__ import annotations

import pytest

from mmtune.errors import DataError
from mmtune.eval.tsv import INSTRUCTION_EN, INSTRUCTION_ZH, is_chinese, read_mmbench_tsv


def test_prompt_without_hint_and_with_hint(bench):
    path = bench.write([
        bench.row(0, "What colour is the shape?", ["red", "blue", "green", "yellow"], hint=""),
        bench.row(1, "What colour is the shape?", ["red", "blue", "", ""], hint="nan"),
        bench.row(2, "Which is bigger?", ["the cat", "the dog", "", ""], hint="The dog is on the left."),
    ])
    a, b, c = read_mmbench_tsv(path).items
    assert a.hint is None and b.hint is None
    assert a.prompt == ("What colour is the shape?\nA. red\nB. blue\nC. green\nD. yellow\n" + INSTRUCTION_EN)
    assert b.prompt == "What colour is the shape?\nA. red\nB. blue\n" + INSTRUCTION_EN
    assert c.hint == "The dog is on the left."
    assert c.prompt.splitlines()[:2] == ["The dog is on the left.", "Which is bigger?"]


def test_two_to_six_options(bench):
    columns = ["index", "question", "hint", "A", "B", "C", "D", "E", "F", "answer", "category", "image"]
    path = bench.write([
        bench.row(0, "Two?", ["yes", "no"], answer="B"),
        bench.row(1, "Six?", ["one", "two", "three", "four", "five", "six"], answer="F"),
        bench.row(2, "Three?", ["x", "y", "z"], answer="C"),
    ], columns)
    two, six, three = read_mmbench_tsv(path).items
    assert list(two.options) == ["A", "B"] and two.answer == "B"
    assert list(six.options) == list("ABCDEF") and "F. six" in six.prompt
    assert three.options == {"A": "x", "B": "y", "C": "z"} and "D." not in three.prompt
    assert six.l2_category is None  # no l2-category column


def test_option_named_none_is_kept(bench):
    """pandas would read "None" as NaN; MMBench has such options."""
    item = read_mmbench_tsv(bench.write([bench.row(0, "Which?", ["None", "All of them", "", ""])])).items[0]
    assert item.options == {"A": "None", "B": "All of them"}


def test_chinese_question_gets_chinese_instruction(bench):
    path = bench.write([
        bench.row(0, "图中的形状是什么颜色？", ["红色", "蓝色", "", ""]),
        bench.row(1, "What does the character 福 mean?", ["luck", "water", "", ""]),
        bench.row(2, "这是什么 logo？", ["Apple", "Google", "", ""], hint="请看图片"),
    ])
    zh, en, mixed = read_mmbench_tsv(path).items
    assert zh.prompt.endswith(INSTRUCTION_ZH) and zh.is_chinese
    assert en.prompt.endswith(INSTRUCTION_EN) and not en.is_chinese
    assert mixed.prompt.endswith(INSTRUCTION_ZH)
    assert is_chinese("请直接回答") and not is_chinese("plain English") and not is_chinese("")


def test_shared_image_rows(bench):
    red, blue = bench.png((255, 0, 0)), bench.png((0, 0, 255), size=(5, 5))
    path = bench.write([
        bench.row(10, "Q0", ["a", "b", "", ""], image=red),
        bench.row(11, "Q1", ["a", "b", "", ""], image="10"),  # shares row 10's image
        bench.row(12, "Q2", ["a", "b", "", ""], image=blue),
        bench.row(1000010, "Q0", ["b", "a", "", ""], answer="B", image="10"),
    ])
    items = read_mmbench_tsv(path).items
    first, shared, other, rotated = (it.images[0] for it in items)
    assert first.mode == "RGB" and first.getpixel((0, 0)) == (255, 0, 0)
    assert shared.tobytes() == first.tobytes() and rotated.tobytes() == first.tobytes()
    assert other.size == (5, 5)


def test_bad_image_reference_and_bad_image(bench):
    path = bench.write([bench.row(0, "Q", ["a", "b", "", ""], image="7")])
    with pytest.raises(DataError, match=r"row 0:image: image refers to row index 7"):
        read_mmbench_tsv(path)
    item = read_mmbench_tsv(bench.write([bench.row(0, "Q", ["a", "b", "", ""], image="x" * 40)])).items[0]
    with pytest.raises(DataError, match="not a base64-encoded image"):
        item.images


def test_test_split_without_answers(bench):
    columns = [c for c in bench.columns if c != "answer"]
    table = read_mmbench_tsv(bench.write([bench.row(0, "Q", ["a", "b", "c", ""], answer=None)], columns))
    assert table.split == "test" and not table.has_answers
    assert table.items[0].answer is None
    assert "image" not in table.items[0].row and table.items[0].row["question"] == "Q"


def test_readable_errors(bench, tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_mmbench_tsv(tmp_path / "nope.tsv")
    with pytest.raises(DataError, match=r"row 0:answer: answer 'C' is not one of the options A, B"):
        read_mmbench_tsv(bench.write([bench.row(0, "Q", ["a", "b", "", ""], answer="C")]))
    with pytest.raises(DataError, match="index 0 also used by row 0"):
        read_mmbench_tsv(bench.write([bench.row(0, "Q", ["a", "b"]), bench.row(0, "Q", ["a", "b"])]))
    with pytest.raises(DataError, match="1 non-empty option"):
        read_mmbench_tsv(bench.write([bench.row(0, "Q", ["a", "", "", ""])]))
    with pytest.raises(DataError, match="missing column"):
        read_mmbench_tsv(bench.write([{"question": "Q", "A": "a", "B": "b"}], ["question", "A", "B"]))
