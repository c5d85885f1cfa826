"""MS-Agent (MSAgent-Bench) records, as XTuner ships them, read into the one conversation type:
APIs listed in the system text become tool definitions, think/exec markers become tool calls and
tool results, and tool results are never trained."""

from __future__ import annotations

import json

import pytest

from mmtune.data.encode import ConversationEncoder
from mmtune.data.formats import detect_format, read_records
from mmtune.data.templates import get_template
from tests.data.test_tool_templates import trained_texts


def plugin(name: str, description: str, params: list[tuple[str, str, str]]) -> dict:
    return {"plugin_name": name, "plugin_owner": "ModelScopeGPT", "plugin_type": "default",
            "plugin_schema_for_model": {
                "name": name, "description": description, "url": "http://127.0.0.1:1485/",
                "paths": [{"name": name, "model_id": "/damo/some_model", "method": "post", "description": description,
                           "parameters": [{"name": n, "description": d, "required": r} for n, d, r in params]}]}}


IE = plugin("modelscope_text-ie", "针对中文的文本，根据schema要抽取的内容，找出其中对应信息",
            [("text", "用户输入的文本", "True"), ("schema", "要抽取信息的json表示", "True")])
TTS = plugin("modelscope_speech-generation", "针对回复的内容，用语音表示",
             [("text", "要转成语音的文本", "True"), ("gender", "用户身份", "False")])
SYSTEM = ("你是达摩院的ModelScopeGPT（魔搭助手），可以通过插件集成魔搭社区的模型api来回复用户的问题。1. "
          + json.dumps(IE, ensure_ascii=False) + "\n\n2. " + json.dumps(TTS, ensure_ascii=False) + " \n\n请记住这些工具。")


def think(api: str, params: dict) -> str:
    body = json.dumps({"api_name": api, "url": "http://127.0.0.1:1485/", "parameters": params}, ensure_ascii=False)
    return f"<|startofthink|>```JSON\n{body}\n```<|endofthink|>"


def exec_(result: dict) -> str:
    return f"<|startofexec|>```JSON\n{json.dumps(result, ensure_ascii=False)}\n```<|endofexec|>"


ANSWER = ("好的，我来抽取。" + think("modelscope_text-ie", {"text": "张三在北京工作。", "schema": '{"人物": null}'})
          + "\n\n" + exec_({"人物": ["张三"]}) + "\n信息抽取结果：人物是张三。")
TURNS = [{"from": "system", "value": SYSTEM}, {"from": "user", "value": "抽取人物：张三在北京工作。"},
         {"from": "assistant", "value": ANSWER}]


def record(turns=TURNS, as_string=True) -> dict:
    # MSAgent-Bench ships `conversations` as a Python literal string (XTuner evals it; mmtune never does)
    return {"id": "MS_Agent_Bench_1", "conversations": repr(turns) if as_string else turns}


def test_a_record_reads_into_tools_calls_and_results():
    (conv,), errors = read_records([record()], "ms.jsonl")
    assert errors == []
    assert [t["function"]["name"] for t in conv.tools] == ["modelscope_text-ie", "modelscope_speech-generation"]
    ie = conv.tools[0]["function"]
    assert ie["parameters"] == {"type": "object", "required": ["text", "schema"],
                                "properties": {"text": {"description": "用户输入的文本"},
                                               "schema": {"description": "要抽取信息的json表示"}}}
    assert conv.tools[1]["function"]["parameters"]["required"] == ["text"]  # "required": "False" is optional
    system, user, call, result, answer = conv.messages
    assert system.content == "你是达摩院的ModelScopeGPT（魔搭助手），可以通过插件集成魔搭社区的模型api来回复用户的问题。\n\n请记住这些工具。"
    assert user.content == "抽取人物：张三在北京工作。"
    assert call.role == "assistant" and call.content == "好的，我来抽取。"
    assert [(c.name, c.arguments) for c in call.tool_calls] == [
        ("modelscope_text-ie", {"text": "张三在北京工作。", "schema": '{"人物": null}'})]
    assert result.role == "tool" and json.loads(result.content) == {"人物": ["张三"]}
    assert answer.role == "assistant" and answer.content == "信息抽取结果：人物是张三。"


