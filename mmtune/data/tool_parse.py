"""Tool calls read back out of generated text, in the markup each template trains:

    hermes     (qwen_chat, qwen3_chat, and `auto` templates that write <tool_call>):
               text <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call> ...
    llama3     (llama3_1_chat): the whole reply is {"name": ..., "parameters": {...}}
    internlm2  (internlm2_chat): text<|action_start|><|plugin|>\\n{"name": ..., "parameters": {...}}<|action_end|>

`parse_reply(text, style)` gives the text before the calls, the calls, and the pieces that looked
like calls but were not valid JSON objects with a name (counted by `eval tools` as invalid JSON).
The text must be decoded with special tokens kept (InternLM2's markers are special tokens).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from mmtune.data.conversation import ToolCall

HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
INTERNLM2 = re.compile(r"<\|action_start\|>\s*<\|plugin\|>\s*(.*?)\s*(?:<\|action_end\|>|$)", re.DOTALL)
STYLES = ("hermes", "llama3", "internlm2")


@dataclass
class ParsedReply:
    content: str
    calls: list[ToolCall] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # call markup whose JSON did not parse into a call

    @property
    def attempted(self) -> bool:
        return bool(self.calls or self.invalid)


def tool_style(template) -> str | None:
    """How `template` (a ChatFormat) writes tool calls; None when it writes none."""
    name = getattr(template, "name", "")
    if name in ("qwen_chat", "qwen3_chat"):
        return "hermes"
    if name == "llama3_1_chat":
        return "llama3"
    if name == "internlm2_chat":
        return "internlm2"
    text = getattr(getattr(template, "tokenizer", None), "chat_template", None) or getattr(template, "text", "") or ""
    if "<tool_call>" in text:
        return "hermes"
    if "<|action_start|>" in text:
        return "internlm2"
    if "ipython" in text and '"parameters"' in text:
        return "llama3"
    return None


def _call(raw: str, keys: tuple[str, ...]) -> ToolCall | None:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = next((obj[k] for k in keys if k in obj), {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return ToolCall(obj["name"], args) if isinstance(args, dict) else None


def parse_reply(text: str, style: str | None) -> ParsedReply:
    if style is None:
        return ParsedReply(text.strip())
    if style == "llama3":
        body = text.strip().removeprefix("<|python_tag|>").strip()
        if body.startswith("{"):
            call = _call(body, ("parameters", "arguments"))
            return ParsedReply("", [call]) if call else ParsedReply("", invalid=[body])
        return ParsedReply(text.strip())
    pattern, keys = (HERMES, ("arguments", "parameters")) if style == "hermes" else (INTERNLM2, ("parameters", "arguments"))
    matches = list(pattern.finditer(text))
    if not matches:
        return ParsedReply(text.strip())
    parsed = ParsedReply(text[: matches[0].start()].strip())
    for m in matches:
        call = _call(m.group(1), keys)
        if call:
            parsed.calls.append(call)
        else:
            parsed.invalid.append(m.group(1))
    return parsed
