"""run_mmbench: resume after an interruption, summary and report files, the test-split submission,
the --judge fallback, and an end-to-end `mmtune eval mmbench` with the trained tiny text model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from openpyxl import load_workbook

from mmtune.errors import MmtuneError
from mmtune.eval.judge import Judge, api_base
from mmtune.eval.mmbench import run_mmbench

SUMMARY_KEYS = {"overall", "per_category", "per_l2_category", "n", "unmatched", "unmatched_rate"}


@pytest.fixture
def dev_tsv(bench):
    rows = [bench.row(i, f"Question {i}?", ["red", "blue", "green", "yellow"], answer="ABCD"[i % 4],
                      category=["colour", "shape"][i % 2], l2=["attribute", "other"][i % 2]) for i in range(10)]
    return bench.write(rows, name="dev.tsv")


class Interrupt(Exception):
    pass


def test_interrupted_eval_resumes_without_reasking(dev_tsv, tmp_path):
    asked: list[int] = []

    def flaky(items):
        if len(asked) >= 4:
            raise Interrupt
        asked.extend(it.index for it in items)
        return [it.answer for it in items]

    with pytest.raises(Interrupt):
        run_mmbench(dev_tsv, flaky, tmp_path / "w", batch_size=2, progress=False)
    lines = (tmp_path / "w" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2, 3]

    again: list[int] = []

    def steady(items):
        again.extend(it.index for it in items)
        return [it.answer for it in items]

    result = run_mmbench(dev_tsv, steady, tmp_path / "w", batch_size=3, progress=False)
    assert again == [4, 5, 6, 7, 8, 9]
    assert result.summary["overall"] == 1.0 and result.summary["n"] == 10
    assert len((tmp_path / "w" / "predictions.jsonl").read_text().splitlines()) == 10
    # a third run asks nothing
    assert run_mmbench(dev_tsv, lambda items: pytest.fail("asked again"), tmp_path / "w", progress=False).summary["n"] == 10


def test_line_cut_by_a_crash_is_dropped(dev_tsv, tmp_path):
    work = tmp_path / "w"
    run_mmbench(dev_tsv, lambda items: [it.answer for it in items], work, progress=False)
    preds = work / "predictions.jsonl"
    lines = preds.read_text().splitlines(keepends=True)
    preds.write_text("".join(lines[:3]) + lines[3][:20])  # killed while writing row 3
    asked = []
    run_mmbench(dev_tsv, lambda items: asked.extend(i.index for i in items) or ["A"] * len(items), work, progress=False)
    assert asked == [3, 4, 5, 6, 7, 8, 9]
    assert all(json.loads(line) for line in preds.read_text().splitlines())


def test_work_dir_of_another_file_is_refused(dev_tsv, bench, tmp_path):
    run_mmbench(dev_tsv, lambda items: ["A"] * len(items), tmp_path / "w", progress=False)
    other = bench.write([bench.row(0, "Other?", ["x", "y", "", ""])], name="other.tsv")
    with pytest.raises(MmtuneError, match="holds predictions for other questions"):
        run_mmbench(other, lambda items: ["A"] * len(items), tmp_path / "w", progress=False)
    with pytest.raises(MmtuneError, match="holds predictions for other questions"):
        run_mmbench(dev_tsv, lambda items: ["A"] * len(items), tmp_path / "w", circular=True, progress=False)


def test_summary_files_and_unmatched(dev_tsv, tmp_path):
    replies = {0: "A", 1: "It is blue.", 2: "I cannot tell", 3: "A or D", 4: "A"}

    result = run_mmbench(dev_tsv, lambda items: [replies.get(it.index, "B") for it in items], tmp_path / "w",
                         progress=False)
    work = tmp_path / "w"
    summary = json.loads((work / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary == result.summary
    # right: 0 (A), 1 (blue = B), 4 (A), 5 and 9 (B) -> 5 of 10; unmatched: rows 2 and 3
    assert summary["overall"] == pytest.approx(0.5)
    assert summary["unmatched"] == 2 and summary["unmatched_rate"] == pytest.approx(0.2)
    assert summary["per_category"] == {"colour": pytest.approx(2 / 5), "shape": pytest.approx(3 / 5)}  # even / odd rows
    assert summary["per_l2_category"] == {"attribute": pytest.approx(2 / 5), "other": pytest.approx(3 / 5)}
    assert summary["matched_by"] == {"option": 7, "text": 1}
    unmatched = [json.loads(line) for line in (work / "unmatched.jsonl").read_text().splitlines()]
    assert unmatched == [{"index": 2, "prediction": "I cannot tell"}, {"index": 3, "prediction": "A or D"}]
    record = json.loads((work / "predictions.jsonl").read_text().splitlines()[1])
    assert record == {"index": 1, "prediction": "It is blue.", "option": "B", "method": "text", "answer": "B",
                      "hit": True, "category": "shape", "l2_category": "other"}
    assert (work / "summary.csv").read_text().splitlines()[:2] == ["level,name,accuracy,n", "overall,overall,0.5,10"]
    sheet = load_workbook(work / "summary.xlsx").active
    assert [c.value for c in sheet[1]] == ["level", "name", "accuracy", "n"]
    assert sheet.max_row == 1 + 1 + 2 + 2


def test_test_split_submission_file(bench, tmp_path):
    columns = [c for c in bench.columns if c != "answer"]
    path = bench.write([bench.row(i, f"Q{i}", ["x", "y", "z", ""], answer=None) for i in range(3)], columns)
    result = run_mmbench(path, lambda items: ["(C)", "y", "no idea"][: len(items)] if len(items) == 3 else
                         ["C"] * len(items), tmp_path / "w", batch_size=3, progress=False)
    assert result.summary["split"] == "test" and result.summary["overall"] is None
    assert result.summary["unmatched"] == 1 and result.summary["n"] == 3
    sheet = load_workbook(tmp_path / "w" / "mmbench_result.xlsx").active
    header = [c.value for c in sheet[1]]
    assert header == ["index", "question", "hint", "A", "B", "C", "D", "category", "l2-category", "prediction"]
    rows = [[c.value for c in r] for r in sheet.iter_rows(min_row=2)]
    assert [r[0] for r in rows] == [0, 1, 2]
    assert [r[-1] for r in rows] == ["(C)", "y", "no idea"]  # the raw answers, as VLMEvalKit writes them


class _JudgeHandler(BaseHTTPRequestHandler):
    replies: list[str] = []
    prompts: list[str] = []

    def log_message(self, *args):
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "judge-model", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["model"] == "judge-model" and body["temperature"] == 0
        type(self).prompts.append(body["messages"][-1]["content"])
        reply = type(self).replies.pop(0)
        self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _JudgeHandler.prompts = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_judge_maps_unmatched_answers(dev_tsv, tmp_path, judge_server):
    _JudgeHandler.replies = ["B", "Z"]  # row 1: the judge says B (right); row 2: none of them
    judge = Judge(judge_server + "/v1")
    assert judge.model == "judge-model"
    replies = {1: "something bluish", 2: "a purple hexagon"}
    result = run_mmbench(dev_tsv, lambda items: [replies.get(it.index, it.answer) for it in items], tmp_path / "w",
                         judge=judge, progress=False)
    assert judge.calls == 2  # only the unmatched answers were sent
    assert "Question 1?" in _JudgeHandler.prompts[0] and "B. blue" in _JudgeHandler.prompts[0]
    assert "Answer: something bluish" in _JudgeHandler.prompts[0]
    by_index = {r["index"]: r for r in result.records}
    assert by_index[1]["option"] == "B" and by_index[1]["method"] == "judge" and by_index[1]["hit"]
    assert by_index[2]["option"] is None
    assert result.summary["unmatched"] == 1 and result.summary["overall"] == pytest.approx(0.9)


def test_judge_errors_are_readable():
    assert api_base("http://h:8000/v1/chat/completions") == api_base("http://h:8000/") == "http://h:8000"
    with pytest.raises(MmtuneError, match="not an http"):
        Judge("localhost:8000")
    judge = Judge("http://127.0.0.1:9", model="m", retries=0, timeout=2)  # nothing listens on port 9
    with pytest.raises(MmtuneError, match="cannot be reached"):
        judge.ask("hello")


def test_answer_function_must_answer_every_item(dev_tsv, tmp_path):
    with pytest.raises(RuntimeError, match="returned 1 replies for 2 items"):
        run_mmbench(dev_tsv, lambda items: ["A"], tmp_path / "w", batch_size=2, progress=False)


# --------------------------------------------------------------------------- with the tiny text model

@pytest.fixture(scope="module")
def trained():
    from mmtune.testing.runs import lora_run

    recipe, result = lora_run()
    return recipe.model.path, str(result.final_dir)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from mmtune.data.synth.shapes import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n=12, seed=1)


def test_batched_replies_equal_one_by_one(trained):
    from mmtune.data.conversation import Message
    from mmtune.infer.engine import generate_replies
    from mmtune.infer.engine import GenerationSettings, generate_reply
    from mmtune.infer.load import load_for_inference

    base, adapter = trained
    loaded = load_for_inference(base, adapter=adapter, template="chatml", device="cpu")
    questions = ["who are you?", "Tell me your name and who made you, please.", "hi"]  # different lengths
    convs = [[Message("user", q)] for q in questions]
    settings = GenerationSettings(max_new_tokens=16)
    side = loaded.tokenizer.padding_side
    batched = generate_replies(loaded.model, loaded.tokenizer, loaded.template, convs, settings)
    single = [generate_reply(loaded.model, loaded.tokenizer, loaded.template, c, settings) for c in convs]
    assert batched == single
    assert loaded.tokenizer.padding_side == side


def test_cli_end_to_end_with_text_model(trained, shapes, tmp_path, capsys):
    from mmtune.cli.main import main

    base, adapter = trained
    work = tmp_path / "mmbench"
    args = ["eval", "mmbench", base, "--adapter", adapter, "--prompt-template", "chatml",
            "--data-path", str(shapes.files["mmbench_dev"]), "--work-dir", str(work), "--batch-size", "4",
            "--max-new-tokens", "8", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Overall" in out and "unmatched answers" in out
    summary = json.loads((work / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["n"] == shapes.records["mmbench_dev"]  # no accuracy claim: the model is text-only
    for name in ("predictions.jsonl", "summary.csv", "summary.xlsx", "mmbench_result.xlsx"):
        assert (work / name).is_file(), name
    # test split, CircularEval built on the fly
    work_test = tmp_path / "mmbench_test"
    args = ["eval", "mmbench", base, "--adapter", adapter, "--prompt-template", "chatml", "--circular",
            "--data-path", str(shapes.files["mmbench_test"]), "--work-dir", str(work_test), "--batch-size", "8",
            "--max-new-tokens", "4", "--no-progress"]
    assert main(args) == 0
    assert "submit" in capsys.readouterr().out
    sheet = load_workbook(work_test / "mmbench_result.xlsx").active
    assert [c.value for c in sheet[1]][-1] == "prediction" and sheet.max_row - 1 > shapes.records["mmbench_test"]


def test_cli_errors(trained, shapes, tmp_path, capsys):
    from mmtune.cli.main import main

    base, adapter = trained
    common = ["--data-path", str(shapes.files["mmbench_dev"]), "--work-dir", str(tmp_path / "w")]
    assert main(["eval", "mmbench", base, "--llava", "./no/such/llava", *common]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "mmbench", base, "--batch-size", "0", *common]) == 2
    assert main(["eval", "mmbench", base, "--data-path", str(tmp_path / "none.tsv"), "--work-dir", str(tmp_path)]) == 2
    assert "file not found" in capsys.readouterr().err


def test_submission_file_reads_back_as_the_tsv_plus_raw_answers(bench, tmp_path):
    """mmbench_result.xlsx is VLMEvalKit's prediction file: the TSV's columns in order without
    `image`, the values as read, then `prediction` holding the raw answer."""
    import pandas as pd

    path = bench.write([bench.row(i, f"Q{i}", ["red", "None", "3", ""], answer="A", hint=["", "look left"][i % 2])
                        for i in range(4)])
    answers = ["A", "I think it is red.", "", "Cannot determine the answer"]
    run_mmbench(path, lambda items: [answers[it.index] for it in items], tmp_path / "w", progress=False)
    got = pd.read_excel(tmp_path / "w" / "mmbench_result.xlsx")
    tsv = pd.read_csv(path, sep="\t")
    assert list(got.columns) == [c for c in tsv.columns if c != "image"] + ["prediction"]
    pd.testing.assert_frame_equal(got.drop(columns="prediction"), tsv.drop(columns="image"), check_dtype=False)
    assert [str(x) for x in got["prediction"]] == ["A", "I think it is red.", "nan", "Cannot determine the answer"]


def test_refusals_are_wrong_and_never_judged(dev_tsv, tmp_path, judge_server):
    _JudgeHandler.replies = []
    judge = Judge(judge_server)
    replies = {1: "Sorry, I can't help with images of people yet.", 2: "Z"}
    result = run_mmbench(dev_tsv, lambda items: [replies.get(it.index, it.answer) for it in items], tmp_path / "w",
                         judge=judge, progress=False)
    assert judge.calls == 0
    by_index = {r["index"]: r for r in result.records}
    assert by_index[1]["method"] == by_index[2]["method"] == "refusal" and not by_index[1]["hit"]
    assert result.summary["refused"] == 2 and result.summary["unmatched"] == 0


def test_judge_three_tries_then_a_seeded_pick(dev_tsv, tmp_path, judge_server):
    """VLMEvalKit asks 3 times, then picks at random among the options and Z; seeded here."""
    from mmtune.eval.judge import random_choice
    from mmtune.eval.tsv import read_mmbench_tsv

    picks = []
    for attempt in range(2):
        _JudgeHandler.replies = ["I am not sure", "hmm", "no idea"]
        judge = Judge(judge_server, seed=7)
        result = run_mmbench(dev_tsv, lambda items: ["?" if it.index == 3 else it.answer for it in items],
                             tmp_path / f"w{attempt}", judge=judge, progress=False)
        assert judge.calls == 3
        record = {r["index"]: r for r in result.records}[3]
        assert record["method"] == "judge-random"
        picks.append(record["option"])
    item = read_mmbench_tsv(dev_tsv).items[3]
    assert picks[0] == picks[1] == random_choice(item, 7).letter
    # the seed matters: some seed picks something else
    assert {random_choice(item, s).letter for s in range(20)} != {picks[0]}
    # a rerun in the same work dir reuses the verdict (judge.jsonl)
    judge = Judge(judge_server, seed=7)
    run_mmbench(dev_tsv, lambda items: ["?" if it.index == 3 else it.answer for it in items], tmp_path / "w0",
                judge=judge, progress=False)
    assert judge.calls == 0


def test_judge_prompt_is_vlmevalkits_and_chinese_for_chinese_questions(bench, tmp_path, judge_server):
    path = bench.write([bench.row(0, "图中是什么?", ["猫", "狗", "", ""], answer="B"),
                        bench.row(1, "What is it", ["cat", "dog", "", ""], answer="B")])
    _JudgeHandler.replies = ["B", "B"]
    run_mmbench(path, lambda items: ["一只小狗吧" if it.index == 0 else "a puppy I guess" for it in items],
                tmp_path / "w", judge=Judge(judge_server), progress=False)
    zh, en = _JudgeHandler.prompts
    assert zh.startswith("你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。")
    assert zh.endswith("问题: 图中是什么??\n选项: There are several options: \nA. 猫\nB. 狗\n\n答案: 一只小狗吧\n输出: ")
    assert en.startswith("You are an AI assistant who will help me to match an answer with several options")
    assert en.endswith("Question: What is it?\nOptions: There are several options: \nA. cat\nB. dog\n\n"
                       "Answer: a puppy I guess\nYour output: ")


def test_circular_judges_only_groups_still_open(bench, tmp_path, judge_server):
    """VLMEvalKit's prefetch: a group already lost to a wrong letter asks no judge."""
    path = bench.write([bench.row(0, "Q0", ["red", "blue", "", ""], answer="B"),
                        bench.row(1, "Q1", ["red", "blue", "", ""], answer="B")])

    def answer(items):  # Q0: wrong letter in rotation 0, vague in rotation 1; Q1: vague in both
        return ["A" if it.index == 0 else "hmm" for it in items]

    _JudgeHandler.replies = ["A", "B"]  # Q1 rotation 0 (answer B), rotation 1 (answer A after the shift)
    judge = Judge(judge_server)
    result = run_mmbench(path, answer, tmp_path / "w", circular=True, judge=judge, progress=False)
    assert judge.calls == 2  # Q0's vague rotation was not sent
    assert result.summary["overall"] == 0.0
    assert {r["index"]: r["method"] for r in result.records}[1_000_000] is None


