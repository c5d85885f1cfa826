"""MS-Agent (MSAgent-Bench) records, as XTuner's agent recipes read them.

    {"id": "...",
     "conversations": "[{'from': 'system', 'value': '... 1. {\\"plugin_name\\": ..., \\"plugin_schema_for_model\\":
                          {\\"name\\": \\"modelscope_text-ie\\", \\"description\\": ..., \\"paths\\": [{...,
                          \\"parameters\\": [{\\"name\\": \\"text\\", \\"description\\": ..., \\"required\\": \\"True\\"}]}]}}'},
                        {'from': 'user', 'value': '...'},
                        {'from': 'assistant', 'value': 'thought<|startofthink|>```JSON\\n{\\"api_name\\": ...,
                          \\"parameters\\": {...}}\\n```<|endofthink|>\\n\\n<|startofexec|>```JSON\\n{...}\\n```<|endofexec|>\\nanswer'}]"}

`conversations` is a list or, as the dataset ships it, a string holding one (a Python literal: read
with `ast.literal_eval`, never `eval`). In the one conversation type:

- each API object in the system text (an object with "name" and "description", as XTuner finds
  them) becomes a tool definition; its `paths[0].parameters` entries become JSON-schema properties
  (no type: the data names none) and `"required": "True"` entries the required list. The system
  message keeps the prose before the first API entry and after the last.
- an assistant value is split at its markers: the text before `<|startofthink|>` plus the call inside
  it (`api_name`, `parameters`) is an assistant message with a tool call, the `<|startofexec|>` block
  is the tool's result, and the text after it the next assistant message. So, unlike XTuner's
  `msagent_map_fn` (which trains on the whole value), tool results are never trained.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from mmtune.data.conversation import Conversation, Message, ToolCall
from mmtune.data.formats.base import field_error, register_format, require, type_name
from mmtune.data.formats.tools import read_arguments

MARKERS = ("<|startofthink|>", "<|endofthink|>", "<|startofexec|>", "<|endofexec|>")
ROLES = {"system": "system", "user": "user", "assistant": "assistant"}
_BLOCK = re.compile(r"<\|startofthink\|>(.*?)<\|endofthink\|>|<\|startofexec\|>(.*?)<\|endofexec\|>", re.DOTALL)
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*|\s*```\s*$")
_ENUMERATION = re.compile(r"\s*\d+\s*[.、)]\s*$")  # the "1. " before a listed API


def has_markers(turns: Any) -> bool:
    """Whether ShareGPT-looking turns carry MS-Agent's think/exec markers (so are MS-Agent data)."""
    return isinstance(turns, list) and any(
        isinstance(t, dict) and isinstance(t.get("value"), str) and any(m in t["value"] for m in MARKERS)
        for t in turns)


