"""OpenAI chat records.

    {"messages": [{"role": "system" | "user" | "assistant" | "tool", "content": "text" | [parts]}],
     "images": ["a.jpg"],        # optional, for <image> written directly in string content
     "tools": [{"type": "function", "function": {"name", "description", "parameters"}}]}  # optional

Tool calls as the OpenAI API writes them: an assistant message's "tool_calls" ([{"id", "type":
"function", "function": {"name", "arguments": "<JSON object>"}}], content null or text) and "tool"
messages with the result ("tool_call_id", optional "name").

A list of parts may hold {"type": "text", "text": ...}, {"type": "image_url", "image_url": {"url": ...}}
and {"type": "image", "image": path}; each image part becomes an <image> placeholder at its place.
A bare {"type": "image"} part (the TRL / LLaMA-Factory "messages" + "images" layout) takes the next
path of the record's "images" list. Parts are joined with newlines, so an image part before the text
gives LLaVA's "<image>\\n...".
"""

from __future__ import annotations

import json
from typing import Any

from mmtune.data.conversation import IMAGE_PLACEHOLDER, ROLES, Conversation
from mmtune.data.formats.base import (field_error, image_paths, place_images, read_turns, register_format, require,
                                      take_system, type_name)
from mmtune.data.formats.tools import read_openai_calls, read_tools

PART_TYPES = ("text", "image_url", "image")
ROLE_MAP = {r: r for r in ROLES}


@register_format("openai")
class OpenAIFormat:
    description = '{"messages": [{"role": "user"|"assistant"|"system"|"tool", "content": str | [parts]}], "tools": [...]}'
    keys = ("id", "messages", "images", "system", "tools")
    turns, turn_keys = "messages", ("role", "content", "tool_calls", "tool_call_id", "name")
    reads_tools = True

    @staticmethod
    def detect(record: dict) -> bool:
        return isinstance(record.get("messages"), list)

    @staticmethod
    def read(record: dict, where: str) -> Conversation:
        images: list[str | None] = []
        messages = read_turns(record, "messages", where, role_key="role", content_key="content", roles=ROLE_MAP,
                              noun="message", parts=lambda content, field: read_parts(content, images, where, field),
                              calls=lambda value, field: read_openai_calls(value, where, field))
        take_system(record, messages, where, "messages")
        bare = images.count(None)
        if record.get("images") is not None:
            listed = image_paths(record["images"], where, "images")
            if len(images) > bare:
                raise field_error(where, "images", "record has both image parts with paths and an 'images' list; "
                                  "use one", hint='give parts as {"type": "image"} to take the list\'s paths')
            if bare and bare != len(listed):
                raise field_error(where, "images", f"{bare} bare image part(s) but {len(listed)} path(s) in 'images'")
            images = listed
        elif bare:
            raise field_error(where, "images", f"{bare} image part(s) without a path and no 'images' list",
                              hint='give each part its path ({"type": "image", "image": "a.jpg"}) or add "images"')
        place_images(messages, images, where, "messages")
        tools = read_tools(record["tools"], where) if record.get("tools") is not None else []
        return Conversation(messages, images, tools=tools)


def read_parts(parts: list, images: list[str], where: str, field: str) -> str:
    """Join content parts into text; image parts become placeholders and their paths go to `images`."""
    texts = []
    for j, part in enumerate(parts):
        at = f"{field}[{j}]"
        if not isinstance(part, dict):
            raise field_error(where, at, f"content part is {type_name(part)}, expected an object with 'type'")
        kind = require(part, "type", str, where, field=f"{at}.type")
        if kind == "text":
            texts.append(require(part, "text", str, where, field=f"{at}.text"))
        elif kind in ("image_url", "image"):
            images.append(part_image(part, kind, where, at))
            texts.append(IMAGE_PLACEHOLDER)
        else:
            raise field_error(where, f"{at}.type", f"unknown content part type {kind!r} (expected one of {', '.join(PART_TYPES)})")
    return "\n".join(texts)


def part_image(part: dict, kind: str, where: str, at: str) -> str | None:
    """The part's image path; None for a bare {"type": "image"} (its path comes from "images")."""
    if kind == "image" and part.get("image") is None and set(part) <= {"type", "image"}:
        return None
    value: Any = require(part, kind, (str, dict), where, field=f"{at}.{kind}")
    if isinstance(value, dict):  # {"url": ...} as in the OpenAI API
        value = require(value, "url", str, where, field=f"{at}.{kind}.url")
    if not value:
        raise field_error(where, f"{at}.{kind}", "empty image path")
    return value


def to_record(conv: Conversation) -> dict:
    """A Conversation as an OpenAI record with string content (used by `write_conversations`)."""
    record: dict = {"messages": [_message(m) for m in conv.messages]}
    if conv.images:
        record["images"] = list(conv.images)
    if conv.tools:
        record["tools"] = conv.tools
    return record


def _message(m) -> dict:
    """A message as the OpenAI API writes it (tool-call arguments as a JSON string)."""
    out = m.to_dict()
    for call in out.get("tool_calls", []):
        call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
    return out
