"""Readers of every data format, format detection, and the located errors for bad records."""

from __future__ import annotations

import json
import re

import pytest

from mmtune.data.conversation import Message
from mmtune.data.formats import (
    FORMAT_NAMES, detect_format, load_records, read_file, read_records, register_format,
)
from mmtune.errors import DataError


def roles(conv):
    return [m.role for m in conv.messages]


def read_one(record, format="auto", path="d.json"):
    convs, _ = read_records([record], path, format)
    return convs[0]


def error_of(records, format="auto", path="d.json") -> str:
    with pytest.raises(DataError) as info:
        read_records(records, path, format)
    return str(info.value)


def test_format_names():
    assert FORMAT_NAMES == ["alpaca", "llava", "minicpm", "msagent", "openai"]


def test_register_twice_is_a_bug():
    with pytest.raises(ValueError, match="registered twice"):
        register_format("llava")(type("Again", (), {}))


# ---------------------------------------------------------------- llava


def test_llava_file(fixtures):
    path = fixtures / "llava.json"
    convs, errors = read_file(path)
    assert errors == [] and len(convs) == 3
    first, second, third = convs
    assert first.images == ["images/cat.jpg"]
    assert first.messages[0] == Message("user", "<image>\nWhat animal is this?")  # placeholder kept, not doubled
    assert roles(first) == ["user", "assistant", "user", "assistant"]
    assert first.source == f"{path}:record 0"
    # image without a placeholder: LLaVA convention puts it before the first question
    assert second.messages[0].content == "<image>\nDescribe the picture."
    # ShareGPT role names and a system turn; text-only records have no images
    assert third.messages == [Message("system", "You are terse."), Message("user", "Hi"), Message("assistant", "Hello.")]
    assert third.images == []


def test_llava_image_list_and_later_placeholder(good):
    record = {"image": ["a.jpg", "b.jpg"], "conversations": [
        {"from": "human", "value": "<image>\n<image>\nSame?"}, {"from": "gpt", "value": "No."}]}
    assert read_one(record).images == ["a.jpg", "b.jpg"]
    # a placeholder in a later turn is where the image goes: nothing is prepended
    record = {"image": "a.jpg", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."},
        {"from": "human", "value": "Look: <image>"}, {"from": "gpt", "value": "Nice."}]}
    conv = read_one(record)
    assert conv.messages[0].content == "Hi" and conv.images == ["a.jpg"]


def test_llava_placeholder_count_mismatch(good):
    record = {"image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image> <image>"}, {"from": "gpt", "value": "Two?"}]}
    assert error_of([good["llava"], record]).startswith(
        "d.json:record 1:conversations: text has 2 <image> placeholder(s) but the record has 1 image(s)")
    text_only = {"conversations": [{"from": "human", "value": "<image> what?"}, {"from": "gpt", "value": "?"}]}
    assert "has 0 image(s)" in error_of([text_only])


# ---------------------------------------------------------------- openai


def test_openai_file_with_image_parts(fixtures):
    path = fixtures / "openai.jsonl"
    convs, _ = read_file(path)
    assert len(convs) == 2  # the blank line is skipped
    assert convs[0].system == "Be kind."
    parts = convs[1]
    assert parts.messages[0].content == "<image>\nand\n<image>\nWhich is bigger?"
    assert parts.images == ["a.png", "b.png"]  # in the order of their parts
    assert parts.messages[1].content == "The second."
    assert parts.source == f"{path}:record 1"


def test_openai_images_list_with_string_content():
    record = {"messages": [{"role": "user", "content": "<image>Who is this?"},
                           {"role": "assistant", "content": "A cat."}], "images": ["cat.jpg"]}
    conv = read_one(record)
    assert conv.images == ["cat.jpg"] and conv.messages[0].content == "<image>Who is this?"


def test_openai_bad_parts(good):
    bad_type = {"messages": [{"role": "user", "content": [{"type": "file", "file": "x.pdf"}]},
                             {"role": "assistant", "content": "?"}]}
    assert error_of([good["openai"], bad_type]).startswith(
        "d.json:record 1:messages[0].content[0].type: unknown content part type 'file'")
    no_url = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                           {"role": "assistant", "content": "?"}]}
    assert error_of([no_url]) == "d.json:record 0:messages[0].content[0].image_url.url: missing key 'url'"


# ---------------------------------------------------------------- alpaca


def test_alpaca_file_with_history(fixtures):
    convs, _ = read_file(fixtures / "alpaca.json")  # {"data": [...]}: an object holding one list
    plain, chat = convs
    assert plain.messages == [Message("user", "Translate to French\ncat"), Message("assistant", "chat")]
    assert chat.messages == [
        Message("system", "You translate."),
        Message("user", "Translate to French: cat"), Message("assistant", "chat"),
        Message("user", "And mouse?"), Message("assistant", "souris"),
        Message("user", "And dog?"), Message("assistant", "chien"),
    ]


