"""Chat templates: render a conversation to text and say which characters are trained.

A `Template` is data (a few format strings). `render` returns the full text and the character
spans of every assistant answer plus its end-of-turn marker: those spans, and only those, get a
loss. Encoding tokenizes the whole rendered text once (see encode.py), so the token ids are
exactly what the tokenizer's own `apply_chat_template` would produce — never pieces tokenized
separately and glued with magic offsets.

`Template.to_jinja()` writes the same format as a Hugging Face chat template (with
`{% generation %}` around the trained spans), stored in the tokenizer at export so that plain
`transformers` reproduces the training format. `auto` uses the tokenizer's own chat template.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Protocol, Sequence

from mmtune.data.conversation import IMAGE_PLACEHOLDER, Message
from mmtune.data.jinja_templates import LLAMA3_1, QWEN3, TOOL_RENDERERS, JinjaTemplate
from mmtune.jinja_content import with_content_parts
from mmtune.errors import ConfigError

Span = tuple[int, int]


class ChatFormat(Protocol):
    name: str

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False,
               tools: Sequence[dict] | None = None) -> tuple[str, list[Span]]: ...

    def stop_words(self, tokenizer) -> list[str]: ...


def has_tools(messages: Sequence[Message], tools) -> bool:
    return bool(tools) or any(m.tool_calls or m.role == "tool" for m in messages)


def no_tool_renderer(name: str) -> ConfigError:
    return ConfigError(f"template {name!r} does not render tool definitions, tool calls or tool results",
                       hint="use qwen_chat, qwen3_chat, llama3_1_chat, internlm2_chat, or auto with a tokenizer "
                            "whose chat template renders tools")


@dataclass(frozen=True)
class Template:
    name: str
    system: str = "{content}"  # format of the system message
    user: str = "{content}"  # format of a user message
    assistant_prefix: str = ""  # opens an assistant turn (the generation prompt); not trained
    assistant: str = "{content}"  # format of an assistant answer; trained
    assistant_suffix: str = ""  # end of turn, trained so the model learns to stop
    separator: str = ""  # after each assistant turn; not trained
    bos: str = ""  # literal text at the very start (e.g. "<s>")
    default_system: str | None = None  # used when a conversation has no system message
    strip_content: bool = False  # trim message contents (Llama-3's template does)
    stops: tuple[str, ...] = ()  # extra stop strings besides assistant_suffix
    description: str = ""
    # After the last turn when no generation prompt follows; not trained (Phi-3's template puts
    # its eos_token there). Never between turns, so it does not change any answer span.
    closing: str = ""

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False,
               tools: Sequence[dict] | None = None) -> tuple[str, list[Span]]:
        if has_tools(messages, tools):  # through the model's own tool-rendering template
            if self.name not in TOOL_RENDERERS:
                raise no_tool_renderer(self.name)
            return TOOL_RENDERERS[self.name].render(messages, add_generation_prompt, tools)
        parts: list[str] = [self.bos]
        spans: list[Span] = []
        length = len(self.bos)

        def put(text: str, trained: bool = False) -> None:
            nonlocal length
            if trained and text:
                spans.append((length, length + len(text)))
            parts.append(text)
            length += len(text)

        msgs = list(messages)
        system = self.default_system
        if msgs and msgs[0].role == "system":
            system = msgs.pop(0).content
        if system is not None:
            put(self.system.format(content=self._clean(system)))
        for m in msgs:
            content = self._clean(m.content)
            if m.role == "user":
                put(self.user.format(content=content))
            elif m.role == "assistant":
                put(self.assistant_prefix)
                put(self.assistant.format(content=content) + self.assistant_suffix, trained=True)
                put(self.separator)
            else:
                raise ValueError(f"role {m.role!r} cannot appear here")
        put(self.assistant_prefix if add_generation_prompt else self.closing)
        return "".join(parts), _merge(spans)

    def _clean(self, text: str) -> str:
        return text.strip() if self.strip_content else text

    def stop_words(self, tokenizer=None) -> list[str]:
        words = [w for w in (self.assistant_suffix.strip(), *self.stops) if w]
        return list(dict.fromkeys(words))

    def to_jinja(self) -> str:
        """The same format as a Hugging Face chat template string."""

        def lit(s: str) -> str:
            return json.dumps(s, ensure_ascii=False)

        def fmt(template: str, var: str) -> str:
            pre, post = template.split("{content}")
            return f"{lit(pre)} + {var} + {lit(post)}"

        content = "(message['content'] | trim)" if self.strip_content else "message['content']"
        system_var = "(messages[0]['content'] | trim)" if self.strip_content else "messages[0]['content']"
        a_pre, a_post = self.assistant.split("{content}")
        out = []
        if self.bos:
            out.append("{{- " + lit(self.bos) + " }}")
        out.append("{%- if messages and messages[0]['role'] == 'system' %}")
        out.append("{{- " + fmt(self.system, system_var) + " }}")
        out.append("{%- set loop_messages = messages[1:] %}")
        out.append("{%- else %}")
        if self.default_system is not None:
            out.append("{{- " + lit(self.system.format(content=self._clean(self.default_system))) + " }}")
        out.append("{%- set loop_messages = messages %}")
        out.append("{%- endif %}")
        out.append("{%- for message in loop_messages %}")
        out.append("{%- if message['role'] == 'user' %}")
        out.append("{{- " + fmt(self.user, content) + " }}")
        out.append("{%- elif message['role'] == 'assistant' %}")
        out.append("{{- " + lit(self.assistant_prefix) + " }}")
        out.append("{%- generation %}")
        out.append("{{- " + f"{lit(a_pre)} + {content} + {lit(a_post + self.assistant_suffix)}" + " }}")
        out.append("{%- endgeneration %}")
        out.append("{{- " + lit(self.separator) + " }}")
        out.append("{%- endif %}")
        out.append("{%- endfor %}")
        out.append("{%- if add_generation_prompt %}")
        out.append("{{- " + lit(self.assistant_prefix) + " }}")
        if self.closing:
            out.append("{%- else %}")
            out.append("{{- " + lit(self.closing) + " }}")
        out.append("{%- endif %}")
        return with_content_parts("\n".join(out))


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for s, e in spans:
        if merged and merged[-1][1] == s:
            merged[-1] = (merged[-1][0], e)
        else:
            merged.append((s, e))
    return merged


@dataclass
class TokenizerTemplate:
    """`auto`: the tokenizer's own jinja chat template.

    Trained spans are found by rendering growing prefixes of the conversation: the text added
    between "prompt with generation prompt" and "prompt + answer" is the answer and its
    end-of-turn marker. This holds for every template whose rendering of a prefix is a prefix
    of the rendering of the whole (all common chat templates), once the text such a template
    adds only to close a conversation (Phi-3's trailing eos_token) is set aside.
    """

    tokenizer: object
    name: str = "auto"
    _stop: list[str] | None = None  # the end-of-turn marker, once read (stop_words)

    def _apply(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        dicts = [{"role": m.role, "content": m.content} for m in messages]
        return self.tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=add_generation_prompt)

    def tool_renderer(self):
        """The tokenizer's own template as a JinjaTemplate: tools through its `tools=` argument."""
        tok = self.tokenizer
        return JinjaTemplate("auto", tok.chat_template, end_markers=tuple(self.stop_words()),
                             bos_token=tok.bos_token, eos_token=tok.eos_token)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False,
               tools: Sequence[dict] | None = None) -> tuple[str, list[Span]]:
        if has_tools(messages, tools):
            return self.tool_renderer().render(messages, add_generation_prompt, tools)
        msgs = list(messages)
        full = self._apply(msgs, add_generation_prompt)
        spans: list[Span] = []
        for i, m in enumerate(msgs):
            if m.role != "assistant":
                continue
            prompt = self._apply(msgs[:i], True)
            upto = self._apply(msgs[: i + 1], False)
            closing = self._closing(self._apply(msgs[:i], False), prompt)
            if closing and upto.endswith(closing) and len(upto) - len(closing) >= len(prompt):
                upto = upto[: len(upto) - len(closing)]
            if not full.startswith(upto) or not upto.startswith(prompt):
                raise ConfigError(
                    "the tokenizer's chat template does not render conversations incrementally, "
                    "so the answer spans cannot be found",
                    hint="choose a named template with `data.template`",
                )
            # Everything after the generation prompt is what the model must generate, including
            # text the template puts before the content (Vicuna's " " after "ASSISTANT:", which
            # byte-level BPE merges into the answer's first token).
            start = len(prompt)
            end = len(upto)
            # Keep the end-of-turn marker, drop trailing whitespace/newlines after it.
            while end > start and upto[end - 1] in " \n":
                end -= 1
            spans.append((start, end))
        return full, _merge(spans)

    def _closing(self, closed: str, prompt: str) -> str:
        """Text a template appends only when no generation prompt follows ("" for most).

        `closed` and `prompt` render the same messages without and with the generation prompt;
        where they part, cut at the start of any special token the parting point falls inside
        (Phi-3: "...<|end|>\\n<|endoftext|>" vs "...<|end|>\\n<|assistant|>\\n" part after "<|").
        """
        cut = 0
        for a, b in zip(closed, prompt):
            if a != b:
                break
            cut += 1
        if cut == len(closed):
            return ""
        specials = set(getattr(self.tokenizer, "all_special_tokens", None) or [])
        get_added = getattr(self.tokenizer, "get_added_vocab", None)
        if callable(get_added):
            specials.update(get_added())
        for token in specials:
            if not token:
                continue
            at = closed.find(token, max(0, cut - len(token) + 1))
            if 0 <= at < cut:
                cut = at
        return closed[cut:]

    def stop_words(self, tokenizer=None) -> list[str]:
        """The template's end-of-turn marker (what it writes after an answer, e.g. `<|im_end|>`,
        read once from a probe conversation) and the tokenizer's eos."""
        tok = tokenizer or self.tokenizer
        if self._stop is None:
            self._stop = self._end_of_turn()
        return list(dict.fromkeys([*self._stop, *([tok.eos_token] if tok.eos_token else [])]))

    def _end_of_turn(self) -> list[str]:
        try:  # the class's render: a probe is not a conversation of the caller's
            text, spans = type(self).render(self, [Message("user", "Q"), Message("assistant", _PROBE_ANSWER)])
        except Exception:  # noqa: BLE001 - a template that cannot render the probe has no marker to offer
            return []
        for start, end in spans:
            answer = text[start:end]
            if _PROBE_ANSWER in answer and answer.split(_PROBE_ANSWER, 1)[1].strip():
                return [answer.split(_PROBE_ANSWER, 1)[1].strip()]
        return []


