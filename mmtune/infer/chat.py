"""The terminal chat loop: streaming answers, multi-turn memory, `clear`, `/image` and `exit`; with
tools, the model's tool calls are shown and their results come from a built-in demo tool (the ones of
`mmtune data tools`) or are typed in by the user, then the model answers with them."""

from __future__ import annotations

import json
import sys
from typing import Callable, TextIO

from mmtune.data.conversation import IMAGE_PLACEHOLDER, Message
from mmtune.data.images import open_image
from mmtune.errors import MmtuneError
from mmtune.infer.engine import GenerationSettings, generate_reply, stream_reply
from mmtune.infer.load import LoadedModel

HELP = "Type a message. `clear` starts a new conversation, `exit` quits."
VISION_HELP = "`/image PATH [PATH ...]` starts a new conversation about other images (quote paths with spaces)."


def with_image_placeholders(history: list[Message], question: str, images: list) -> str:
    """The first user turn of a conversation carries one `<image>` per image (unless it has them)."""
    if not images or any(m.role == "user" for m in history) or IMAGE_PLACEHOLDER in question:
        return question
    return f"{IMAGE_PLACEHOLDER}\n" * len(images) + question


def answer(loaded: LoadedModel, history: list[Message], question: str, settings: GenerationSettings,
           write: Callable[[str], None], images: list | None = None) -> str:
    """Stream one answer to `write`, append the turn to `history` and return the answer."""
    images = images or []
    question = with_image_placeholders(history, question, images)
    messages = [*history, Message("user", question)]
    pieces = []
    for piece in stream_reply(loaded.model, loaded.tokenizer, loaded.template, messages, settings,
                              images=images or None, vision=loaded.vision):
        pieces.append(piece)
        write(piece)
    reply = "".join(pieces).strip()
    history.extend([Message("user", question), Message("assistant", reply)])
    return reply


MAX_TOOL_ROUNDS = 5  # model calls in a row before the chat gives the turn back to the user


def answer_with_tools(loaded: LoadedModel, history: list[Message], question: str, settings: GenerationSettings,
                      write: Callable[[str], None], tools: list[dict], read_result: Callable[[str], str]) -> str:
    """One user turn with tools: generate; while the reply calls tools, show each call, get its result
    (a demo tool's, or `read_result(prompt)`), and generate again. History gets every message."""
    from dataclasses import replace

    from mmtune.data.synth.tools import run_demo_tool
    from mmtune.data.tool_parse import parse_reply, tool_style

    style = tool_style(loaded.template)
    if style is None:
        raise MmtuneError(f"template {loaded.template.name!r} writes no tool calls",
                          hint="use --prompt-template qwen_chat, qwen3_chat, llama3_1_chat or internlm2_chat")
    history.append(Message("user", question))
    keep = replace(settings, keep_special_tokens=True)
    for _ in range(MAX_TOOL_ROUNDS):
        reply = generate_reply(loaded.model, loaded.tokenizer, loaded.template, history, keep, tools=tools)
        parsed = parse_reply(reply, style)
        if parsed.content:
            write(parsed.content)
        for bad in parsed.invalid:
            write(f"\n[tool call that is not valid JSON] {bad}")
        if not parsed.calls:
            history.append(Message("assistant", parsed.content or reply))
            return parsed.content or reply
        history.append(Message("assistant", parsed.content, tool_calls=parsed.calls))
        for call in parsed.calls:
            args = json.dumps(call.arguments, ensure_ascii=False)
            write(f"\n[tool call] {call.name}({args})")
            result = run_demo_tool(call.name, call.arguments)
            if result is None:
                result = read_result(f"\nresult of {call.name} (JSON or text): ")
            else:
                write(f"\n[tool result] {result}")
            history.append(Message("tool", result, name=call.name))
        write("\nAssistant: ")
    write(f"\n(stopped after {MAX_TOOL_ROUNDS} rounds of tool calls)")
    return ""


def switch_images(loaded: LoadedModel, paths: list[str]) -> list:
    """The images a `/image PATH ...` line names, opened (a clear error if one cannot be)."""
    if loaded.vision is None:
        raise MmtuneError("this is a text-only model: it cannot take images")
    if not paths:
        raise MmtuneError("/image needs at least one path, e.g. /image photo.jpg")
    return [open_image(path, f"/image {path}") for path in paths]


def image_paths(text: str) -> list[str]:
    """The paths after `/image`, split like a shell line: quote a path with spaces."""
    import shlex

    try:
        return shlex.split(text)
    except ValueError as e:  # an unclosed quote
        raise MmtuneError(f"/image: {e} in {text!r}") from None


def chat_loop(loaded: LoadedModel, settings: GenerationSettings, *, system: str | None = None, images: list | None = None,
              stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, tools: list[dict] | None = None) -> None:
    images = list(images or [])

    def fresh() -> list[Message]:
        return [Message("system", system)] if system else []

    def write(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    history = fresh()
    write(f"{HELP} {VISION_HELP}\n" if loaded.vision is not None else f"{HELP}\n")
    while True:
        write("\nUser: ")
        line = stdin.readline()
        if not line:  # end of input
            write("\n")
            return
        question = line.strip()
        if not question:
            continue
        command = question.lower().removeprefix("/")
        if command in ("exit", "quit"):
            return
        if command == "clear":
            history = fresh()
            write("(conversation cleared)\n")
            continue
        head, _, rest = question.partition(" ")
        if head == "/image":  # a word of its own: "/images of cats" is a question
            try:
                images = switch_images(loaded, image_paths(rest))
            except MmtuneError as e:
                write(f"error: {e}\n")
                continue
            history = fresh()
            write(f"(new conversation about {len(images)} image(s))\n")
            continue
        write("Assistant: ")
        if tools:
            answer_with_tools(loaded, history, question, settings, write, tools,
                              lambda prompt: (write(prompt), stdin.readline().strip())[1])
        else:
            answer(loaded, history, question, settings, write, images)
        write("\n")