def test_alpaca_bad_history(good):
    record = {"instruction": "q", "output": "a", "history": [["only a question"]]}
    assert error_of([good["alpaca"], record]) == (
        "d.json:record 1:history[0]: history turn is a list of 1, expected [question, answer]")
    record = {"instruction": "q", "output": "a", "history": [["q", 7]]}
    assert error_of([record]) == "d.json:record 0:history[0][1]: value is a number, expected a string"


# ---------------------------------------------------------------- minicpm


def test_minicpm_single_and_multi_image(fixtures):
    single, multi = read_file(fixtures / "minicpm.json")[0]
    assert single.messages[0].content == "<image>\nWhat is this?" and single.images == ["cat.jpg"]
    assert multi.messages[0].content == "Compare <image> with <image>."
    assert multi.images == ["b.jpg", "a.jpg"]  # order of appearance in the text, not of the keys


def test_minicpm_image_key_errors(good):
    unused = {"image": {"<image_00>": "a.jpg", "<image_01>": "b.jpg"},
              "conversations": [{"role": "user", "content": "<image_00> what?"}, {"role": "assistant", "content": "?"}]}
    assert error_of([good["minicpm"], unused]).startswith(
        "d.json:record 1:image.<image_01>: image <image_01> is never referenced in the text")
    missing = {"image": {"<image_00>": "a.jpg"},
               "conversations": [{"role": "user", "content": "<image_00> vs <image_02>"},
                                 {"role": "assistant", "content": "?"}]}
    assert error_of([missing]) == (
        "d.json:record 0:conversations[0].content: text refers to <image_02> but 'image' has no such key (keys: <image_00>)")


# ---------------------------------------------------------------- detection and loading


@pytest.mark.parametrize("name, expected", [
    ("llava.json", "llava"), ("openai.jsonl", "openai"), ("alpaca.json", "alpaca"), ("minicpm.json", "minicpm"),
])
def test_detect_each_fixture(fixtures, name, expected):
    path = fixtures / name
    assert detect_format(load_records(path), path) == expected


def test_detect_ambiguous_is_an_error(good):
    both = {**good["openai"], **good["alpaca"]}
    with pytest.raises(DataError) as info:
        detect_format([good["openai"], both], "d.json")
    assert str(info.value).startswith("d.json:record 1: record matches several formats (alpaca, openai)")
    assert "--format" in str(info.value)


def test_detect_unknown_and_mixed_are_errors(good):
    with pytest.raises(DataError, match=r"d.json: records match no known format \(keys: prompt, response\)"):
        detect_format([{"prompt": "q", "response": "a"}], "d.json")
    with pytest.raises(DataError, match="d.json: file mixes formats: record 0 is llava, record 1 is minicpm"):
        detect_format([good["llava"], good["minicpm"]], "d.json")
    with pytest.raises(DataError, match="no records"):
        detect_format([], "d.json")


def test_explicit_format_and_unknown_name(good):
    assert read_one(good["llava"], format="llava").messages[1].content == "Hello."
    with pytest.raises(DataError, match="unknown data format 'sharegpt4'"):
        read_records([good["llava"]], "d.json", "sharegpt4")


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="missing.json: file not found"):
        load_records(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"a": 1},\n {"a": 2,}\n]')
    with pytest.raises(DataError) as info:
        load_records(broken)
    assert str(info.value).startswith(f"{broken}:line 3: invalid JSON")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: file is empty"):
        load_records(empty)
    number = tmp_path / "number.json"
    number.write_text("42")
    with pytest.raises(DataError, match="top level is a number"):
        load_records(number)


def test_jsonl_bad_line_number(tmp_path, good):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(good["openai"]) + "\n\n" + json.dumps(good["openai"]) + "\n{oops\n")
    with pytest.raises(DataError) as info:
        read_file(path)
    assert str(info.value).startswith(f"{path}:line 4: invalid JSON")


def test_jsonl_named_json_and_single_record(tmp_path, good):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(good["openai"]) + "\n" + json.dumps(good["openai"]) + "\n")
    assert len(load_records(path)) == 2
    path.write_text(json.dumps(good["openai"]))  # one record, not a list: not mistaken for {"messages": [...]}
    assert load_records(path) == [good["openai"]]


# ---------------------------------------------------------------- bad records, located


