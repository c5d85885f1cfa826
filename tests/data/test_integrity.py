"""Nothing read silently wrong: keys no reader uses are reported, data SFT cannot train right
(video, audio, preference pairs, tool calls, XTuner's expanded image tokens) is refused by name,
a ShareGPT top-level `system` is used, placeholders are filled or reported, bad records are capped,
and files that are not UTF-8 JSON(L) are read or explained in one line."""

from __future__ import annotations

import json
import logging
import re

import pytest

from mmtune.config.load import validate_recipe
from mmtune.data.check import check_file, format_report
from mmtune.data.dataset import encode_datasets
from mmtune.data.formats import load_records, read_file, read_records, unused_keys
from mmtune.errors import DataError
from mmtune.models.load import load_tokenizer

SHAREGPT = {"conversations": [{"from": "human", "value": "Who are you?"}, {"from": "gpt", "value": "I am Nova."}]}
OPENAI = {"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Nova."}]}


def one_error(record, path="d.json") -> str:
    convs, problems = read_records([record], path, errors="collect")
    assert not convs and len(problems) == 1, (convs, problems)
    return str(problems[0])


# ------------------------------------------------------------------ keys used, keys reported


def test_sharegpt_top_level_system_becomes_the_system_message():
    [conv], _ = read_records([{**SHAREGPT, "system": "You are Nova."}], "d.json")
    assert [(m.role, m.content) for m in conv.messages][:2] == [("system", "You are Nova."), ("user", "Who are you?")]
    [conv], _ = read_records([{**OPENAI, "system": "You are Nova."}], "d.json")
    assert conv.system == "You are Nova."
    same = {"conversations": [{"from": "system", "value": "S"}, *SHAREGPT["conversations"]], "system": "S"}
    assert read_records([same], "d.json")[0][0].system == "S"  # the same prompt twice is one prompt
    differ = {**same, "system": "T"}
    assert one_error(differ).startswith("d.json:record 0:system: record has a 'system' key and a different system turn")
    [conv], _ = read_records([{**SHAREGPT, "system": ""}], "d.json")  # empty: no system message
    assert conv.system is None


def test_unused_keys_are_counted_per_key_and_turn_key_and_id_is_not():
    records = [{**SHAREGPT, "id": "a", "source": "web"},
               {"id": "b", "source": "web", "score": 3,
                "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a", "weight": 0}]},
               {**SHAREGPT, "tools": "[]", "videos": [], "label": "cat"}]  # empty tools/videos say nothing
    assert unused_keys(records, "llava") == {"source": 2, "score": 1, "conversations[].weight": 1, "label": 1}
    messages = [{**OPENAI, "messages": [OPENAI["messages"][0], {**OPENAI["messages"][1], "loss": False}]}]
    assert unused_keys(messages, "openai") == {"messages[].loss": 1}  # ms-swift's per-turn loss switch
    assert unused_keys([{"instruction": "q", "output": "a", "history": [], "meta": 1}], "alpaca") == {"meta": 1}


def test_data_check_and_training_name_the_ignored_keys(tmp_path, tiny_qwen2_dir, isolated_dataset_cache, caplog):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{**SHAREGPT, "source": "web"}] * 3))
    report = check_file(path)
    assert report.ok and report.notes == [
        f"{path}: key(s) mmtune does not read were ignored (nothing in them is trained on): 'source' (3 of 3 records)"]
    assert "  note: " + report.notes[0] in format_report(report)
    with caplog.at_level(logging.WARNING):
        encode_datasets(recipe(tiny_qwen2_dir, path).data, tokenizer(tiny_qwen2_dir))
    assert report.notes[0] in caplog.text


# ------------------------------------------------------------------------ refused by name


@pytest.mark.parametrize("record, field, reason", [
    ({**SHAREGPT, "audios": ["a.wav"]}, "audios", "audio records are not supported (images only)"),
    ({**SHAREGPT, "videos": ["a.mp4"]}, "videos", "video records are not supported (images only)"),
    ({"conversations": [{"from": "human", "value": "<audio>What is said?"}, {"from": "gpt", "value": "Hi."}]},
     "conversations[0].value", "audio records are not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "..."}}]},
                   {"role": "assistant", "content": "Hi."}]}, "messages[0].content", "audio records are not supported"),
    ({"conversations": [{"from": "human", "value": "Hi"}], "chosen": {"from": "gpt", "value": "a"},
      "rejected": {"from": "gpt", "value": "b"}}, "chosen", "preference data (chosen/rejected) is not supported by SFT"),
    ({**OPENAI, "label": False}, "label", "preference data (a KTO label) is not supported by SFT"),
    ({**SHAREGPT, "kto_tag": True}, "kto_tag", "preference data (a KTO label) is not supported by SFT"),
    ({"instruction": "Weather?", "output": "Sunny.", "tools": '[{"name": "get_weather", "parameters": {}}]'}, "tools",
     "tool definitions are not read in this format"),
    ({"conversations": [{"from": "human", "value": "Weather?"}, {"from": "function_call", "value": "{}"},
                        {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}]},
     "conversations[1].value", 'a function call is {"name": ..., "arguments": {...}}'),
    ({"messages": [{"role": "user", "content": "Weather?"},
                   {"role": "assistant", "content": None,
                    "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": "{city: Paris}"}}]}]},
     "messages[1].tool_calls[0].function.arguments", "the arguments are not valid JSON"),
    ({"image": "a.jpg", "conversations": [{"from": "human", "value": "<img><IMG_CONTEXT><IMG_CONTEXT></img>\nWhat?"},
                                          {"from": "gpt", "value": "A cat."}]},
     "conversations[0].value", "text holds expanded image tokens <IMG_CONTEXT>"),
    ({"instruction": "Smile", "output": "Sure \ud83d!"}, "output", "text holds a lone surrogate U+D83D at character 5"),
])
def test_data_sft_cannot_train_right_is_refused_where_it_stands(record, field, reason):
    message = one_error(record)
    assert message.startswith(f"d.json:record 0:{field}: {reason}"), message


