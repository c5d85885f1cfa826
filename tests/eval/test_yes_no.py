"""Yes/no benchmarks and the multiple-choice family through `run_benchmark`: scores equal those
VLMEvalKit's own code gives the same tables and answers (tests/data/fixtures/vlmevalkit)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmtune.errors import DataError, MmtuneError
from mmtune.eval.benchmarks import BENCHMARKS, get_benchmark, run_benchmark
from mmtune.eval.yorn import extract_yes_no, process_punctuation

EXPECTED = json.loads((Path(__file__).parents[1] / "data/fixtures/vlmevalkit/yes_no_expected.json").read_text())


def _write(rows: list[dict], path: Path, drop=("prediction",)) -> Path:
    columns = [c for c in rows[0] if c not in drop]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[r[c] for c in columns] for r in rows])
    return path


def _run(name: str, table: str, tmp_path: Path, judge=None):
    rows = EXPECTED["tables"][table]["rows"]
    path = _write(rows, tmp_path / f"{table}.tsv")
    by_question = {str(r["index"]): r["prediction"] for r in rows}
    return run_benchmark(name, path, lambda items: [by_question[str(it.index)] for it in items], tmp_path / name,
                         progress=False, judge=judge)


def test_yes_no_extraction_as_vlmevalkit():
    for answer, expected in EXPECTED["extraction"].items():
        assert extract_yes_no(answer) == expected, answer


def test_punctuation_quirks():
    assert process_punctuation("yes/no") == "yes no" and process_punctuation("yes, no") == "yes no"
    assert process_punctuation("1,000 yes.") == "1000 yes"  # a comma between digits: punctuation removed


def test_mme_scores_as_vlmevalkit(tmp_path):
    expected = {k: v[0] for k, v in EXPECTED["tables"]["mme"]["scores"].items()}
    scores = _run("mme", "mme", tmp_path).summary["scores"]
    assert scores["perception"] == pytest.approx(expected.pop("perception"))
    assert scores["cognition"] == pytest.approx(expected.pop("reasoning"))
    assert scores["score"] == pytest.approx(expected)
    assert scores["missing_categories"] == []
    assert all(scores["score"][c] == pytest.approx(scores["acc"][c] + scores["acc_plus"][c]) for c in scores["score"])


def test_pope_scores_as_vlmevalkit(tmp_path):
    table = EXPECTED["tables"]["pope"]["scores"]
    scores = _run("pope", "pope", tmp_path).summary["scores"]
    for i, split in enumerate(table["split"]):
        for key in ("Overall", "acc", "precision", "recall"):
            assert scores[split][key] == pytest.approx(table[key][i]), (split, key)


def test_hallusionbench_scores_as_vlmevalkit(tmp_path):
    table = EXPECTED["tables"]["hallusion"]["scores"]
    scores = _run("hallusionbench", "hallusion", tmp_path).summary["scores"]
    for i, split in enumerate(table["split"]):
        for key in ("aAcc", "fAcc", "qAcc"):
            assert scores[split][key] == pytest.approx(table[key][i]), (split, key)


def test_result_files_and_resume(tmp_path):
    result = _run("pope", "pope", tmp_path)
    work = tmp_path / "pope"
    assert (work / "pope_result.xlsx").is_file() and json.loads((work / "summary.json").read_text())["n"] == 24
    assert result.summary["unknown"] == sum(1 for r in result.records if r["extracted"] == "Unknown")
    rows = EXPECTED["tables"]["pope"]["rows"]
    again = run_benchmark("pope", tmp_path / "pope.tsv", lambda items: pytest.fail("asked again"), work, progress=False)
    assert again.summary["scores"] == result.summary["scores"] and len(rows) == again.summary["n"]


def test_mme_image_with_one_question_is_a_clear_error(tmp_path):
    rows = [{"index": 0, "category": "OCR", "image_path": "a.jpg", "question": "Q?", "answer": "Yes"}]
    path = _write(rows, tmp_path / "mme.tsv")
    with pytest.raises(DataError, match="acc\\+ needs two"):
        run_benchmark("mme", path, lambda items: ["Yes"] * len(items), tmp_path / "w", progress=False)


def test_bad_yes_no_files(tmp_path):
    bad = _write([{"index": 0, "question": "Q?", "answer": "maybe"}], tmp_path / "bad.tsv")
    with pytest.raises(DataError, match=r"line 2:answer: answer 'maybe' is not Yes or No"):
        run_benchmark("pope", bad, lambda items: ["Yes"], tmp_path / "w", progress=False)
    index = _write([{"index": "x_1", "question": "Q?", "answer": "Yes"}], tmp_path / "h.tsv")
    with pytest.raises(DataError, match="is not category_subcategory_n_set_figure_question"):
        run_benchmark("hallusionbench", index, lambda items: ["Yes"], tmp_path / "h", progress=False)
    with pytest.raises(MmtuneError, match="unknown benchmark 'mmmu'.*choose one of mmbench"):
        get_benchmark("mmmu")


def test_multiple_choice_family_scores_and_circular_by_name(bench, tmp_path):
    """SEED-Bench, AI2D, ScienceQA, MMStar: one scorer, no CircularEval; MMBench and CCBench score
    the rotations the file holds as groups (none are built, as VLMEvalKit)."""
    rows = [bench.row(0, "Q0", ["red", "blue", "", ""], answer="B"),
            bench.row(1_000_000, "Q0", ["blue", "red", "", ""], answer="A"),
            bench.row(1, "Q1", ["cat", "dog", "", ""], answer="A")]
    path = bench.write(rows)

    def answer(items):  # right on Q0's first rotation only, right on Q1
        return ["B" if it.index == 0 else "B" if it.index == 1_000_000 else "A" for it in items]

    assert get_benchmark("SEEDBench_IMG") is BENCHMARKS["seedbench"]
    for name in ("seedbench", "ai2d", "scienceqa", "mmstar"):
        s = run_benchmark(name, path, answer, tmp_path / name, progress=False).summary
        assert (s["overall"], s["n"], s["circular"]) == (pytest.approx(2 / 3), 3, False), name
        assert (tmp_path / name / f"{name}_result.xlsx").is_file()
    for name in ("mmbench", "ccbench"):
        s = run_benchmark(name, path, answer, tmp_path / name, progress=False).summary
        assert (s["overall"], s["n"], s["circular"], s["n_rows"]) == (0.5, 2, True, 3), name
