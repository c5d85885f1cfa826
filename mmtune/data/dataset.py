"""Recipe datasets -> conversations -> encoded samples (cached on disk) -> training rows.

Bad records are counted and logged with their place, never dropped silently. Tokenization runs
once per (data files, tokenizer, template, length policy): the result is saved with
`datasets.save_to_disk` under a key of all of those, and later runs load it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from mmtune.data.conversation import Conversation
from mmtune.data.encode import ConversationEncoder, encoder_from_recipe
from mmtune.data.packing import concat_samples, pack_lengths

log = logging.getLogger(__name__)
CACHE_FORMAT = "1"  # bump when the encoded layout changes


@dataclass
class DataStats:
    records: int = 0
    bad_records: int = 0
    samples: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    rows: int = 0
    from_cache: bool = False


def load_conversations(datasets_cfg, stats: DataStats | None = None) -> list[Conversation]:
    """Read every configured file (repeated as asked); bad records are logged and counted."""
    from mmtune.data.formats import read_file

    stats = stats if stats is not None else DataStats()
    out: list[Conversation] = []
    for ds in datasets_cfg:
        convs, errors = read_file(ds.path, ds.format, errors="collect")
        stats.records += len(convs) + len(errors)
        stats.bad_records += len(errors)
        if errors:
            log.warning("%s: skipped %d bad record(s) of %d; first: %s (run `mmtune data check %s` for all)",
                        ds.path, len(errors), len(convs) + len(errors), errors[0], ds.path)
        log.info("%s: %d conversations x %d", ds.path, len(convs), ds.repeat)
        out.extend(convs * ds.repeat)
    return out


def _file_digest(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    # The Rust serialization orders its vocab map differently from run to run: normalize it.
    canonical = json.dumps(json.loads(tokenizer.backend_tokenizer.to_str()), sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()


def cache_key(recipe, tokenizer) -> str:
    template = recipe.data.template
    parts = {
        "format": CACHE_FORMAT,
        "files": [(_file_digest(d.path), d.format, d.repeat) for d in recipe.data.datasets],
        "tokenizer": tokenizer_digest(tokenizer),
        "chat_template": tokenizer.chat_template if template == "auto" else None,
        "template": template,
        "system": recipe.data.system,
        "max_length": recipe.data.max_length,
        "overlong": recipe.data.overlong,
    }
    if template != "auto":
        from mmtune.data.templates import get_template

        parts["template_def"] = repr(get_template(template))
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def dataset_cache_root() -> Path:
    base = os.environ.get("MMTUNE_CACHE") or Path.home() / ".cache" / "mmtune"
    return Path(base) / "datasets"


def _encode_batch(batch: dict, encoder: ConversationEncoder) -> dict:
    out = {"input_ids": [], "labels": [], "status": []}
    for messages, source in zip(batch["messages"], batch["source"]):
        conv = Conversation.from_dict({"messages": messages, "source": source})
        full = encoder.encode_full(conv)
        status = "ok"
        if len(full.input_ids) > encoder.max_length:
            cut = encoder.encode(conv)
            status = "truncated" if cut is not None else "dropped"
            full = cut or full
        out["input_ids"].append(full.input_ids if status != "dropped" else [])
        out["labels"].append(full.labels if status != "dropped" else [])
        out["status"].append(status)
    return out


def encode_recipe_data(recipe, tokenizer, *, use_cache: bool = True):
    """(datasets.Dataset with input_ids/labels, DataStats) for the recipe's training data."""
    import datasets

    stats = DataStats()
    key = cache_key(recipe, tokenizer)
    cached = dataset_cache_root() / key
    if use_cache and (cached / "stats.json").exists():
        stats = DataStats(**json.loads((cached / "stats.json").read_text()))
        stats.from_cache = True
        log.info("tokenized data loaded from cache %s", cached)
        return datasets.load_from_disk(str(cached / "data")), stats

    convs = load_conversations(recipe.data.datasets, stats)
    if not convs:
        from mmtune.errors import DataError

        raise DataError("no usable conversations in the recipe's datasets", hint="run `mmtune data check FILE`")
    raw = datasets.Dataset.from_list([{"messages": c.to_dict()["messages"], "source": c.source} for c in convs])
    encoder = encoder_from_recipe(recipe, tokenizer)
    encoded = raw.map(
        _encode_batch,
        batched=True,
        fn_kwargs={"encoder": encoder},
        remove_columns=raw.column_names,
        num_proc=recipe.data.num_proc if len(raw) >= 1000 * recipe.data.num_proc else None,
        desc="tokenizing",
    )
    status = encoded["status"]
    stats.truncated = status.count("truncated")
    stats.dropped_overlong = status.count("dropped")
    encoded = encoded.filter(lambda s: s != "dropped", input_columns="status").remove_columns("status")
    lengths = [len(x) for x in encoded["input_ids"]]
    stats.samples = len(lengths)
    stats.tokens = sum(lengths)
    stats.trained_tokens = sum(sum(1 for t in lab if t != -100) for lab in encoded["labels"])
    if stats.truncated or stats.dropped_overlong:
        log.warning("%d sample(s) longer than max_length %d were truncated and %d dropped (data.overlong=%s)",
                    stats.truncated, recipe.data.max_length, stats.dropped_overlong, recipe.data.overlong)
    if use_cache:
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        encoded.save_to_disk(str(tmp / "data"))
        (tmp / "stats.json").write_text(json.dumps(asdict(stats)))
        try:
            os.replace(tmp, cached)
        except OSError:  # another process cached the same data first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        encoded = datasets.load_from_disk(str(cached / "data")) if cached.exists() else encoded
    return encoded, stats


class TrainRows(torch.utils.data.Dataset):
    """Training rows over encoded samples: packed bins, or one sample per row."""

    def __init__(self, encoded, *, pack: bool, max_length: int, seed: int = 0):
        self.encoded = encoded
        self.pack = pack
        lengths = [len(x) for x in encoded["input_ids"]]
        if pack:
            bins = pack_lengths(lengths, max_length)
            random.Random(seed).shuffle(bins)  # best-fit order groups long samples; spread them
            self.rows = bins
        else:
            self.rows = [[i] for i in range(len(lengths))]
        self.row_lengths = [sum(lengths[i] for i in row) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        samples = [self.encoded[j] for j in self.rows[i]]
        if self.pack:
            return concat_samples(samples)
        return {"input_ids": samples[0]["input_ids"], "labels": samples[0]["labels"]}
