"""LLaVA / ShareGPT records.

    {"id": "0", "image": "a.jpg",            # optional; or a list of paths ("images" also accepted)
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"},
                       {"from": "gpt", "value": "A cat."}],
     "system": "You are ..."}               # optional (ShareGPT / LLaMA-Factory): the system message

Tool-call data as LLaMA-Factory's ShareGPT (glaive_toolcall): a "function_call" turn is the assistant
calling tools (its value `{"name": ..., "arguments": {...}}` or a list of them), an "observation"
turn is the tool's result, and "tools" (a JSON string or a list) defines the tools.
"""

from __future__ import annotations

import json

from mmtune.data.conversation import Conversation
from mmtune.data.formats.base import field_error, image_paths, place_images, read_turns, register_format, take_system
from mmtune.data.formats.msagent import has_markers
from mmtune.data.formats.tools import read_function_call_value, read_tools

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
         "function_call": "assistant", "observation": "tool"}
ROLE_NAMES = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}  # ours -> LLaVA's


@register_format("llava")
class LlavaFormat:
    description = '(also ShareGPT) {"image": ..., "conversations": [{"from": "human"|"gpt", "value": ...}], "system": ...}'
    keys = ("id", "image", "images", "conversations", "system", "tools")
    turns, turn_keys = "conversations", ("from", "value")
    reads_tools = True

    @staticmethod
    def detect(record: dict) -> bool:
        turns = record.get("conversations")
        return (isinstance(turns, list) and any(isinstance(t, dict) and ("from" in t or "value" in t) for t in turns)
                and not has_markers(turns))  # MS-Agent's think/exec markers: the msagent format

    @staticmethod
    def read(record: dict, where: str) -> Conversation:
        messages = read_turns(record, "conversations", where, role_key="from", content_key="value", roles=ROLES)
        for i, (turn, message) in enumerate(zip(record["conversations"], messages)):
            if turn.get("from") == "function_call":
                message.tool_calls = read_function_call_value(message.content, where, f"conversations[{i}].value")
                message.content = ""
        take_system(record, messages, where, "conversations")
        images = read_images(record, where)
        place_images(messages, images, where, "conversations")
        tools = read_tools(record["tools"], where) if record.get("tools") is not None else []
        return Conversation(messages, images, tools=tools)


def read_images(record: dict, where: str) -> list[str]:
    keys = [k for k in ("image", "images") if record.get(k) is not None]
    if len(keys) > 1:
        raise field_error(where, "images", "record has both 'image' and 'images'; use one")
    return image_paths(record[keys[0]], where, keys[0]) if keys else []


def to_record(conv: Conversation, id: str) -> dict:
    """A Conversation as a LLaVA record (used by `write_conversations`)."""
    record: dict = {"id": id}
    if conv.images:
        record["image"] = conv.images[0] if len(conv.images) == 1 else list(conv.images)
    record["conversations"] = [_turn(m) for m in conv.messages]
    if conv.tools:
        record["tools"] = json.dumps([t["function"] for t in conv.tools], ensure_ascii=False)
    return record


def _turn(m) -> dict:
    if m.tool_calls:  # LLaMA-Factory writes the calls alone in a function_call turn
        calls = [{"name": c.name, "arguments": c.arguments} for c in m.tool_calls]
        return {"from": "function_call", "value": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)}
    return {"from": ROLE_NAMES[m.role], "value": m.content}
