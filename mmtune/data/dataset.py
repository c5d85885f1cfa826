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
from mmtune.errors import DataError

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


def cache_key(recipe, tokenizer, image_spec=None) -> str:
    template = recipe.data.template
    parts = {
        "images": repr(image_spec),
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


def _encode_batch(batch: dict, encoder: ConversationEncoder, image_spec=None) -> dict:
    from mmtune.data.encode import fit_length
    from mmtune.data.vlm import expand_images

    out = {"input_ids": [], "labels": [], "status": [], "error": [], "images": [], "grids": [], "source": []}
    for messages, source, images in zip(batch["messages"], batch["source"], batch["images"]):
        conv = Conversation.from_dict({"messages": messages, "source": source})
        paths, grids, error = [], [], ""
        try:
            full = encoder.encode_full(conv)
            image_token_id = None
            if image_spec is not None:
                full, paths, grids = expand_images(full, images, image_spec, source)
                image_token_id = image_spec.image_token_id
            sample, status = fit_length(full, encoder.max_length, encoder.overlong, image_token_id)
        except DataError as e:
            sample, status, error = None, "bad", e.format()
        out["input_ids"].append(sample.input_ids if sample else [])
        out["labels"].append(sample.labels if sample else [])
        out["status"].append(status)
        out["error"].append(error)
        out["images"].append(paths)
        out["grids"].append(grids)
        out["source"].append(source)
    return out


def encode_recipe_data(recipe, tokenizer, *, image_spec=None, use_cache: bool = True):
    """(datasets.Dataset with input_ids/labels (+ images/grids for a VLM), DataStats)."""
    import datasets

    stats = DataStats()
    key = cache_key(recipe, tokenizer, image_spec)
    cached = dataset_cache_root() / key
    if use_cache and (cached / "stats.json").exists():
        stats = DataStats(**json.loads((cached / "stats.json").read_text()))
        stats.from_cache = True
        log.info("tokenized data loaded from cache %s", cached)
        return datasets.load_from_disk(str(cached / "data")), stats

    convs = load_conversations(recipe.data.datasets, stats)
    if not convs:
        raise DataError("no usable conversations in the recipe's datasets", hint="run `mmtune data check FILE`")
    raw = datasets.Dataset.from_list(
        [{"messages": c.to_dict()["messages"], "source": c.source, "images": list(c.images)} for c in convs]
    )
    encoder = encoder_from_recipe(recipe, tokenizer)
    encoded = raw.map(
        _encode_batch,
        batched=True,
        fn_kwargs={"encoder": encoder, "image_spec": image_spec},
        remove_columns=raw.column_names,
        num_proc=recipe.data.num_proc if len(raw) >= 1000 * recipe.data.num_proc else None,
        desc="tokenizing",
    )
    status = encoded["status"]
    stats.truncated = status.count("truncated")
    stats.dropped_overlong = status.count("dropped")
    bad = [e for e in encoded["error"] if e]
    if bad:
        stats.bad_records += len(bad)
        log.warning("skipped %d record(s) with bad images or image placeholders; first: %s", len(bad), bad[0])
    drop = ["status", "error"] + ([] if image_spec is not None else ["images", "grids", "source"])
    encoded = encoded.filter(lambda s: s in ("ok", "truncated"), input_columns="status").remove_columns(drop)
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
    """Training rows over encoded samples: packed bins, or one sample per row.

    For a VLM `image_loader` turns a sample's images into pixel_values. A sample whose image cannot
    be read is logged and counted, then either its row is replaced by another (`bad_images:
    resample`, as MiniCPM-V does) or the sample is left out of its row (`skip`); past
    `max_bad_fraction` of the samples seen, training stops with a clear error.
    """

    def __init__(self, encoded, *, pack: bool, max_length: int, seed: int = 0, image_loader=None,
                 bad_images: str = "resample", max_bad_fraction: float = 1.0):
        self.encoded = encoded
        self.pack = pack
        self.image_loader = image_loader
        self.bad_images = bad_images
        self.max_bad_fraction = max_bad_fraction
        self.seen = 0
        self.bad = 0
        self._rng = random.Random(seed)
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
        for _attempt in range(100):
            samples = [self.encoded[j] for j in self.rows[i]]
            if self.image_loader is not None:
                samples = self._with_pixels(samples)
                if samples is None:  # resample: another row
                    i = (i + 1 + self._rng.randrange(max(len(self.rows) - 1, 1))) % len(self.rows)
                    continue
            return self._row(samples)
        raise DataError("100 rows in a row had unreadable images", hint="check the data with `mmtune data check`")

    def _row(self, samples: list[dict]) -> dict:
        row = concat_samples(samples) if self.pack else {"input_ids": samples[0]["input_ids"], "labels": samples[0]["labels"]}
        pixels = [s["pixel_values"] for s in samples if s.get("pixel_values") is not None]
        if pixels:
            row["pixel_values"] = torch.cat(pixels)
        return row

    def _with_pixels(self, samples: list[dict]) -> list[dict] | None:
        kept = []
        for s in samples:
            self.seen += 1
            if not s["images"]:
                kept.append(s)
                continue
            try:
                kept.append({**s, "pixel_values": self.image_loader(s["images"], s["grids"], s.get("source", "sample"))})
            except DataError as e:
                self._count_bad(e)
                if self.bad_images == "resample":
                    return None
        return kept or None

    def _count_bad(self, error: DataError) -> None:
        self.bad += 1
        log.warning("unreadable image (%d so far, policy %s): %s", self.bad, self.bad_images, error.format())
        if self.seen >= 20 and self.bad / self.seen > self.max_bad_fraction:
            raise DataError(
                f"{self.bad} of {self.seen} samples had unreadable images, more than data.max_bad_fraction "
                f"{self.max_bad_fraction:.0%}",
                hint="fix the image folder or the data (`mmtune data check FILE --image-folder DIR`)",
            )