@pytest.mark.parametrize("fmt, bad, expected", [
    ("llava", {"conversations": []}, "record 1:conversations: empty conversation"),
    ("openai", {"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "?"}]},
     "record 1:messages[0].role: first turn is from 'assistant', expected 'user'"),
    ("llava", {"conversations": [{"from": "system", "value": "s"}, {"from": "gpt", "value": "a"}]},
     "record 1:conversations[1].from: first turn is from 'assistant', expected 'user'"),
    ("openai", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                             {"role": "assistant", "content": "c"}]},
     "record 1:messages[2].role: roles do not alternate: got 'assistant', expected 'user'"),
    ("llava", {"conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]},
     "record 1:conversations[1].from: unknown role 'bot' (expected one of human, user, gpt, assistant, system, "
     "function_call, observation)"),
    ("openai", {"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]},
     "record 1:messages[1].role: a tool result must follow an assistant message that calls tools"),
    ("minicpm", {"conversations": [{"role": "human", "content": "a"}, {"role": "assistant", "content": "b"}]},
     "record 1:conversations[0].role: unknown role 'human' (expected one of user, assistant, system)"),
    ("llava", {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": None}]},
     "record 1:conversations[1].value: value is null, expected a string"),
    ("openai", {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "b"}]},
     "record 1:messages[0].content: value is a number, expected a string or a list"),
    ("minicpm", {"conversations": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "b"}]},
     "record 1:conversations[0].content: value is a list, expected a string"),
    ("alpaca", {"instruction": "q", "output": True}, "record 1:output: value is a boolean, expected a string"),
    ("alpaca", {"instruction": "q", "output": "a", "input": 3}, "record 1:input: value is a number, expected a string"),
    ("llava", {"conversations": [{"from": "human"}, {"from": "gpt", "value": "b"}]},
     "record 1:conversations[0].value: missing key 'value'"),
    ("llava", {"conversations": ["hi"]}, "record 1:conversations[0]: turn is a string, expected an object"),
    ("llava", {"conversation": []}, "record 1:conversations: missing key 'conversations'"),
    ("llava", {"image": 3, **{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}},
     "record 1:image: value is a number, expected a path or a list of paths"),
    ("llava", ["not", "a", "record"], "record 1: record is a list, expected an object"),
    ("openai", {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "b"}]},
     "record 1:messages[0].content: empty user message"),
    ("openai", {"messages": [{"role": "user", "content": "a"}]},
     "record 1:messages[0].role: conversation ends without an assistant answer"),
])
def test_bad_record_is_located(write_records, good, fmt, bad, expected):
    path = write_records([good[fmt], bad])  # the good record lets detection find the format
    with pytest.raises(DataError) as info:
        read_file(path)
    assert str(info.value).startswith(f"{path}:{expected}")


def test_collect_mode_skips_and_returns_bad_records(write_records, good):
    bad_role = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    not_string = {"messages": [{"role": "user", "content": 1}, {"role": "assistant", "content": "b"}]}
    path = write_records([good["openai"], bad_role, good["openai"], not_string, good["openai"]], "d.jsonl")
    convs, errors = read_file(path, errors="collect")
    assert len(convs) == 3 and len(errors) == 2
    assert [c.source for c in convs] == [f"{path}:record {i}" for i in (0, 2, 4)]
    assert [e.where for e in errors] == [f"{path}:record 1:messages[1].role", f"{path}:record 3:messages[0].content"]
    with pytest.raises(DataError, match="record 1:messages"):
        read_file(path)  # "raise" (default) stops at the first
    with pytest.raises(ValueError):
        read_file(path, errors="ignore")


@pytest.mark.parametrize(("record", "field"), [
    ({"video": "clip.mp4", "conversations": [{"from": "human", "value": "<video>\nWhat happens?"},
                                             {"from": "gpt", "value": "A ball rolls."}]}, "video"),
    ({"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "clip.mp4"}},
                                                {"type": "text", "text": "What happens?"}]},
                   {"role": "assistant", "content": "A ball rolls."}]}, "messages[0].content"),
    ({"conversations": [{"role": "user", "content": "<video> What happens?"},
                        {"role": "assistant", "content": "A ball rolls."}]}, "conversations[0].content"),
])
def test_video_records_are_refused_by_name_and_the_rest_are_read(tmp_path, record, field):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DataError, match=rf"mixed.json:record 0:{re.escape(field)}: video records are not supported \(images only\)"):
        read_file(path)
    if "messages" in record:  # one format per file: mixed with a good record of the same format
        path.write_text(json.dumps([good, record, good]))
        convs, problems = read_file(path, errors="collect")
        assert len(convs) == 2 and [p.where for p in problems] == [f"{path}:record 1:{field}"]


def test_openai_bare_image_parts_take_the_images_list_in_order():
    """The TRL / LLaMA-Factory layout: {"type": "image"} parts, paths in the record's "images"."""
    record = {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"},
                                                        {"type": "image"}, {"type": "text", "text": "same?"}]},
                           {"role": "assistant", "content": [{"type": "text", "text": "No."}]}],
              "images": ["a.png", "b.png"]}
    conv = read_one(record)
    assert conv.images == ["a.png", "b.png"] and conv.messages[0].content == "<image>\nand\n<image>\nsame?"
    assert "2 bare image part(s) but 1 path(s) in 'images'" in error_of([{**record, "images": ["a.png"]}])
    assert "image part(s) without a path and no 'images' list" in error_of([{k: v for k, v in record.items()
                                                                           if k != "images"}])
    with_path = {**record, "messages": [{"role": "user", "content": [{"type": "image", "image": "c.png"}]},
                                        record["messages"][1]]}
    assert "both image parts with paths and an 'images' list" in error_of([with_path])
