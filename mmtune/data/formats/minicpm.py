"""MiniCPM-V records.

    {"id": "0", "image": "a.jpg",
     "conversations": [{"role": "user", "content": "<image>\\nWhat is this?"},
                       {"role": "assistant", "content": "A cat."}]}

Several images: "image" is {"<image_00>": "a.jpg", "<image_01>": "b.jpg"} and the text refers to them
by key. Each reference becomes an <image> placeholder; images are ordered as they appear in the text.
"""

from __future__ import annotations

import re

from mmtune.data.conversation import IMAGE_PLACEHOLDER, Conversation, Message
from mmtune.data.formats.base import field_error, image_paths, place_images, read_turns, register_format, type_name

ROLES = {"user": "user", "assistant": "assistant", "system": "system"}
IMAGE_REF = re.compile(r"<image_\d+>")


@register_format("minicpm")
class MiniCPMFormat:
    description = '{"image": path | {"<image_00>": path}, "conversations": [{"role": ..., "content": ...}]}'
    keys = ("id", "image", "conversations")
    turns, turn_keys = "conversations", ("role", "content")

    @staticmethod
    def detect(record: dict) -> bool:
        turns = record.get("conversations")
        return isinstance(turns, list) and any(isinstance(t, dict) and ("role" in t or "content" in t) for t in turns)

    @staticmethod
    def read(record: dict, where: str) -> Conversation:
        messages = read_turns(record, "conversations", where, role_key="role", content_key="content", roles=ROLES)
        image = record.get("image")
        if isinstance(image, dict):
            images = resolve_refs(messages, image, where)
        else:
            images = [] if image is None else image_paths(image, where, "image")
            if len(images) > 1:
                raise field_error(where, "image", "several images must be a {\"<image_00>\": path, ...} mapping")
        place_images(messages, images, where, "conversations")
        return Conversation(messages, images)


def resolve_refs(messages: list[Message], mapping: dict, where: str) -> list[str]:
    """Replace <image_XX> references by placeholders; return the paths in order of appearance."""
    for key, path in mapping.items():
        if not isinstance(path, str) or not path:
            raise field_error(where, f"image.{key}", f"image path is {type_name(path)}, expected a non-empty string")
    images: list[str] = []
    used: set[str] = set()
    for i, m in enumerate(messages):
        def to_placeholder(match: re.Match) -> str:
            ref = match.group(0)
            if ref not in mapping:
                raise field_error(where, f"conversations[{i}].content",
                                  f"text refers to {ref} but 'image' has no such key (keys: {', '.join(mapping)})")
            images.append(mapping[ref])
            used.add(ref)
            return IMAGE_PLACEHOLDER
        m.content = IMAGE_REF.sub(to_placeholder, m.content)
    unused = [k for k in mapping if k not in used]
    if unused:
        raise field_error(where, f"image.{unused[0]}", f"image {unused[0]} is never referenced in the text",
                          hint=f"write {unused[0]} in the text where the image goes, or remove it")
    return images
