"""Tool conversations render exactly as each model's own chat template renders them with `tools=`,
and only the assistant's turns (text, tool calls, end-of-turn marker) are trained.

References: the official templates in tests/data/fixtures/chat_templates (provenance in SOURCES.md),
put on the tiny tokenizer with the real tokenizer's bos/eos; InternLM2 (whose official template
renders no tools) against the example of InternLM's chat_format.md."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mmtune.constants import IGNORE_INDEX
from mmtune.data.conversation import Conversation, Message, ToolCall
from mmtune.data.encode import ConversationEncoder
from mmtune.data.formats import read_records
from mmtune.data.templates import TokenizerTemplate, get_template
from mmtune.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CONVERT = {"type": "function", "function": {
    "name": "convert_units", "description": "Convert a value between units",
    "parameters": {"type": "object", "properties": {"value": {"type": "number"}, "from": {"type": "string"},
                                                    "to": {"type": "string"}}, "required": ["value", "from", "to"]}}}
TOOLS = [WEATHER, CONVERT]

SINGLE = [Message("user", "Weather in Paris?"),
          Message("assistant", "", tool_calls=[ToolCall("get_weather", {"city": "Paris"})]),
          Message("tool", '{"temp_c": 21}'),
          Message("assistant", "It is 21 °C in Paris.")]
MULTI_CALL = [Message("system", "You are a helpful agent."),
              Message("user", "Weather in Paris and Rome?"),
              Message("assistant", "Let me check.", tool_calls=[ToolCall("get_weather", {"city": "Paris"}),
                                                               ToolCall("get_weather", {"city": "Rome"})]),
              Message("tool", '{"temp_c": 21}'), Message("tool", '{"temp_c": 25}'),
              Message("assistant", "Paris 21 °C, Rome 25 °C.")]
MULTI_ROUND = [Message("user", "Weather in Oslo?"),
               Message("assistant", "", tool_calls=[ToolCall("get_weather", {"city": "Oslo"})]),
               Message("tool", '{"temp_c": -3}'),
               Message("assistant", "-3 °C in Oslo."),
               Message("user", "And 10 km in miles? Also, hi!"),
               Message("assistant", "", tool_calls=[ToolCall("convert_units", {"value": 10, "from": "km", "to": "mi"})]),
               Message("tool", "{\"miles\": 6.21}"),
               Message("assistant", "10 km is 6.21 miles. Hi!")]
NO_TOOL_NEEDED = [Message("user", "Say hello."), Message("assistant", "Hello!")]

# mmtune template -> (fixture file, bos, eos)
REFERENCES = {"qwen_chat": ("qwen_chat.jinja", None, "<|im_end|>"),
              "qwen3_chat": ("qwen3_chat.jinja", None, "<|im_end|>"),
              "llama3_1_chat": ("llama3_1_chat.jinja", "<|begin_of_text|>", "<|eot_id|>")}
CONVERSATIONS = {"single": SINGLE, "multi_call": MULTI_CALL, "multi_round": MULTI_ROUND, "no_tool": NO_TOOL_NEEDED}


def reference_tokenizer(tiny_tokenizer, name: str):
    file, bos, eos = REFERENCES[name]
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (FIXTURES / file).read_text(encoding="utf-8").split("\n", 1)[1]
    tok.bos_token, tok.eos_token = bos, eos
    return tok


def trained_texts(tokenizer, sample) -> list[str]:
    """The trained tokens' text, one string per contiguous run."""
    runs, current = [], []
    for tid, label in zip(sample.input_ids, sample.labels):
        if label != IGNORE_INDEX:
            current.append(tid)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r, skip_special_tokens=False) for r in runs]


