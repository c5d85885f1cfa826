"""LLaVA / ShareGPT records.

    {"id": "0", "image": "a.jpg",            # optional; or a list of paths ("images" also accepted)
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"},
                       {"from": "gpt", "value": "A cat."}]}
"""

from __future__ import annotations

from mmtune.data.conversation import Conversation, Message
from mmtune.data.formats.base import (
    field_error, image_paths, map_role, place_images, register_format, require, type_name,
)

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
ROLE_NAMES = {"user": "human", "assistant": "gpt", "system": "system"}  # ours -> LLaVA's, for writing


@register_format("llava")
class LlavaFormat:
    description = '(also ShareGPT) {"image": ..., "conversations": [{"from": "human"|"gpt", "value": ...}]}'

    @staticmethod
    def detect(record: dict) -> bool:
        turns = record.get("conversations")
        return isinstance(turns, list) and any(isinstance(t, dict) and ("from" in t or "value" in t) for t in turns)

    @staticmethod
    def read(record: dict, where: str) -> Conversation:
        turns = require(record, "conversations", list, where)
        messages = []
        for i, turn in enumerate(turns):
            if type(turn) is dict:  # fast path: a well-formed turn, checked without building field names
                role, value = turn.get("from"), turn.get("value")
                if type(role) is str and role in ROLES and type(value) is str:
                    messages.append(Message(ROLES[role], value))
                    continue
            field = f"conversations[{i}]"
            if not isinstance(turn, dict):
                raise field_error(where, field, f"turn is {type_name(turn)}, expected an object with 'from' and 'value'")
            role = map_role(require(turn, "from", str, where, field=f"{field}.from"), ROLES, where, f"{field}.from")
            value = require(turn, "value", str, where, field=f"{field}.value")
            messages.append(Message(role, value))
        images = read_images(record, where)
        place_images(messages, images, where, "conversations")
        return Conversation(messages, images)


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
    record["conversations"] = [{"from": ROLE_NAMES[m.role], "value": m.content} for m in conv.messages]
    return record