@register_format("msagent")
class MSAgentFormat:
    description = ('(MS-Agent / MSAgent-Bench, XTuner) {"conversations": "[{\'from\': \'system\'|\'user\'|'
                   '\'assistant\', \'value\': ...<|startofthink|>...<|startofexec|>...}]"}')
    keys = ("id", "conversations")
    turns, turn_keys = "conversations", ("from", "value")
    reads_tools = True

    @staticmethod
    def detect(record: dict) -> bool:
        turns = record.get("conversations")
        return isinstance(turns, str) or has_markers(turns)

    @staticmethod
    def read(record: dict, where: str) -> Conversation:
        turns = _turns(require(record, "conversations", (list, str), where), where)
        messages: list[Message] = []
        tools: list[dict] = []
        for i, turn in enumerate(turns):
            field = f"conversations[{i}]"
            if not isinstance(turn, dict):
                raise field_error(where, field, f"turn is {type_name(turn)}, expected an object with 'from' and 'value'")
            role = require(turn, "from", str, where, field=f"{field}.from")
            if role not in ROLES:
                raise field_error(where, f"{field}.from", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
            value = require(turn, "value", str, where, field=f"{field}.value")
            origin = {"role": f"{field}.from", "content": f"{field}.value"}
            if role == "system":
                if tools:
                    raise field_error(where, field, "a second system turn with tools; MS-Agent data has one")
                system, tools = read_system(value, where, f"{field}.value")
                if system:
                    messages.append(Message("system", system, origin))
            elif role == "assistant":
                messages.extend(read_assistant(value, where, f"{field}.value", origin))
            else:
                messages.append(Message("user", value, origin))
        return Conversation(messages, tools=tools)


def _turns(value: list | str, where: str) -> list:
    if isinstance(value, list):
        return value
    try:
        turns = json.loads(value)
    except json.JSONDecodeError:
        try:
            turns = ast.literal_eval(value)  # the dataset's Python-literal string; never eval()
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise field_error(where, "conversations", "the string is neither JSON nor a Python list literal",
                              hint="MS-Agent records hold the turns as a list, or a string of one") from None
    if not isinstance(turns, list):
        raise field_error(where, "conversations", f"the string holds {type_name(turns)}, expected a list of turns")
    return turns


def api_objects(text: str) -> list[tuple[int, int, dict]]:
    """(start, end, object) of each JSON object in `text` with a string "name" and "description"
    (objects inside an accepted one are not looked at again)."""
    decoder = json.JSONDecoder()
    found, pos = [], text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(obj, dict) and isinstance(obj.get("name"), str) and isinstance(obj.get("description"), str):
            found.append((pos, end, obj))
            pos = text.find("{", end)
        else:
            pos = text.find("{", pos + 1)
    return found


def read_system(text: str, where: str, field: str) -> tuple[str, list[dict]]:
    """The system prose (API entries removed) and the tool definitions listed in it."""
    objects = api_objects(text)
    if not objects:
        return text, []
    tools, names = [], set()
    for _, _, api in objects:
        if api["name"] in names:
            raise field_error(where, field, f"tool {api['name']!r} is listed twice")
        names.add(api["name"])
        tools.append({"type": "function", "function": {
            "name": api["name"], "description": api["description"], "parameters": _parameters(api)}})
    head_end = _enclosing(text, *objects[0][:2])[0]
    tail_start = _enclosing(text, *objects[-1][:2])[1]
    head = _ENUMERATION.sub("", text[:head_end])
    prose = "\n\n".join(part.strip() for part in (head, text[tail_start:]) if part.strip())
    return prose, tools


def _enclosing(text: str, start: int, end: int, reach: int = 4000) -> tuple[int, int]:
    """The span of the outermost JSON object around text[start:end] (an API schema usually sits in a
    plugin wrapper, {"plugin_name": ..., "plugin_schema_for_model": {...}}), looking `reach` back."""
    decoder = json.JSONDecoder()
    span = (start, end)
    pos = text.rfind("{", max(0, start - reach), start)
    while pos != -1:
        try:
            _, stop = decoder.raw_decode(text, pos)
            if stop >= end:
                span = (pos, stop)
        except json.JSONDecodeError:
            pass
        pos = text.rfind("{", max(0, start - reach), pos)
    return span


def _parameters(api: dict) -> dict:
    properties, required = {}, []
    paths = api.get("paths")
    params = paths[0].get("parameters") if isinstance(paths, list) and paths and isinstance(paths[0], dict) else None
    for p in params if isinstance(params, list) else []:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            continue
        properties[p["name"]] = {"description": str(p["description"])} if p.get("description") is not None else {}
        if str(p.get("required", "")).lower() == "true":
            required.append(p["name"])
    return {"type": "object", "properties": properties, **({"required": required} if required else {})}


def read_assistant(value: str, where: str, field: str, origin: dict) -> list[Message]:
    """An assistant value as messages: [thought + call], [tool result], [text after], ..."""
    for marker in MARKERS:
        if value.count(marker) != value.count(MARKERS[MARKERS.index(marker) ^ 1]):
            raise field_error(where, field, f"{marker} without its pair",
                              hint="each <|startofthink|> needs <|endofthink|>, each <|startofexec|> <|endofexec|>")
    messages: list[Message] = []
    text, pos = "", 0
    for block in _BLOCK.finditer(value):
        text += value[pos:block.start()]
        pos = block.end()
        think, exec_ = block.group(1), block.group(2)
        if think is not None:
            call = _call(think, where, field)
            if messages and messages[-1].role == "assistant" and messages[-1].tool_calls and not text.strip():
                messages[-1].tool_calls.append(call)  # several calls in a row: one turn
            else:
                messages.append(Message("assistant", text.strip(), dict(origin), tool_calls=[call]))
        else:
            if not messages or messages[-1].role != "assistant" or not messages[-1].tool_calls or text.strip():
                raise field_error(where, field, "a <|startofexec|> result that follows no <|startofthink|> call")
            messages.append(Message("tool", _FENCE.sub("", exec_).strip(), dict(origin),
                                    name=messages[-1].tool_calls[-1].name))
        text = ""
    text += value[pos:]
    if text.strip() or not messages:
        messages.append(Message("assistant", text.strip(), dict(origin)))
    return messages


def _call(think: str, where: str, field: str) -> ToolCall:
    body = _FENCE.sub("", think).strip()
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as e:
        raise field_error(where, field, f"the call inside <|startofthink|> is not valid JSON ({e.msg})") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("api_name"), str) or not parsed["api_name"]:
        raise field_error(where, field, 'a call is {"api_name": ..., "parameters": {...}} inside <|startofthink|>')
    return ToolCall(parsed["api_name"], read_arguments(parsed.get("parameters"), where, field))
