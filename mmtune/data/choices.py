"""Multiple-choice prompts as VLMEvalKit asks them of LLaVA-style models (its `build_prompt` for MCQ
datasets): the one text that evaluation asks and that training data of multiple-choice questions is
written in.

    hint            (only when there is one)
    question
    A. option text
    B. option text
    Answer with the option's letter from the given choices directly.

Nothing is stripped. The Chinese instruction `请直接回答选项字母。` is used whenever any CJK ideograph
(U+4E00-U+9FFF, VLMEvalKit's `cn_string`) appears in the hint, the question or an option.
"""

from __future__ import annotations

import re

INSTRUCTION_EN = "Answer with the option's letter from the given choices directly."
INSTRUCTION_ZH = "请直接回答选项字母。"
_CJK = re.compile("[\u4e00-\u9fff]")


def has_chinese(text: str) -> bool:
    """VLMEvalKit's test for a Chinese prompt: any character in U+4E00-U+9FFF."""
    return _CJK.search(text) is not None


def build_prompt(question: str, options: dict[str, str], hint: str | None = None) -> str:
    text = question if hint is None else f"{hint}\n{question}"
    for letter, option in options.items():
        text += f"\n{letter}. {option}"
    return text + "\n" + (INSTRUCTION_ZH if has_chinese(text) else INSTRUCTION_EN)
