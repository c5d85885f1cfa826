"""`mmtune eval mcq`: MMLU / C-Eval / CMMLU CSV layouts, their prompts, per-subject scoring, resume,
clear errors, and the log-likelihood form checked against a direct computation on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmtune.errors import DataError, MmtuneError
from mmtune.eval.mcq import build_prompts, read_mcq_csv, read_mcq_files, run_mcq

MMLU_TEST = [["What is 2+2?", "3", "4", "5", "6", "B"], ["Capital of France?", "Paris", "Rome", "Oslo", "Bern", "A"],
             ["Largest planet?", "Mars", "Venus", "Jupiter", "Earth", "C"]]
MMLU_DEV = [["1+1?", "2", "3", "4", "5", "A"], ["Sky colour?", "green", "blue", "red", "pink", "B"]]


def _csv(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def mmlu(tmp_path) -> Path:
    _csv(tmp_path / "mmlu/test/elementary_math_test.csv", MMLU_TEST)
    _csv(tmp_path / "mmlu/test/astronomy_test.csv", MMLU_TEST[2:])
    _csv(tmp_path / "mmlu/dev/elementary_math_dev.csv", MMLU_DEV)
    _csv(tmp_path / "mmlu/dev/astronomy_dev.csv", MMLU_DEV)
    return tmp_path / "mmlu"


def test_three_layouts(tmp_path):
    mmlu = read_mcq_csv(_csv(tmp_path / "anatomy_test.csv", MMLU_TEST))
    ceval = read_mcq_csv(_csv(tmp_path / "computer_network_val.csv", [["0", "题目?", "甲", "乙", "丙", "丁", "C", "因为"]],
                              header=["id", "question", "A", "B", "C", "D", "answer", "explanation"]))
    cmmlu = read_mcq_csv(_csv(tmp_path / "cmmlu/agronomy.csv", [["0", "问题?", "一", "二", "三", "四", "D"]],
                              header=["", "Question", "A", "B", "C", "D", "Answer"]))
    assert [it.subject for it in (mmlu[0], ceval[0], cmmlu[0])] == ["anatomy", "computer_network", "agronomy"]
    assert mmlu[1].options == {"A": "Paris", "B": "Rome", "C": "Oslo", "D": "Bern"} and mmlu[1].answer == "A"
    assert (ceval[0].question, ceval[0].answer) == ("题目?", "C") and (cmmlu[0].question, cmmlu[0].answer) == ("问题?", "D")
    test_split = read_mcq_csv(_csv(tmp_path / "law_test.csv", [["1", "Q?", "a", "b", "c", "d"]],
                                   header=["id", "question", "A", "B", "C", "D"]))
    assert test_split[0].answer is None


def test_prompts_as_mmlu_and_ceval_write_them(mmlu, tmp_path):
    items = build_prompts(read_mcq_files(mmlu / "test"), read_mcq_files(mmlu / "dev"), shots=2)
    first = next(it for it in items if it.subject == "elementary_math")
    assert first.prompt == (
        "The following are multiple choice questions (with answers) about elementary math.\n\n"
        "1+1?\nA. 2\nB. 3\nC. 4\nD. 5\nAnswer: A\n\n"
        "Sky colour?\nA. green\nB. blue\nC. red\nD. pink\nAnswer: B\n\n"
        "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")
    zh = _csv(tmp_path / "ceval/chemistry_val.csv", [["0", "水的化学式?", "H2O", "CO2", "O2", "N2", "A"]],
              header=["id", "question", "A", "B", "C", "D", "answer"])
    item = build_prompts(read_mcq_files(zh), {}, shots=0)[0]
    assert item.prompt == ("以下是中国关于chemistry考试的单项选择题，请选出其中的正确答案。\n\n"
                           "水的化学式?\nA. H2O\nB. CO2\nC. O2\nD. N2\n答案：") and item.answer_prefix == ""


def test_scores_per_subject_overall_and_macro_and_resume(mmlu, tmp_path):
    def answer(items):  # right on math questions, "A" elsewhere
        return [f"{it.answer}." if it.subject == "elementary_math" else "A" for it in items]

    summary = run_mcq(mmlu / "test", answer, tmp_path / "w", dev=mmlu / "dev", shots=1, progress=False)
    assert summary["per_subject"] == {"astronomy": 0.0, "elementary_math": 1.0}
    assert summary["overall"] == pytest.approx(3 / 4) and summary["macro"] == pytest.approx(0.5)
    records = [json.loads(line) for line in (tmp_path / "w/predictions.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {r["subject"] for r in records} == {"astronomy", "elementary_math"}
    again = run_mcq(mmlu / "test", lambda items: pytest.fail("asked again"), tmp_path / "w", dev=mmlu / "dev",
                    shots=1, progress=False)
    assert again == summary
    with pytest.raises(MmtuneError, match="holds predictions for other questions"):
        run_mcq(mmlu / "test", answer, tmp_path / "w", dev=mmlu / "dev", shots=1, mode="loglik", progress=False)


def test_clear_errors(mmlu, tmp_path):
    with pytest.raises(DataError, match=r"line 1 has 2 columns and no header"):
        read_mcq_csv(_csv(tmp_path / "x.csv", [["q", "a1"]]))
    with pytest.raises(DataError, match=r"x2.csv:line 1:answer: answer 'E' is not one of the options A, B, C, D"):
        read_mcq_csv(_csv(tmp_path / "x2.csv", [["Q?", "a", "b", "c", "d", "E"]] * 2))
    with pytest.raises(DataError, match=r"line 2: row has 3 columns, needs 6"):
        read_mcq_csv(_csv(tmp_path / "x3.csv", [["Q?", "a", "b"]], header=["question", "A", "B", "C", "D", "answer"]))
    with pytest.raises(MmtuneError, match="has 2 dev example"):
        run_mcq(mmlu / "test", lambda items: ["A"] * len(items), tmp_path / "w", dev=mmlu / "dev", shots=5,
                progress=False)
    with pytest.raises(MmtuneError, match="no answers to score"):
        run_mcq(_csv(tmp_path / "t_test.csv", [["1", "Q?", "a", "b"]], header=["id", "question", "A", "B"]),
                lambda items: ["A"], tmp_path / "w2", progress=False)


@pytest.fixture(scope="module")
def tiny():
    from mmtune.infer.load import load_for_inference
    from mmtune.testing.tiny import tiny_lm_dir

    return load_for_inference(str(tiny_lm_dir("qwen2")), template="chatml", device="cpu")


def _direct(model, tokenizer, prompt: str, continuation: str) -> float:
    context = tokenizer(prompt).input_ids
    whole = tokenizer(prompt + continuation).input_ids
    assert whole[: len(context)] == context
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits.float(), dim=-1)[0]
    return float(sum(logp[p - 1, whole[p]] for p in range(len(context), len(whole))))


def test_loglik_equals_a_direct_computation(tiny):
    from mmtune.eval.loglik import batch_option_logprobs

    model, tokenizer = tiny.model, tiny.tokenizer
    questions = [("What is 2+2?\nA. 3\nB. 4\nAnswer:", ["A", "B"], " "),
                 ("A much longer question about the sky and its colour?\nA. red\nB. blue\nC. green\nAnswer:",
                  ["A", "B", "C"], " "),
                 ("Pick one\nA. x\nB. y\nAnswer:", ["A", "B"], " Option ")]  # several-token continuations
    got = batch_option_logprobs(model, tokenizer, questions)
    for (prompt, letters, prefix), scores in zip(questions, got):
        for letter in letters:
            assert scores[letter] == pytest.approx(_direct(model, tokenizer, prompt, prefix + letter), abs=1e-4)
    assert got[:2] == batch_option_logprobs(model, tokenizer, questions[:2])  # the one-token fast path


def test_cli_both_modes(tiny, mmlu, tmp_path, capsys):
    from mmtune.cli.main import main
    from mmtune.eval.loglik import option_logprobs
    from mmtune.testing.tiny import tiny_lm_dir

    base = str(tiny_lm_dir("qwen2"))
    common = [base, "--data", str(mmlu / "test"), "--dev", str(mmlu / "dev"), "--shots", "2", "--no-progress"]
    assert main(["eval", "mcq", *common, "--work-dir", str(tmp_path / "ll"), "--mode", "loglik"]) == 0
    out = capsys.readouterr().out
    assert "elementary_math" in out and "Overall" in out and "macro" in out
    records = [json.loads(line) for line in (tmp_path / "ll/predictions.jsonl").read_text().splitlines()]
    items = {it.index: it for it in build_prompts(read_mcq_files(mmlu / "test"), read_mcq_files(mmlu / "dev"), 2)}
    for r in records:  # the chosen letter is the most likely one
        scores = option_logprobs(tiny.model, tiny.tokenizer, items[r["index"]].prompt, list(items[r["index"]].options))
        assert r["option"] == max(scores, key=scores.get)
    assert main(["eval", "mcq", *common, "--work-dir", str(tmp_path / "gen"), "--prompt-template", "chatml",
                 "--max-new-tokens", "4"]) == 0
    assert "unmatched answers" in capsys.readouterr().out
    assert main(["eval", "mcq", base, "--data", str(tmp_path / "none"), "--work-dir", str(tmp_path / "x")]) == 2
    assert "file not found" in capsys.readouterr().err