@dataclass
class ProcessorTemplate(TokenizerTemplate):
    """`auto` for a vision-language model: its processor's own chat template, each message's content a
    list of parts in which every `<image>` placeholder is an image part (as the model's users write
    messages), so the template puts the model's own image markup where the image goes."""

    processor: object = None

    def tool_renderer(self):
        raise no_tool_renderer("auto (a vision-language model's processor template)")

    def _apply(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        conversation = [{"role": m.role, "content": content_parts(m.content)} for m in messages]
        return self.processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=add_generation_prompt)


def content_parts(text: str) -> list[dict]:
    """`text` as chat-template content parts: an image part per `<image>` placeholder, text between.

    The newline that LLaVA-style data puts between a placeholder and its text ("<image>\nWhat is
    this?") separates the two in a flat string; in parts the template writes its own separator
    (InternVL's and LLaVA-OneVision's "\n" after an image), so one newline beside a placeholder goes."""
    pieces = text.split(IMAGE_PLACEHOLDER)
    parts: list[dict] = []
    for k, piece in enumerate(pieces):
        if k:
            parts.append({"type": "image"})
            piece = piece.removeprefix("\n")
        if k < len(pieces) - 1:
            piece = piece.removesuffix("\n")
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


_PROBE_ANSWER = "mmtune-probe-answer"
TEMPLATES: dict[str, Template] = {}  # format-string templates
JINJA_TEMPLATES: dict[str, JinjaTemplate] = {t.name: t for t in (QWEN3, LLAMA3_1)}  # official jinja, as they are


