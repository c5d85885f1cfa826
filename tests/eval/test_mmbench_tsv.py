"""Reading MMBench-format TSVs: prompts, hints, 2-6 options, Chinese, shared images, test splits."""

from __future__ import annotations

import pytest

from mmtune.errors import DataError
from mmtune.eval.tsv import INSTRUCTION_EN, INSTRUCTION_ZH, has_chinese, read_mmbench_tsv


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


def test_option_texts_are_read_as_pandas_reads_them(bench):
    """VLMEvalKit reads TSVs with pandas: "None" / "NA" options are missing, numbers print as pandas
    prints them, nothing is stripped. `na="literal"` keeps every written text."""
    path = bench.write([bench.row(0, "Which?", ["None", "All of them", " NA", "NA"], answer="B"),
                        bench.row(1, "How many?", ["3", "4", "", ""], answer="B")])
    item, numbers = read_mmbench_tsv(path).items
    assert item.options == {"B": "All of them", "C": " NA"}
    assert item.prompt == "Which?\nB. All of them\nC.  NA\n" + INSTRUCTION_EN
    assert numbers.options == {"A": "3.0", "B": "4"}  # column A is float (NaN above), B text, as pandas reads
    literal, numbers = read_mmbench_tsv(path, na="literal").items
    assert literal.options == {"A": "None", "B": "All of them", "C": " NA", "D": "NA"}
    assert numbers.options == {"A": "3", "B": "4"}


def test_chinese_question_gets_chinese_instruction(bench):
    path = bench.write([
        bench.row(0, "图中的形状是什么颜色？", ["红色", "蓝色", "", ""]),
        bench.row(1, "What does the character 福 mean?", ["luck", "water", "", ""]),
        bench.row(2, "这是什么 logo？", ["Apple", "Google", "", ""], hint="请看图片"),
        bench.row(3, "Which word means cat?", ["猫", "狗", "", ""]),
        bench.row(4, "Which shape?", ["circle", "square", "", ""], hint="图"),
        bench.row(5, "Which shape?", ["circle", "square", "", ""], hint="ｆｕｌｌ-width　ｌａｔｉｎ"),
    ])
    zh, one_char, mixed, in_option, in_hint, fullwidth = read_mmbench_tsv(path).items
    assert zh.prompt.endswith(INSTRUCTION_ZH) and zh.is_chinese
    # VLMEvalKit: any CJK ideograph in hint, question or options makes the instruction Chinese
    assert one_char.prompt.endswith(INSTRUCTION_ZH) and in_option.is_chinese and in_hint.is_chinese
    assert mixed.prompt.endswith(INSTRUCTION_ZH)
    assert fullwidth.prompt.endswith(INSTRUCTION_EN)  # full-width Latin is not U+4E00-U+9FFF
    assert has_chinese("请直接回答") and not has_chinese("plain English") and not has_chinese("")


def test_shared_image_rows(bench):
    red, blue = bench.png((255, 0, 0)), bench.png((0, 0, 255), size=(5, 5))
    path = bench.write([
        bench.row(10, "Q0", ["a", "b", "", ""], image=red),
        bench.row(11, "Q1", ["a", "b", "", ""], image="10"),  # shares row 10's image
        bench.row(12, "Q2", ["a", "b", "", ""], image=blue),
        bench.row(1000010, "Q0", ["b", "a", "", ""], answer="B", image="10"),
        bench.row(2000010, "Q0", ["b", "a", "", ""], answer="B", image="1000010"),  # a chain: -> 1000010 -> 10
    ])
    items = read_mmbench_tsv(path).items
    first, shared, other, rotated, chained = (it.images[0] for it in items)
    assert first.mode == "RGB" and first.getpixel((0, 0)) == (255, 0, 0)
    assert shared.tobytes() == first.tobytes() and rotated.tobytes() == first.tobytes()
    assert chained.tobytes() == first.tobytes()
    assert other.size == (5, 5)


def test_bad_image_reference_and_bad_image(bench):
    path = bench.write([bench.row(0, "Q", ["a", "b", "", ""], image="7")])
    with pytest.raises(DataError, match=r"line 2:image: image refers to row index 7"):
        read_mmbench_tsv(path)
    loop = bench.write([bench.row(0, "Q", ["a", "b", "", ""], image="1"), bench.row(1, "Q", ["a", "b", "", ""], image="0")])
    with pytest.raises(DataError, match="image references loop: 0 -> 1 -> 0"):
        read_mmbench_tsv(loop)
    item = read_mmbench_tsv(bench.write([bench.row(0, "Q", ["a", "b", "", ""], image="x" * 80)])).items[0]
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
    with pytest.raises(DataError, match=r"line 2:answer: answer 'C' is not one of the options A, B"):
        read_mmbench_tsv(bench.write([bench.row(0, "Q", ["a", "b", "", ""], answer="C")]))
    with pytest.raises(DataError, match="line 3:index: index 0 also used by .*line 2"):
        read_mmbench_tsv(bench.write([bench.row(0, "Q", ["a", "b"]), bench.row(0, "Q", ["a", "b"])]))
    with pytest.raises(DataError, match="no option present"):
        read_mmbench_tsv(bench.write([bench.row(0, "Q", ["", "", "", ""])]))
    broken = tmp_path / "broken.tsv"
    broken.write_text("index\tquestion\tA\tB\n0\tQ\ta\tb\n1\tQ\ta\tb\textra\n", encoding="utf-8")
    with pytest.raises(DataError, match="not a valid TSV: .*line 3"):
        read_mmbench_tsv(broken)
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("index\tquestion\tA\tB\n0\tQué\ta\tb\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_mmbench_tsv(latin1)
    with pytest.raises(DataError, match="missing column"):
        read_mmbench_tsv(bench.write([{"question": "Q", "A": "a", "B": "b"}], ["question", "A", "B"]))