def test_a_list_and_a_string_read_the_same_and_are_detected():
    records = [record(), record(as_string=False)]
    assert detect_format(records, "ms.jsonl") == "msagent"
    (a, b), _ = read_records(records, "ms.jsonl")
    assert a.messages == b.messages and a.tools == b.tools
    # plain ShareGPT turns stay ShareGPT
    plain = {"conversations": [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "hello"}]}
    assert detect_format([plain], "s.json") == "llava"


def test_several_calls_in_one_value_become_rounds():
    value = (think("modelscope_text-ie", {"text": "a", "schema": "{}"}) + exec_({"x": 1}) + "再读出来。"
             + think("modelscope_speech-generation", {"text": "x is 1"}) + exec_({"audio": "a.wav"}) + "完成。")
    turns = [TURNS[0], TURNS[1], {"from": "assistant", "value": value}]
    (conv,), errors = read_records([record(turns)], "ms.jsonl")
    assert errors == []
    roles = [(m.role, m.content, [c.name for c in m.tool_calls]) for m in conv.messages[2:]]
    assert roles == [("assistant", "", ["modelscope_text-ie"]), ("tool", '{"x": 1}', []),
                     ("assistant", "再读出来。", ["modelscope_speech-generation"]), ("tool", '{"audio": "a.wav"}', []),
                     ("assistant", "完成。", [])]


def test_tool_results_and_definitions_are_never_trained(tiny_tokenizer):
    (conv,), _ = read_records([record()], "ms.jsonl")
    sample = ConversationEncoder(tiny_tokenizer, get_template("qwen_chat"), max_length=8192).encode(conv)
    trained = "".join(trained_texts(tiny_tokenizer, sample))
    assert "modelscope_text-ie" in trained and "张三在北京工作。" in trained  # the call is trained
    assert "信息抽取结果：人物是张三。" in trained
    assert '["张三"]' not in trained  # the tool's result is not
    assert "针对中文的文本" not in trained and "请记住这些工具" not in trained


@pytest.mark.parametrize("value, message", [
    ("<|startofthink|>```JSON\n{\"api_name\": \"modelscope_text-ie\"}\n```", "<|startofthink|> without its pair"),
    (think("modelscope_text-ie", {}).replace('"api_name"', '"api"'), 'a call is {"api_name": ..., "parameters": {...}}'),
    ("<|startofthink|>```JSON\n{not json}\n```<|endofthink|>", "the call inside <|startofthink|> is not valid JSON"),
    ("答案。" + exec_({"x": 1}), "a <|startofexec|> result that follows no <|startofthink|> call"),
])
def test_bad_markers_are_named(value, message):
    turns = [TURNS[0], TURNS[1], {"from": "assistant", "value": value}]
    _, errors = read_records([record(turns)], "ms.jsonl", errors="collect")
    assert errors and f"ms.jsonl:record 0:conversations[2].value: {message}" in errors[0].format(), errors[0].format()


@pytest.mark.parametrize("rec, message", [
    ({"conversations": "[{'from': 'user', 'value': 'unclosed"}, "record 0:conversations: the string is neither JSON"),
    ({"conversations": "{'from': 'user'}"}, "record 0:conversations: the string holds an object, expected a list"),
    (record([TURNS[0], {"from": "human", "value": "hi"}]), "record 0:conversations[1].from: unknown role 'human'"),
    (record([TURNS[0], TURNS[1], {"from": "assistant", "value": think("no_such_api", {}) + exec_({}) + "ok"}]),
     "record 0:conversations[2].value: calls tool 'no_such_api', which is not defined"),
    (record([TURNS[0], TURNS[1], {"from": "assistant", "value": think("modelscope_text-ie", {"text": "a"})
                                  + exec_({}) + "ok"}]),
     "arguments of 'modelscope_text-ie' do not match its parameters: 'schema' is a required property"),
])
def test_bad_records_are_named(rec, message):
    _, errors = read_records([rec], "ms.jsonl", errors="collect")
    assert errors and message in errors[0].format(), errors[0].format()