@pytest.mark.parametrize("conv", list(CONVERSATIONS))
@pytest.mark.parametrize("name", [*REFERENCES, "auto"])
def test_ids_equal_the_official_template_with_tools(name, conv, tiny_tokenizer):
    messages = CONVERSATIONS[conv]
    if name == "llama3_1_chat" and conv == "multi_call":
        pytest.skip("Llama 3.1's template refuses several calls in one turn (tested below)")
    reference = reference_tokenizer(tiny_tokenizer, "qwen_chat" if name == "auto" else name)
    template = TokenizerTemplate(reference) if name == "auto" else get_template(name)
    encoder = ConversationEncoder(reference, template, max_length=8192)
    sample = encoder.encode(Conversation(list(messages), tools=TOOLS))
    dicts = [m.to_dict() for m in messages]
    expected = reference.apply_chat_template(dicts, tools=TOOLS, tokenize=False)
    assert sample.input_ids == reference(expected, add_special_tokens=False).input_ids

    # trained: each assistant turn (its text and tool calls) with its end marker; nothing else
    trained = trained_texts(reference, sample)
    answers = [m for m in messages if m.role == "assistant"]
    assert len(trained) == len(answers)
    end = template.stop_words()[0] if name != "auto" else "<|im_end|>"
    for text, answer in zip(trained, answers):
        assert text.endswith(end) and answer.content in text
        for call in answer.tool_calls:
            assert call.name in text and json.dumps(call.arguments)[1:-1] in text
    joined = "".join(trained)
    assert "Current weather in a city" not in joined  # tool definitions never trained
    for m in messages:
        if m.role in ("tool", "user", "system"):
            assert m.content not in joined, m.content


def test_llama_3_1_refuses_several_calls_in_one_turn_clearly(tiny_tokenizer):
    encoder = ConversationEncoder(reference_tokenizer(tiny_tokenizer, "llama3_1_chat"), get_template("llama3_1_chat"),
                                  max_length=8192)
    with pytest.raises(DataError, match="llama3_1_chat chat template refuses this conversation: .*single tool-calls"):
        encoder.encode(Conversation(list(MULTI_CALL), tools=TOOLS))


def test_internlm2_matches_its_documented_agent_format():
    """InternLM's chat_format.md example, but with the tool list as compact JSON (the doc pretty-prints it)."""
    tool = {"name": "get_current_weather", "description": "Get the current weather in a given location",
            "parameters": {"type": "object", "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string"}}, "required": ["location"]}}
    messages = [Message("system", "You are InternLM2-Chat, a harmless AI assistant"),
                Message("user", "I want to know today's weather in Shanghai"),
                Message("assistant", "Sure, I will search for the weather of Shanghai.",
                        tool_calls=[ToolCall("get_current_weather", {"location": "Shanghai"})]),
                Message("tool", '{"temperature": 22}'),
                Message("assistant", "The weather in Shanghai is 22 celsius")]
    text, spans = get_template("internlm2_chat").render(messages, tools=[{"type": "function", "function": tool}])
    assert text == (
        "<s><|im_start|>system\nYou are InternLM2-Chat, a harmless AI assistant<|im_end|>\n"
        "<|im_start|>system name=<|plugin|>\n" + json.dumps([tool], ensure_ascii=False) + "<|im_end|>\n"
        "<|im_start|>user\nI want to know today's weather in Shanghai<|im_end|>\n"
        "<|im_start|>assistant\nSure, I will search for the weather of Shanghai.<|action_start|><|plugin|>\n"
        '{"name": "get_current_weather", "parameters": {"location": "Shanghai"}}<|action_end|><|im_end|>\n'
        "<|im_start|>environment name=<|plugin|>\n{\"temperature\": 22}<|im_end|>\n"
        "<|im_start|>assistant\nThe weather in Shanghai is 22 celsius<|im_end|>\n")
    assert [text[s:e] for s, e in spans] == [
        'Sure, I will search for the weather of Shanghai.<|action_start|><|plugin|>\n{"name": "get_current_weather", '
        '"parameters": {"location": "Shanghai"}}<|action_end|><|im_end|>',
        "The weather in Shanghai is 22 celsius<|im_end|>"]
    # without tools: what the official InternLM2 template renders
    plain = [Message("user", "hi"), Message("assistant", "hello")]
    official = (FIXTURES / "internlm2_chat.jinja").read_text(encoding="utf-8").split("\n", 1)[1]
    from transformers.utils.chat_template_utils import render_jinja_template

    expected = render_jinja_template([[m.to_dict() for m in plain]], chat_template=official, bos_token="<s>")[0][0]
    assert get_template("internlm2_chat").render(plain)[0] == expected


def test_templates_without_tool_rendering_refuse_tool_data():
    with pytest.raises(ConfigError, match="template 'vicuna' does not render tool"):
        get_template("vicuna").render(SINGLE, tools=TOOLS)


def test_shipped_templates_are_the_reference_texts():
    from mmtune.data.jinja_templates import packaged

    for shipped, fixture in (("qwen2_5", "qwen_chat"), ("qwen3", "qwen3_chat"), ("llama3_1", "llama3_1_chat")):
        assert packaged(shipped) == (FIXTURES / f"{fixture}.jinja").read_text(encoding="utf-8").split("\n", 1)[1]


