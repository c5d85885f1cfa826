"""CircularEval: building rotations, and a question scoring only when all its rotations are right."""

from __future__ import annotations

from mmtune.eval.circular import (ROTATION_STRIDE, add_rotations, circular_accuracy, circular_groups, group_of,
                                  has_rotations, names_letters, rotate)
from mmtune.eval.mmbench import run_mmbench, summarize
from mmtune.eval.tsv import read_mmbench_tsv


def test_rotation_moves_options_and_answer(bench):
    item = read_mmbench_tsv(bench.write([bench.row(7, "Q", ["w", "x", "y", "z"], answer="C")])).items[0]
    r1, r3 = rotate(item, 1), rotate(item, 3)
    assert r1.index == 7 + ROTATION_STRIDE and r3.index == 7 + 3 * ROTATION_STRIDE
    assert list(r1.options.values()) == ["x", "y", "z", "w"] and r1.answer == "B"
    assert list(r3.options.values()) == ["z", "w", "x", "y"] and r3.answer == "D"
    assert r1.options[r1.answer] == item.options[item.answer] == r3.options[r3.answer] == "y"
    assert "A. x\nB. y\nC. z\nD. w" in r1.prompt
    assert r1.row["A"] == "x" and r1.row["answer"] == "B" and r1.row["index"] == str(r1.index)
    assert item.options == {"A": "w", "B": "x", "C": "y", "D": "z"}  # the original is untouched


def test_add_rotations_counts_and_groups(bench):
    items = read_mmbench_tsv(bench.write([
        bench.row(0, "Q4", ["a", "b", "c", "d"], answer="A"),
        bench.row(1, "Q2", ["yes", "no", "", ""], answer="B"),
        bench.row(2, "Q3", ["1", "2", "3", ""], answer="C"),
    ])).items
    rotated = add_rotations(items)
    assert len(rotated) == 4 + 2 + 3
    assert sorted({group_of(it) for it in rotated}) == [0, 1, 2]
    for it in rotated:  # every rotation's answer names the same text
        original = items[group_of(it)]
        assert it.options[it.answer] == original.options[original.answer]
    # each option text sits at each letter exactly once over a question's rotations
    q4 = [it for it in rotated if group_of(it) == 0]
    assert {it.options["A"] for it in q4} == {"a", "b", "c", "d"}
    assert [it.answer for it in q4] == ["A", "D", "C", "B"]


def test_questions_naming_letters_are_not_rotated(bench):
    """As `vlmutil circular`: "Both A and B" would be wrong once A and B move; an option that is a
    letter itself likewise. Such questions stay one row (their own group)."""
    items = read_mmbench_tsv(bench.write([
        bench.row(0, "Q", ["cat", "dog", "Both A and B", "Neither"], answer="C"),
        bench.row(1, "Q", ["X", "Y", "", ""], answer="A"),
        bench.row(2, "Q", ["cat", "dog", "A only", ""], answer="A"),  # one letter named: rotated
    ])).items
    assert names_letters(items[0].options) and names_letters(items[1].options) and not names_letters(items[2].options)
    rotated = add_rotations(items)
    assert [it.index for it in rotated] == [0, 1, 2, 1_000_002, 2_000_002]


def test_big_indexes_get_a_bigger_offset(bench):
    """VLMEvalKit multiplies the offset by 10 until it is above every index."""
    items = read_mmbench_tsv(bench.write([bench.row(ROTATION_STRIDE + 5, "Q", ["a", "b", "", ""])])).items
    rotated = add_rotations(items)
    assert [it.index for it in rotated] == [ROTATION_STRIDE + 5, 11 * ROTATION_STRIDE + 5]
    assert {group_of(it) for it in rotated} == {ROTATION_STRIDE + 5}  # grouped by g_index, not index % 1e6


