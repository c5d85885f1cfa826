"""Tool definitions and tool calls in the shapes tool-call data comes in, read into the one form:
definitions as `{"type": "function", "function": {"name", "description", "parameters"}}`, calls as
`ToolCall(name, arguments: dict, id)`.

    OpenAI:     "tools": [{"type": "function", "function": {...}}]
                assistant "tool_calls": [{"id", "type": "function", "function": {"name", "arguments": "<JSON>"}}]
    ShareGPT /  "tools": "[{\\"name\\": ..., \\"parameters\\": ...}]"  (a JSON string, as glaive_toolcall)
    LLaMA-Factory  {"from": "function_call", "value": "{\\"name\\": ..., \\"arguments\\": {...}}"}  (or a list of them)

Arguments must be a JSON object (a string holding one is parsed); anything else is a DataError
naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from mmtune.data.conversation import ToolCall
from mmtune.data.formats.base import field_error, type_name


def _json(value: str, where: str, field: str, what: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise field_error(where, field, f"{what} not valid JSON ({e.msg} at character {e.pos})") from None


def read_tools(value: Any, where: str, field: str = "tools") -> list[dict]:
    """Tool definitions: a list (or a JSON string of a list) of OpenAI tools or bare functions."""
    if isinstance(value, str):
        value = _json(value, where, field, "the tool list is") if value.strip() else []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise field_error(where, field, f"tools are {type_name(value)}, expected a list of tool definitions")
    tools, names = [], set()
    for i, tool in enumerate(value):
        at = f"{field}[{i}]"
        if not isinstance(tool, dict):
            raise field_error(where, at, f"tool is {type_name(tool)}, expected an object")
        if "function" in tool:
            if tool.get("type", "function") != "function":
                raise field_error(where, f"{at}.type", f"tool type {tool.get('type')!r} is not read (only 'function')")
            function, at = tool["function"], f"{at}.function"
            if not isinstance(function, dict):
                raise field_error(where, at, f"function is {type_name(function)}, expected an object")
        else:
            function = tool
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            raise field_error(where, f"{at}.name", "a tool needs a name (a non-empty string)")
        if name in names:
            raise field_error(where, f"{at}.name", f"tool {name!r} is defined twice")
        names.add(name)
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise field_error(where, f"{at}.parameters", f"parameters are {type_name(parameters)}, expected a JSON schema object")
        clean = {"name": name}
        if function.get("description") is not None:
            clean["description"] = str(function["description"])
        clean["parameters"] = parameters
        tools.append({"type": "function", "function": clean})
    return tools


def read_arguments(value: Any, where: str, field: str) -> dict:
    if isinstance(value, str):
        value = _json(value, where, field, "the arguments are") if value.strip() else {}
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise field_error(where, field, f"arguments are {type_name(value)}, expected a JSON object")
    return value


def read_openai_calls(value: Any, where: str, field: str) -> list[ToolCall]:
    """An OpenAI message's `tool_calls`."""
    if not isinstance(value, list):
        raise field_error(where, field, f"tool_calls are {type_name(value)}, expected a list")
    calls = []
    for i, call in enumerate(value):
        at = f"{field}[{i}]"
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise field_error(where, at, "a tool call is {\"type\": \"function\", \"function\": {\"name\", \"arguments\"}}")
        function = call["function"]
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise field_error(where, f"{at}.function.name", "a tool call needs the tool's name")
        call_id = call.get("id")
        calls.append(ToolCall(name, read_arguments(function.get("arguments"), where, f"{at}.function.arguments"),
                              call_id if isinstance(call_id, str) and call_id else None))
    return calls


def read_function_call_value(value: str, where: str, field: str) -> list[ToolCall]:
    """A ShareGPT `function_call` turn's value: one call `{"name", "arguments"}` or a list of them."""
    parsed = _json(value, where, field, "the function call is")
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = []
    for i, item in enumerate(items):
        at = field if not isinstance(parsed, list) else f"{field}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise field_error(where, at, 'a function call is {"name": ..., "arguments": {...}}')
        calls.append(ToolCall(item["name"], read_arguments(item.get("arguments", item.get("parameters")), where, at)))
    return calls