def register(template: Template) -> Template:
    TEMPLATES[template.name] = template
    return template


_CHATML = dict(
    system="<|im_start|>system\n{content}<|im_end|>\n",
    user="<|im_start|>user\n{content}<|im_end|>\n",
    assistant_prefix="<|im_start|>assistant\n",
    assistant_suffix="<|im_end|>",
    separator="\n",
)

register(Template("chatml", **_CHATML, description="plain ChatML, no default system prompt"))
register(
    Template(
        "qwen_chat",
        **_CHATML,
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        description="Qwen2.5-Instruct (ChatML with Qwen's default system prompt)",
    )
)
register(Template("internlm2_chat", **_CHATML, bos="<s>", description="InternLM2-chat (ChatML after <s>)"))
register(
    Template(
        "llama3_chat",
        bos="<|begin_of_text|>",
        system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
        user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
        assistant_prefix="<|start_header_id|>assistant<|end_header_id|>\n\n",
        assistant_suffix="<|eot_id|>",
        strip_content=True,
        # Llama-3.1+ templates always add a dated system header ("Cutting Knowledge Date: ..."):
        # this is not that format; use `auto` with their tokenizer.
        description="Llama-3 Instruct (Meta-Llama-3-*-Instruct)",
    )
)
register(
    Template(
        "phi3_chat",
        system="<|system|>\n{content}<|end|>\n",
        user="<|user|>\n{content}<|end|>\n",
        assistant_prefix="<|assistant|>\n",
        assistant_suffix="<|end|>",
        separator="\n",
        closing="<|endoftext|>",  # the official template ends with eos_token without a generation prompt
        description="Phi-3 instruct",
    )
)
register(
    Template(
        "vicuna",
        system="{content} ",
        user="USER: {content} ",
        assistant_prefix="ASSISTANT:",
        assistant=" {content}",
        assistant_suffix="</s>",
        default_system=(
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        ),
        description="Vicuna v1.1 / LLaVA-1.5 (FastChat)",
    )
)
register(
    Template(
        "default",
        system="<|System|>:{content}\n",
        user="<|User|>:{content}\n",
        assistant_prefix="<|Bot|>:",
        assistant_suffix="</s>",
        separator="\n",
        description="a neutral format for base models without a chat format",
    )
)