def test_a_lone_surrogate_from_a_file_is_a_skipped_record_not_a_crash(tmp_path, tiny_qwen2_dir,
                                                                      isolated_dataset_cache):
    path = tmp_path / "d.jsonl"  # json.dumps writes the lone surrogate as the escape "\ud83d", as JSON allows
    path.write_text("".join(json.dumps({"instruction": f"q{i}", "output": "a \ud83d" if i == 3 else "a"}) + "\n"
                            for i in range(30)))
    encoded, stats = encode_datasets(recipe(tiny_qwen2_dir, path, max_bad_fraction=0.1).data, tokenizer(tiny_qwen2_dir))
    assert (stats.bad_records, len(encoded)) == (1, 29)
    assert check_file(path).errors == [(f"{path}:record 3:output", "text holds a lone surrogate U+D83D at character "
                                        "2 (half of a character, not valid Unicode) (fix or drop the record; an "
                                        "export that cut an emoji in two writes these)")]


def test_refused_records_are_skipped_and_the_rest_read(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([SHAREGPT, {**SHAREGPT, "videos": ["v.mp4"]}, SHAREGPT]))
    convs, problems = read_file(path, errors="collect")
    assert len(convs) == 2 and [p.where for p in problems] == [f"{path}:record 1:videos"]


# --------------------------------------------------------------- fields in the record's terms


@pytest.mark.parametrize("record, field", [
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}, "conversations[1].from"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": " "}]}, "conversations[1].value"),
    ({"system": "S", "conversations": [{"from": "gpt", "value": "a"}]}, "conversations[0].from"),  # after a key system
    ({"conversations": [{"role": "user", "content": "a"}]}, "conversations[0].role"),  # MiniCPM-V
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}, "messages[1].content"),
    ({"instruction": "q", "output": "  "}, "output"),
    ({"instruction": " ", "output": "a"}, "instruction"),
    ({"instruction": "q", "output": "a", "history": [["h", ""]]}, "history[0][1]"),
])
def test_conversation_problems_name_the_field_as_the_record_does(record, field):
    assert re.match(rf"d\.json:record 0:{re.escape(field)}: ", one_error(record)), one_error(record)


# ------------------------------------------------------------------------------ placeholders


IDENTITY = [{"instruction": "Who are you?", "output": "I am {{name}}, an assistant developed by {{author}}."},
            {"instruction": "hi", "output": "Hello! I am {{ name }}."}]


def test_placeholders_are_reported_with_the_fix_and_filled_by_data_replace(tmp_path, tiny_qwen2_dir,
                                                                          isolated_dataset_cache, caplog):
    path = tmp_path / "identity.json"
    path.write_text(json.dumps(IDENTITY))
    [note] = check_file(path).notes
    assert "{{name}} (2 records), {{author}} (1 records)" in note and f"{path}:record 0:output" in note
    assert "--set data.replace='{author: ..., name: ...}'" in note
    assert check_file(path, replace={"name": "Nova", "author": "Ada"}).notes == []
    partly = check_file(path, replace={"name": "Nova"}).notes
    assert len(partly) == 1 and "{{author}} (1 records)" in partly[0] and "{{name}}" not in partly[0]

    tok = tokenizer(tiny_qwen2_dir)
    with caplog.at_level(logging.WARNING):
        encoded, _ = encode_datasets(recipe(tiny_qwen2_dir, path).data, tok)
    assert "template placeholders left in the data would be trained as written" in caplog.text
    assert "{{name}}" in tok.decode(encoded["input_ids"][0])
    filled, _ = encode_datasets(recipe(tiny_qwen2_dir, path, replace={"name": "Nova", "author": "Ada"}).data, tok)
    text = tok.decode(filled["input_ids"][0]) + tok.decode(filled["input_ids"][1])
    assert "I am Nova, an assistant developed by Ada." in text and "Hello! I am Nova." in text and "{{" not in text