def _items(bench, indexes: list[int], g_index: list[int] | None = None):
    rows = [bench.row(i, f"Q{i}", ["a", "b", "", ""]) for i in indexes]
    columns = bench.columns
    if g_index is not None:
        columns = columns + ["g_index"]
        for row, g in zip(rows, g_index):
            row["g_index"] = g
    return read_mmbench_tsv(bench.write(rows, columns)).items


def test_scoring_arithmetic(bench):
    hits = {0: True, 1_000_000: True, 2_000_000: True,      # question 0: all right -> 1
            1: True, 1_000_001: False,                      # question 1: one wrong -> 0
            2: False,                                       # question 2: single row, wrong -> 0
            3: True, 1_000_003: True}                       # question 3: right -> 1
    items = _items(bench, list(hits))
    groups, dropped = circular_groups(items, hits)
    assert [(g.group, g.hit, g.n_rotations, g.main) for g in groups] == [
        (0, True, 3, 0), (1, False, 2, 1), (2, False, 1, 2), (3, True, 2, 3)]
    assert dropped == []
    assert circular_accuracy(items, hits) == 0.5
    assert circular_accuracy([], {}) == 0.0


def test_group_without_its_main_row_is_dropped(bench):
    hits = {0: True, 1_000_000: True, 1_000_001: True, 2_000_001: True}  # main row 1 is missing
    items = _items(bench, list(hits))
    groups, dropped = circular_groups(items, hits)
    assert [g.group for g in groups] == [0] and dropped == [1_000_001, 2_000_001]


def test_explicit_g_index_column_is_honoured(bench):
    """Rows 7 and 50 are one group by `g_index` although 50 % 1e6 != 7."""
    hits = {7: True, 50: False, 8: True}
    items = _items(bench, [7, 50, 8], g_index=[7, 7, 8])
    assert has_rotations(items)
    groups, _ = circular_groups(items, hits)
    assert [(g.group, g.hit, g.n_rotations) for g in groups] == [(7, False, 2), (8, True, 1)]


def test_summary_per_category_uses_groups(bench):
    """A file that already ships rotations: nothing is built; categories come from each group's main row."""
    rows = [bench.row(0, "Q0", ["a", "b", "", ""], answer="A", category="colour"),
            bench.row(1_000_000, "Q0", ["b", "a", "", ""], answer="B", category="colour"),
            bench.row(1, "Q1", ["a", "b", "", ""], answer="A", category="shape"),
            bench.row(1_000_001, "Q1", ["b", "a", "", ""], answer="B", category="shape")]
    items = read_mmbench_tsv(bench.write(rows)).items
    records = {it.index: {"index": it.index, "option": "A", "method": "option", "hit": it.answer == "A"}
               for it in items}
    records[1_000_000]["hit"] = True  # question 0 right in both rotations; question 1 wrong in one
    s = summarize(items, records, circular=True)
    assert s["overall"] == 0.5 and s["n"] == 2 and s["n_rows"] == 4
    assert s["per_category"] == {"colour": 1.0, "shape": 0.0}
    assert s["row_accuracy"] == 0.75
    vanilla = summarize(items, records, circular=False)
    assert vanilla["overall"] == 0.75 and vanilla["n"] == 4


def test_run_circular_builds_rotations_and_scores(bench, tmp_path):
    path = bench.write([bench.row(0, "colour?", ["red", "blue", "green", ""], answer="B"),
                        bench.row(1, "count?", ["one", "two", "", ""], answer="A")])

    def always_blue_or_a(items):  # knows question 0 (answers by text); always says "A" to question 1
        return ["blue" if it.question == "colour?" else "A" for it in items]

    result = run_mmbench(path, always_blue_or_a, tmp_path / "w", circular=True, progress=False)
    s = result.summary
    assert s["n_rows"] == 5 and s["n"] == 2
    # q0 right in all 3 rotations; q1 right only where its answer sits at A (1 of 2 rotations)
    assert s["overall"] == 0.5 and s["row_accuracy"] == 4 / 5
    assert sorted(r["index"] for r in result.records) == [0, 1, 1_000_000, 1_000_001, 2_000_000]
