"""CircularEval (MMBench): a question counts only when the model picks the right option in every
rotation of its options, which removes the luck of guessing one fixed position.

Rows whose `index` differs by a multiple of 1,000,000 are rotations of one question (the official
MMBench files ship them so); `group_of(index) = index % 1_000_000`. When a file holds no rotations,
`add_rotations` builds them: rotation k shifts every option k places towards A (and the answer
with it) and gets index `index + k * 1_000_000`.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Iterable

from mmtune.errors import DataError
from mmtune.eval.tsv import EvalItem, build_prompt

ROTATION_STRIDE = 1_000_000


def group_of(index: int) -> int:
    return index % ROTATION_STRIDE


def has_rotations(items: Iterable[EvalItem]) -> bool:
    return any(item.index >= ROTATION_STRIDE for item in items)


def rotate(item: EvalItem, k: int) -> EvalItem:
    """`item` with its options shifted k places (option k becomes A) and its answer following."""
    letters = list(item.options)
    texts = list(item.options.values())
    n = len(letters)
    shifted = dict(zip(letters, texts[k % n:] + texts[: k % n]))
    answer = None
    if item.answer is not None:
        answer = letters[(letters.index(item.answer) - k) % n]
    row = dict(item.row, index=str(item.index + k * ROTATION_STRIDE), **shifted)
    if answer is not None and "answer" in row:
        row["answer"] = answer
    return dataclasses.replace(item, index=item.index + k * ROTATION_STRIDE, options=shifted, answer=answer,
                               row=row, prompt=build_prompt(item.question, shifted, item.hint, item.is_chinese))


def add_rotations(items: list[EvalItem]) -> list[EvalItem]:
    """Every item followed by its n-1 rotations (n = its number of options), in group order."""
    too_big = next((it for it in items if it.index >= ROTATION_STRIDE), None)
    if too_big is not None:
        raise DataError(f"index {too_big.index} is not below {ROTATION_STRIDE:,}, so rotations cannot be numbered",
                        where=too_big.where)
    return [rotate(item, k) for item in items for k in range(len(item.options))]


@dataclasses.dataclass
class GroupScore:
    group: int
    main: int  # the index of the group's first row (its category is the group's)
    hit: bool  # every rotation right
    n_rotations: int


def circular_groups(hits: dict[int, bool]) -> list[GroupScore]:
    """Per group of rotations: right only when all its rows are right (a row with no match is wrong).

    `hits` maps row index -> whether the row's extracted option equals its answer."""
    groups: dict[int, list[int]] = defaultdict(list)
    for index in hits:
        groups[group_of(index)].append(index)
    return [GroupScore(g, min(rows), all(hits[i] for i in rows), len(rows)) for g, rows in sorted(groups.items())]


def circular_accuracy(hits: dict[int, bool]) -> float:
    groups = circular_groups(hits)
    return sum(g.hit for g in groups) / len(groups) if groups else 0.0
