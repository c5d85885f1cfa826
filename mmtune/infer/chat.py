"""The terminal chat loop: streaming answers, multi-turn memory, `clear` and `exit`."""

from __future__ import annotations

import sys
from typing import Callable, TextIO

from mmtune.data.conversation import Message
from mmtune.infer.engine import GenerationSettings, stream_reply
from mmtune.infer.load import LoadedModel

HELP = "Type a message. `clear` starts a new conversation, `exit` quits."


def answer(loaded: LoadedModel, history: list[Message], question: str, settings: GenerationSettings,
           write: Callable[[str], None]) -> str:
    """Stream one answer to `write`, append the turn to `history` and return the answer."""
    messages = [*history, Message("user", question)]
    pieces = []
    for piece in stream_reply(loaded.model, loaded.tokenizer, loaded.template, messages, settings):
        pieces.append(piece)
        write(piece)
    reply = "".join(pieces).strip()
    history.extend([Message("user", question), Message("assistant", reply)])
    return reply


def chat_loop(loaded: LoadedModel, settings: GenerationSettings, *, system: str | None = None,
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
        answer(loaded, history, question, settings, write)
        write("\n")
