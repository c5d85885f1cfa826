"""Multiple-choice prompts as LLaVA asks MMBench (and VLMEvalKit builds them): the one text that
evaluation asks and that training data of multiple-choice questions is written in."""

from __future__ import annotations

INSTRUCTION_EN = "Answer with the option's letter from the given choices directly."
INSTRUCTION_ZH = "请直接回答选项字母。"


def is_chinese(text: str) -> bool:
    """True when `text` is mostly Chinese (how MMBench-CN questions are told apart).

    A CJK ideograph counts about as much as an English word (~4 letters), so an English question
    quoting one character ("What does 福 mean?") stays English."""
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf")
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    return cjk > 0 and cjk * 4 >= latin


def build_prompt(question: str, options: dict[str, str], hint: str | None = None, chinese: bool | None = None) -> str:
    """The question as LLaVA asks MMBench: hint, question, one "A. text" line per option, instruction."""
    if chinese is None:
        chinese = is_chinese(f"{hint or ''} {question}")
    lines = [hint.strip()] if hint and hint.strip() else []
    lines.append(question.strip())
    lines += [f"{letter}. {text}" for letter, text in options.items()]
    lines.append(INSTRUCTION_ZH if chinese else INSTRUCTION_EN)
    return "\n".join(lines)