def test_rotations_scored_without_circular_warn(bench, tmp_path, caplog):
    path = bench.write([bench.row(0, "Q", ["a", "b", "", ""]), bench.row(1_000_000, "Q", ["b", "a", "", ""], answer="B")])
    with caplog.at_level("WARNING"):
        result = run_mmbench(path, lambda items: ["A"] * len(items), tmp_path / "w", progress=False)
    assert "not MMBench's CircularEval score" in caplog.text
    assert result.summary["n"] == 2 and result.summary["overall"] == 0.5


def test_cli_eval_vlm_yes_no_and_mcq(trained, shapes, bench, tmp_path, capsys):
    from mmtune.cli.main import main

    base, adapter = trained
    pope = tmp_path / "pope.tsv"
    pope.write_text("index\tquestion\tanswer\tcategory\timage\n"
                    + "".join(f"{i}\tIs there a cat {i}?\t{['Yes', 'No'][i % 2]}\trandom\t{bench.png()}\n" for i in range(4)),
                    encoding="utf-8")
    common = [base, "--adapter", adapter, "--prompt-template", "chatml", "--max-new-tokens", "4", "--no-progress"]
    assert main(["eval", "vlm", *common, "--benchmark", "pope", "--data-path", str(pope),
                 "--work-dir", str(tmp_path / "pope")]) == 0
    out = capsys.readouterr().out
    assert "POPE (VLMEvalKit scoring)" in out and "precision" in out and "neither yes nor no" in out
    assert main(["eval", "vlm", *common, "--benchmark", "seedbench", "--data-path", str(shapes.files["mmbench_dev"]),
                 "--work-dir", str(tmp_path / "seed"), "--batch-size", "4"]) == 0
    assert "SEED-Bench" in capsys.readouterr().out
    assert main(["eval", "vlm", *common, "--benchmark", "nope", "--data-path", str(pope),
                 "--work-dir", str(tmp_path / "x")]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
