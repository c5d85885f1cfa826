"""The terminal chat loop: streaming answers, multi-turn memory, `clear`, `/image` and `exit`."""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from mmtune.data.conversation import IMAGE_PLACEHOLDER, Message
from mmtune.data.images import open_image
from mmtune.errors import MmtuneError
from mmtune.infer.engine import GenerationSettings, stream_reply
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
              stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
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
        answer(loaded, history, question, settings, write, images)
        write("\n")
