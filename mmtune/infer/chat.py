"""The terminal chat loop: streaming answers, multi-turn memory, `clear` and `exit`."""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from mmtune.data.conversation import IMAGE_PLACEHOLDER, Message
from mmtune.infer.engine import GenerationSettings, stream_reply
from mmtune.infer.load import LoadedModel

HELP = "Type a message. `clear` starts a new conversation, `exit` quits."


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


def chat_loop(loaded: LoadedModel, settings: GenerationSettings, *, system: str | None = None, images: list | None = None,
              stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    def fresh() -> list[Message]:
        return [Message("system", system)] if system else []

    def write(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    history = fresh()
    write(f"{HELP}\n")
    while True:
        write("\nUser: ")
        line = stdin.readline()
        if not line:  # end of input
            write("\n")
            return
        question = line.strip()
        if not question:
            continue
        if question.lower() in ("exit", "quit"):
            return
        if question.lower() == "clear":
            history = fresh()
            write("(conversation cleared)\n")
            continue
        write("Assistant: ")
        answer(loaded, history, question, settings, write, images)
        write("\n")
