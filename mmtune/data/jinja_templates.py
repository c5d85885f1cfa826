"""Chat templates given as jinja text (a model's official `chat_template`), tools included.

`JinjaTemplate.render(messages, tools=...)` renders the whole conversation once through transformers'
own jinja renderer (the text `tokenizer.apply_chat_template(messages, tools=tools)` gives) and finds
the trained spans in it: each assistant turn starts after the template's generation prompt (the text
`add_generation_prompt` appends, e.g. `<|im_start|>assistant\\n`) and ends with the template's first
end-of-turn marker after it (`<|im_end|>`, `<|eot_id|>`, ...), included. So a turn's tool calls are
trained with its text; tool results, tool definitions and the system prompt are not. Finding turns
by their header (not by rendering growing prefixes) also holds for templates that render earlier
turns differently once later ones exist (Qwen3's reasoning blocks).

Named templates: `qwen3_chat` and `llama3_1_chat` are such templates; `qwen_chat` and
`internlm2_chat` render tool conversations through one (chat_templates/SOURCES.md); `auto` through
the tokenizer's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from typing import Sequence

from mmtune.data.conversation import Message
from mmtune.errors import ConfigError, DataError

Span = tuple[int, int]


def packaged(name: str) -> str:
    """The text of one of mmtune's bundled chat templates (mmtune/data/chat_templates/NAME.jinja)."""
    return resources.files("mmtune.data").joinpath("chat_templates", f"{name}.jinja").read_text(encoding="utf-8")


@dataclass
class JinjaTemplate:
    name: str
    text: str  # the jinja chat template
    end_markers: tuple[str, ...]  # what ends an assistant turn (trained with it)
    bos_token: str | None = None
    eos_token: str | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)  # more template variables (e.g. Llama's date_string)

    def apply(self, messages: Sequence[Message], add_generation_prompt: bool = False,
              tools: Sequence[dict] | None = None) -> str:
        from jinja2 import TemplateError
        from transformers.utils.chat_template_utils import render_jinja_template

        try:
            rendered, _ = render_jinja_template(
                conversations=[[m.to_dict() for m in messages]], tools=list(tools) if tools else None,
                chat_template=self.text, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "", eos_token=self.eos_token or "", **self.extra)
        except TemplateError as e:
            raise DataError(f"the {self.name} chat template refuses this conversation: {e}") from None
        return rendered[0]

    @cached_property
    def header(self) -> str:
        """What the template writes to open an assistant turn (its generation prompt)."""
        probe = [Message("user", "mmtune-probe")]
        closed, opened = self.apply(probe, False), self.apply(probe, True)
        if not opened.startswith(closed) or opened == closed:
            raise ConfigError(f"the {self.name} chat template has no generation prompt to find assistant turns by")
        return opened[len(closed):]

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False,
               tools: Sequence[dict] | None = None) -> tuple[str, list[Span]]:
        msgs = list(messages)
        text = self.apply(msgs, add_generation_prompt, tools)
        header = self.header
        starts, at = [], text.find(header)
        while at >= 0:
            starts.append(at + len(header))
            at = text.find(header, at + len(header))
        answers = sum(1 for m in msgs if m.role == "assistant")
        if len(starts) != answers + bool(add_generation_prompt):
            raise DataError(f"the {self.name} chat template's assistant header {header!r} appears {len(starts)} times "
                            f"for {answers} assistant message(s), so the trained spans cannot be placed",
                            hint="a message may contain the template's control text")
        spans = []
        for start in starts[:answers]:
            ends = [(text.find(m, start), m) for m in self.end_markers if text.find(m, start) >= 0]
            if not ends:
                raise DataError(f"an assistant turn of the {self.name} chat template has no end marker "
                                f"({', '.join(self.end_markers)})")
            end, marker = min(ends)
            spans.append((start, end + len(marker)))
        return text, spans

    def stop_words(self, tokenizer=None) -> list[str]:
        return list(self.end_markers)

    def to_jinja(self) -> str:
        return self.text


QWEN3 = JinjaTemplate("qwen3_chat", packaged("qwen3"), end_markers=("<|im_end|>",), eos_token="<|im_end|>",
                      description="Qwen3 (official template: tools, reasoning blocks)")
LLAMA3_1 = JinjaTemplate("llama3_1_chat", packaged("llama3_1"), end_markers=("<|eot_id|>", "<|eom_id|>"),
                         bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                         description="Llama-3.1+ Instruct (official template: dated system header, tools, ipython)")
QWEN2_5_TOOLS = JinjaTemplate("qwen_chat", packaged("qwen2_5"), end_markers=("<|im_end|>",), eos_token="<|im_end|>")
INTERNLM2_TOOLS = JinjaTemplate("internlm2_chat", packaged("internlm2_tools"), end_markers=("<|im_end|>",),
                                bos_token="<s>", eos_token="</s>")
TOOL_RENDERERS = {"qwen_chat": QWEN2_5_TOOLS, "internlm2_chat": INTERNLM2_TOOLS}
