"""LLaVA / ShareGPT records.

    {"id": "0", "image": "a.jpg",            # optional; or a list of paths ("images" also accepted)
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"},
                       {"from": "gpt", "value": "A cat."}],
     "system": "You are ..."}               # optional (ShareGPT / LLaMA-Factory): the system message
"""

from __future__ import annotations

from mmtune.data.conversation import Conversation
from mmtune.data.formats.base import field_error, image_paths, place_images, read_turns, register_format, take_system

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
ROLE_NAMES = {"user": "human", "assistant": "gpt", "system": "system"}  # ours -> LLaVA's, for writing


@register_format("llava")
class LlavaFormat:
    description = '(also ShareGPT) {"image": ..., "conversations": [{"from": "human"|"gpt", "value": ...}], "system": ...}'
    keys = ("id", "image", "images", "conversations", "system")
    turns, turn_keys = "conversations", ("from", "value")

    @staticmethod
    def detect(record: dict) -> bool:
        turns = record.get("conversations")
        return isinstance(turns, list) and any(isinstance(t, dict) and ("from" in t or "value" in t) for t in turns)

    @staticmethod
    def read(record: dict, where: str) -> Conversation:
        messages = read_turns(record, "conversations", where, role_key="from", content_key="value", roles=ROLES)
        take_system(record, messages, where, "conversations")
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
