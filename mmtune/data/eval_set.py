"""Held-out conversations scored during training (`eval.datasets`), read strictly.

Eval data is not skipped over like training data: a bad record stops the run with its place
(file:record N:field), since silently scoring fewer records would change what the numbers mean.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mmtune.data.conversation import Conversation
from mmtune.errors import DataError


@dataclass
class EvalSet:
    conversations: list[Conversation]
    records: int  # conversations in the files, before max_samples


def read_eval_set(datasets_cfg, max_samples: int | None = None, seed: int = 0) -> EvalSet:
    """The conversations of the files, cut to a fixed random subset of `max_samples` (by `seed`)."""
    from mmtune.data.formats import read_file

    conversations: list[Conversation] = []
    for ds in datasets_cfg:
        convs, errors = read_file(ds.path, ds.format, errors="collect")
        if errors:
            first = errors[0]
            raise DataError(first.message, where=first.where,
                            hint=f"eval data must be clean: {len(errors)} bad record(s) of {len(convs) + len(errors)} "
                                 f"in this file; `mmtune data check {ds.path}` lists them")
        conversations.extend(convs)
    if not conversations:
        raise DataError("no conversations in eval.datasets", where=", ".join(d.path for d in datasets_cfg))
    records = len(conversations)
    if max_samples is not None and max_samples < records:
        keep = sorted(random.Random(seed).sample(range(records), max_samples))
        conversations = [conversations[i] for i in keep]
    return EvalSet(conversations, records)