def test_data_replace_through_the_cli_set(tmp_path, tiny_qwen2_dir, capsys):
    from mmtune.cli.main import main
    from mmtune.config.load import dump_config

    data = tmp_path / "identity.json"
    data.write_text(json.dumps(IDENTITY))
    config = tmp_path / "r.yaml"
    config.write_text(dump_config(recipe(tiny_qwen2_dir, data)))
    assert main(["data", "check", str(data), "--config", str(config)]) == 0
    assert "template placeholders" in capsys.readouterr().out
    assert main(["data", "check", str(data), "--config", str(config),
                 "--set", "data.replace={name: Nova, author: Ada}"]) == 0
    assert "template placeholders" not in capsys.readouterr().out


# -------------------------------------------------------------------------- bad-record cap


def test_bad_records_past_max_bad_fraction_stop_the_run_with_the_count_and_reasons(tmp_path, tiny_qwen2_dir,
                                                                                   isolated_dataset_cache, caplog):
    path = tmp_path / "d.jsonl"
    bad = {"conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]}
    path.write_text("".join(json.dumps(r) + "\n" for r in [SHAREGPT] * 8 + [bad, {**SHAREGPT, "videos": ["v"]}]))
    tok = tokenizer(tiny_qwen2_dir)
    with pytest.raises(DataError) as info:
        encode_datasets(recipe(tiny_qwen2_dir, path).data, tok)
    assert str(info.value).startswith("2 of 10 records are bad, more than data.max_bad_fraction 5%; first: "
                                      f"{path}:record 8:conversations[1].from: unknown role 'bot'")
    with caplog.at_level(logging.WARNING):
        encoded, stats = encode_datasets(recipe(tiny_qwen2_dir, path, max_bad_fraction=0.2).data, tok)
    assert (stats.records, stats.bad_records, len(encoded)) == (10, 2, 8)
    assert "skipped records by reason: 1 x unknown role 'bot'" in caplog.text
    assert "1 x video records are not supported (images only)" in caplog.text


# ------------------------------------------------------------------------- encodings, layout


@pytest.mark.parametrize("name, raw, where", [
    ("latin1.jsonl", '{"instruction": "caf\xe9", "output": "x"}\n'.encode("latin-1"), "line 1"),
    ("stray.jsonl", b'{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "b"}\n'
                    b'{"instruction": "c\xff", "output": "d"}\n', "line 3"),
    ("cp1252.json", '[{"instruction": "\u201cquoted\u201d", "output": "x"}]'.encode("cp1252"), "line 1"),
])
def test_text_that_is_not_utf8_is_one_line_naming_the_line(tmp_path, name, raw, where):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(DataError) as info:
        load_records(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{where}: not UTF-8 text: byte 0x") and "save the file as UTF-8" in message
    assert "\n" not in message


@pytest.mark.parametrize("codec", ["utf-16", "utf-8-sig", "utf-32"])
def test_files_with_a_byte_order_mark_are_read(tmp_path, codec):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps({"instruction": "café", "output": "x"}, ensure_ascii=False).encode(codec))
    [conv], _ = read_file(path)
    assert conv.messages[0].content == "café"


def test_jsonl_variants_are_read(tmp_path):
    records = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)]
    as_list = tmp_path / "list.jsonl"  # a JSON list saved under a .jsonl name, pretty-printed
    as_list.write_text(json.dumps(records, indent=2))
    assert load_records(as_list) == records
    per_line = tmp_path / "lines.jsonl"  # lists of records on lines, and single records
    per_line.write_text(json.dumps(records[:2]) + "\n" + json.dumps(records[2]) + "\n" + json.dumps(records[3:]) + "\n")
    assert load_records(per_line) == records
    separators = tmp_path / "sep.jsonl"  # raw U+2028/U+2029/U+0085 inside strings are valid JSON
    text = "line\u2028sep\u2029par\x85nel"
    separators.write_text(json.dumps({"instruction": text, "output": "x"}, ensure_ascii=False) + "\n", encoding="utf-8")
    [conv], _ = read_file(separators)
    assert conv.messages[0].content == text


@pytest.mark.parametrize("text, reason", [
    ('{"instruction": "q", "output": "a", "n": ' + "9" * 5000 + "}\n", "a number in the JSON is too long to read"),
    ('{"instruction": "q", "output": "a", "x": ' + "[" * 100000 + "]" * 100000 + "}\n", "JSON nested too deeply"),
])
def test_json_past_the_parser_limits_is_a_located_error(tmp_path, text, reason):
    path = tmp_path / "d.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=re.escape(f"{path}:line 1: {reason}")):
        load_records(path)


# ------------------------------------------------------------------------------------ helpers


def recipe(model_dir, path, **data):
    return validate_recipe({"model": {"path": str(model_dir)},
                            "data": {"datasets": [{"path": str(path)}], "template": "chatml", "max_length": 64,
                                     "pack_to_max_length": False, **data}})


def tokenizer(model_dir):
    return load_tokenizer(recipe(model_dir, "x").model)
