"""Alpaca records (single turn, with optional system prompt and earlier turns).

    {"instruction": "Translate to French", "input": "cat", "output": "chat",
     "system": "...", "history": [["earlier question", "earlier answer"], ...]}

The user message is the instruction, plus a newline and the input when there is one. History turns
come before it. An optional "images" (or "image") list works as in the LLaVA format.
"""

from __future__ import annotations

from mmtune.data.conversation import Conversation, Message
from mmtune.data.formats.base import field_error, field_origin, optional, place_images, register_format, require, type_name
from mmtune.data.formats.llava import read_images


@register_format("alpaca")
class AlpacaFormat:
    description = '{"instruction": ..., "input": ..., "output": ..., "system": ..., "history": [[q, a], ...]}'
    keys = ("id", "instruction", "input", "output", "system", "history", "images", "image")
    turns, turn_keys = None, ()

    @staticmethod
    def detect(record: dict) -> bool:
        return "instruction" in record and "output" in record

    @staticmethod
    def read(record: dict, where: str) -> Conversation:
        instruction = require(record, "instruction", str, where)
        extra = optional(record, "input", str, where, default="")
        output = require(record, "output", str, where)
        system = optional(record, "system", str, where)
        history = optional(record, "history", list, where, default=[])

        messages = [Message("system", system, field_origin("system"))] if system else []
        for i, pair in enumerate(history):
            if not (isinstance(pair, list) and len(pair) == 2):
                got = f"a list of {len(pair)}" if isinstance(pair, list) else type_name(pair)
                raise field_error(where, f"history[{i}]", f"history turn is {got}, expected [question, answer]")
            for j, role in enumerate(("user", "assistant")):
                if not isinstance(pair[j], str):
                    raise field_error(where, f"history[{i}][{j}]", f"value is {type_name(pair[j])}, expected a string")
                messages.append(Message(role, pair[j], field_origin(f"history[{i}][{j}]")))
        messages.append(Message("user", f"{instruction}\n{extra}" if extra else instruction, field_origin("instruction")))
        messages.append(Message("assistant", output, field_origin("output")))
        images = read_images(record, where)
        place_images(messages, images, where, "instruction")
        return Conversation(messages, images)