def store_template(tokenizer, template: ChatFormat, processor=None) -> None:
    """Write a named template into the tokenizer (and processor) as its jinja chat template, so a
    saved tokenizer reproduces the training format; `auto` is the tokenizer's own already. A template
    that renders tools is stored as the jinja that does (the same text for conversations without)."""
    if isinstance(template, JinjaTemplate):
        tokenizer.chat_template = with_content_parts(template.text)
    elif isinstance(template, Template) and template.name in TOOL_RENDERERS:
        tokenizer.chat_template = with_content_parts(TOOL_RENDERERS[template.name].text)
    elif isinstance(template, Template):
        tokenizer.chat_template = template.to_jinja()
    if isinstance(template, (Template, JinjaTemplate)):
        if processor is not None:
            processor.chat_template = tokenizer.chat_template


def template_names() -> list[str]:
    return ["auto", *TEMPLATES, *JINJA_TEMPLATES]


def get_template(name: str, tokenizer=None) -> ChatFormat:
    """The template called `name`; `auto` needs the tokenizer and its chat template."""
    if name == "auto":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "template 'auto' needs a tokenizer with a chat template, and this one has none",
                hint=f"set data.template to one of: {', '.join(TEMPLATES)}",
            )
        return TokenizerTemplate(tokenizer)
    if name in JINJA_TEMPLATES:
        return JINJA_TEMPLATES[name]
    if name not in TEMPLATES:
        close = difflib.get_close_matches(name, template_names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown template {name!r}", hint=f"{hint}known: {', '.join(template_names())}")
    return TEMPLATES[name]
