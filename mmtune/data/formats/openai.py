"""OpenAI chat records.

    {"messages": [{"role": "system" | "user" | "assistant", "content": "text" | [parts]}],
     "images": ["a.jpg"]}        # optional, for <image> written directly in string content

A list of parts may hold {"type": "text", "text": ...}, {"type": "image_url", "image_url": {"url": ...}}
and {"type": "image", "image": path}; each image part becomes an <image> placeholder at its place.
Parts are joined with newlines, so an image part before the text gives LLaVA's "<image>\\n...".
"""

from __future__ import annotations

from typing import Any

from mmtune.data.conversation import IMAGE_PLACEHOLDER, ROLES, Conversation, Message
from mmtune.data.formats.base import (
    field_error, image_paths, map_role, place_images, register_format, require, type_name,
)

PART_TYPES = ("text", "image_url", "image")
ROLE_SET = frozenset(ROLES)


@register_format("openai")
class OpenAIFormat:
    description = '{"messages": [{"role": "user"|"assistant"|"system", "content": str | [parts]}]}'

    @staticmethod
    def detect(record: dict) -> bool:
        return isinstance(record.get("messages"), list)

    @staticmethod
    def read(record: dict, where: str) -> Conversation:
        items = require(record, "messages", list, where)
        messages, images = [], []
        for i, item in enumerate(items):
            if type(item) is dict:  # fast path: a plain text message, checked without building field names
                role, content = item.get("role"), item.get("content")
                if type(role) is str and role in ROLE_SET and type(content) is str:
                    messages.append(Message(role, content))
                    continue
            field = f"messages[{i}]"
            if not isinstance(item, dict):
                raise field_error(where, field, f"message is {type_name(item)}, expected an object with 'role' and 'content'")
            role = map_role(require(item, "role", str, where, field=f"{field}.role"),
                            {r: r for r in ROLES}, where, f"{field}.role")
            content = require(item, "content", (str, list), where, field=f"{field}.content")
            if isinstance(content, list):
                content = read_parts(content, images, where, f"{field}.content")
            messages.append(Message(role, content))
        if record.get("images") is not None:
            if images:
                raise field_error(where, "images", "record has both image parts and an 'images' list; use one")
            images = image_paths(record["images"], where, "images")
        place_images(messages, images, where, "messages")
        return Conversation(messages, images)


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


def part_image(part: dict, kind: str, where: str, at: str) -> str:
    value: Any = require(part, kind, (str, dict), where, field=f"{at}.{kind}")
    if isinstance(value, dict):  # {"url": ...} as in the OpenAI API
        value = require(value, "url", str, where, field=f"{at}.{kind}.url")
    if not value:
        raise field_error(where, f"{at}.{kind}", "empty image path")
    return value


def to_record(conv: Conversation) -> dict:
    """A Conversation as an OpenAI record with string content (used by `write_conversations`)."""
    record: dict = {"messages": [{"role": m.role, "content": m.content} for m in conv.messages]}
    if conv.images:
        record["images"] = list(conv.images)
    return record