# ------------------------------------------------------------------ readers

def test_openai_and_sharegpt_tool_records_read_the_same():
    openai = {"tools": [WEATHER], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
        {"role": "assistant", "content": "It is 21 °C in Paris."}]}
    sharegpt = {"tools": json.dumps([WEATHER["function"]]), "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": '{"temp_c": 21}'},
        {"from": "gpt", "value": "It is 21 °C in Paris."}]}
    (a,), _ = read_records([openai], "o.jsonl")
    (b,), _ = read_records([sharegpt], "s.json")
    assert a.tools == b.tools == [WEATHER]
    assert a.messages[1].tool_calls == [ToolCall("get_weather", {"city": "Paris"}, "call_1")]
    assert b.messages[1].tool_calls == [ToolCall("get_weather", {"city": "Paris"})]
    assert a.messages[2].tool_call_id == "call_1" and a.messages[2].role == b.messages[2].role == "tool"
    assert [m.content for m in a.messages] == [m.content for m in b.messages]
    # a parallel call in ShareGPT is a list
    sharegpt["conversations"][1]["value"] = json.dumps([{"name": "get_weather", "arguments": {"city": "Paris"}},
                                                         {"name": "get_weather", "arguments": {"city": "Rome"}}])
    (c,), _ = read_records([sharegpt], "s.json")
    assert [call.arguments["city"] for call in c.messages[1].tool_calls] == ["Paris", "Rome"]


@pytest.mark.parametrize("record, message", [
    ({"tools": "[{bad json", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
     "record 0:tools: the tool list is not valid JSON"),
    ({"tools": [{"description": "no name"}], "messages": [{"role": "user", "content": "a"},
                                                          {"role": "assistant", "content": "b"}]},
     "record 0:tools[0].name: a tool needs a name"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]}]},
     "record 0:messages[1].tool_calls[0].function.arguments: arguments are a list, expected a JSON object"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "tool", "content": "c"}, {"role": "assistant", "content": "d"}]},
     "record 0:messages[2].role: a tool result must follow an assistant message that calls tools"),
])
def test_bad_tool_records_are_named(record, message):
    _, errors = read_records([record], "d.json", errors="collect")
    assert errors and message in errors[0].format(), errors[0].format()


def _openai(calls, results, tools=(WEATHER,), then="Done."):
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"c{k}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                    for k, (n, a) in enumerate(calls)]}]
    messages += [{"role": "tool", "content": "r", **({"tool_call_id": r} if r else {})} for r in results]
    if then:
        messages.append({"role": "assistant", "content": then})
    return {"tools": list(tools), "messages": messages}


@pytest.mark.parametrize("record, message", [
    (_openai([("get_time", {})], ["c0"]),
     "messages[1].tool_calls[0]: calls tool 'get_time', which is not defined (get_weather)"),
    (_openai([("get_weather", {"town": "Paris"})], ["c0"]),
     "messages[1].tool_calls[0]: arguments of 'get_weather' do not match its parameters: 'city' is a required property"),
    (_openai([("get_weather", {"city": 7})], ["c0"]),
     "messages[1].tool_calls[0]: arguments of 'get_weather' do not match its parameters: city: 7 is not of type 'string'"),
    (_openai([("get_weather", {"city": "Paris"})], ["c9"]),
     "messages[2].tool_call_id: answers call id 'c9', which no call before it has"),
    (_openai([("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})], ["c0"]),
     "messages[1].tool_calls[1]: tool call 'get_weather' is never answered (an assistant turn follows)"),
    (_openai([("get_weather", {"city": "Paris"})], [], then=None),
     "messages[1].tool_calls[0]: tool call 'get_weather' is never answered (the conversation ends)"),
    (_openai([("get_weather", {"city": "Paris"})], [], tools=(), then=None),
     "messages[1].tool_calls[0]: calls tool 'get_weather', which is not defined (the record defines no tools)"),
])
def test_tool_data_problems_are_named(record, message):
    _, errors = read_records([record], "t.jsonl", errors="collect")
    assert errors and f"t.jsonl:record 0:{message}" in errors[0].format(), [e.format() for e in errors]


def test_good_tool_data_passes_the_checks():
    good = _openai([("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})], ["c1", "c0"])
    convs, errors = read_records([good], "t.jsonl", errors="collect")
    assert errors == [] and len(convs) == 1
