"""`check_file`: every bad record reported with its place, counts of good and bad, length limits."""

from __future__ import annotations

from mmtune.data.check import check_file, format_report
from mmtune.errors import DataError


def test_good_file(fixtures):
    report = check_file(fixtures / "llava.json")
    assert report.ok and report.format == "llava"
    assert (report.n_total, report.n_good, report.n_bad) == (3, 3, 0)
    assert format_report(report) == f"{fixtures / 'llava.json'} (llava): 3 records, 3 good, 0 bad"


def test_bad_records_all_reported(write_records, good):
    bad_roles = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    two_problems = {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]}
    path = write_records([good["openai"], bad_roles, good["openai"], two_problems])
    report = check_file(path)
    assert not report.ok
    assert (report.n_total, report.n_good, report.n_bad) == (4, 2, 2)  # two problems, one bad record
    assert report.errors == [
        (f"{path}:record 1:messages[1].role", "roles do not alternate: got 'user', expected 'assistant'"),
        (f"{path}:record 3:messages[0].content", "empty user message"),
        (f"{path}:record 3:messages[1].content", "empty assistant answer (nothing to learn)"),
    ]
    text = format_report(report)
    assert text.splitlines()[0] == f"{path} (openai): 4 records, 2 good, 2 bad"
    assert f"  {path}:record 1:messages[1].role: roles do not alternate" in text
    short = format_report(report, max_errors=1)
    assert short.splitlines()[-1] == "  ... and 2 more problems"


def test_too_long_samples(write_records, good):
    long = {"messages": [{"role": "user", "content": "word " * 30}, {"role": "assistant", "content": "ok"}]}
    path = write_records([good["openai"], long])

    def words(conv):
        return sum(len(m.content.split()) for m in conv.messages)

    report = check_file(path, length_fn=words, max_length=10)
    assert report.errors == [(f"{path}:record 1", "sample is 31 tokens, longer than max_length 10")]
    assert (report.n_good, report.n_bad) == (1, 1)
    assert check_file(path, length_fn=words).ok  # no max_length: no limit


def test_length_fn_errors_are_reported(write_records, good):
    path = write_records([good["openai"], good["openai"]])

    def fails_on_second(conv):
        if conv.source.endswith("record 1"):
            raise DataError("image file not found: a.jpg", where=conv.source + ":images[0]")
        return 3

    report = check_file(path, length_fn=fails_on_second, max_length=100)
    assert report.errors == [(f"{path}:record 1:images[0]", "image file not found: a.jpg")]
    assert report.n_good == 1


def test_unreadable_files(tmp_path, write_records):
    report = check_file(tmp_path / "nope.jsonl")
    assert not report.ok and report.format == "?" and report.n_good == 0
    assert report.errors == [(str(tmp_path / "nope.jsonl"), "file not found")]
    assert format_report(report) == f"{tmp_path / 'nope.jsonl'}: could not be read\n  {tmp_path / 'nope.jsonl'}: file not found"

    path = write_records([{"prompt": "q", "completion": "a"}])
    report = check_file(path)
    assert report.format == "?"
    assert "records match no known format" in report.errors[0][1]
    assert "supported formats: alpaca, llava, minicpm, msagent, openai" in report.errors[0][1]


def test_explicit_format(write_records, good):
    path = write_records([good["openai"]])
    report = check_file(path, "llava")
    assert report.format == "llava" and report.n_bad == 1
    assert report.errors == [(f"{path}:record 0:conversations", "missing key 'conversations'")]
