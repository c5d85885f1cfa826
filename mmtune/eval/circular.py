"""CircularEval (MMBench): a question counts only when the model picks the right option in every
rotation of its options, which removes the luck of guessing one fixed position. Done as VLMEvalKit
does it (`mcq_circular_eval`, and `vlmutil circular` for building rotations):

* a row's group is its `g_index` column when the file has one, else `index % 1,000,000`;
* a group is scored only when its main row (index == group) is in the file; rows of a group whose
  main row is missing are dropped (`circular_groups` reports them);
* `add_rotations` builds rotations for a file that has none: rotation k shifts every option k
  places towards A (and the answer with it) and gets index `index + k * offset` (offset 1,000,000,
  times 10 while an index reaches it). A question whose options name other option letters ("Both
  A and B"), or whose option text is itself a letter, is kept as one unrotated row.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections import defaultdict
from typing import Iterable

from mmtune.eval.tsv import EvalItem, build_prompt

ROTATION_STRIDE = 1_000_000
_NOT_LETTER = re.compile(r"[^A-Za-z ]")


def group_of(item: EvalItem) -> int:
    return item.g_index if item.g_index is not None else item.index % ROTATION_STRIDE


def has_rotations(items: Iterable[EvalItem]) -> bool:
    return any(group_of(item) != item.index for item in items)


def names_letters(options: dict[str, str]) -> bool:
    """VLMEvalKit's "abnormal" question: an option text mentions two option letters as words
    ("Both A and B") or is itself a letter. Rotating it would make its texts wrong."""
    for text in options.values():
        words = set(_NOT_LETTER.sub(" ", str(text)).split())
        if len(words & set(options)) > 1 or str(text) in string.ascii_uppercase:
            return True
    return False


def rotate(item: EvalItem, k: int, offset: int = ROTATION_STRIDE) -> EvalItem:
    """`item` with its options shifted k places (option k becomes A) and its answer following."""
    letters = list(item.options)
    texts = list(item.options.values())
    n = len(letters)
    shifted = dict(zip(letters, texts[k % n:] + texts[: k % n]))
    answer = None if item.answer is None else letters[(letters.index(item.answer) - k) % n]
    index = item.index + k * offset
    row = dict(item.row, index=str(index), g_index=str(item.index), **shifted)
    if answer is not None and "answer" in row:
        row["answer"] = answer
    return dataclasses.replace(item, index=index, g_index=item.index, options=shifted, answer=answer, row=row,
                               prompt=build_prompt(item.question, shifted, item.hint))


def add_rotations(items: list[EvalItem]) -> list[EvalItem]:
    """Every item followed by its n-1 rotations (n = its number of options); questions that name
    option letters stay single."""
    offset = ROTATION_STRIDE
    while items and max(it.index for it in items) >= offset:
        offset *= 10
    out = []
    for item in items:
        turns = 1 if names_letters(item.options) else len(item.options)
        out += [rotate(item, k, offset) for k in range(turns)]
    return out


@dataclasses.dataclass
class GroupScore:
    group: int
    main: int  # the index of the group's main row (its category is the group's)
    hit: bool  # every rotation right
    n_rotations: int


def circular_groups(items: Iterable[EvalItem], hits: dict[int, bool]) -> tuple[list[GroupScore], list[int]]:
    """Per group of rotations: right only when all its rows are right (a row with no match is wrong).
    Also the indexes of rows dropped because their group's main row is not in the file.

    `hits` maps row index -> whether the row's extracted option equals its answer."""
    rows: dict[int, list[int]] = defaultdict(list)
    mains = set()
    for item in items:
        group = group_of(item)
        rows[group].append(item.index)
        if item.index == group:
            mains.add(group)
    scores = [GroupScore(g, g, all(hits[i] for i in members), len(members))
              for g, members in sorted(rows.items()) if g in mains]
    dropped = sorted(i for g, members in rows.items() if g not in mains for i in members)
    return scores, dropped


def circular_accuracy(items: Iterable[EvalItem], hits: dict[int, bool]) -> float:
    groups, _ = circular_groups(items, hits)
    return sum(g.hit for g in groups) / len(groups) if groups else 0.0
