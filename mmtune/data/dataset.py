"""A recipe's data files -> conversations -> encoded samples (cached on disk) -> training rows.

Bad records are counted and logged with their place, never dropped silently. Tokenization runs
once per (data files, tokenizer, template, length policy): the result is saved with
`datasets.save_to_disk` under a key of all of those, and later runs load it.

Encoded samples are a Dataset of `input_ids` and `labels` (int32 lists) and `length` (int32), so
counting and packing read one small column instead of every token. Text is tokenized in chunks
on `data.num_proc` threads (see `_encode_text`); image data in a `datasets` map on `num_proc` processes.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import os
import random
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from mmtune.data.conversation import Conversation
from mmtune.data.encode import DROPPED, TRUNCATED, ConversationEncoder, EncodedBatch, encoder_for
from mmtune.data.fast_bpe import FastBPE
from mmtune.data.packing import concat_samples, pack_lengths
from mmtune.data.placeholders import fill_and_report
from mmtune.errors import DataError

log = logging.getLogger(__name__)
# Bump when the encoded layout or the reading changes (2: int32 ids/labels, length column;
# 3: top-level system read, tool/preference/audio records refused).
CACHE_FORMAT = "3"


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


@contextmanager
def no_gc():
    """Pause the cyclic garbage collector while building many small acyclic objects (records,
    messages, token lists): each full collection walks every object of the process (torch's and
    transformers' included); they doubled the time to read 100k conversations."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def threads_only():
    """Our threads are the parallelism while they tokenize: the Rust tokenizer's own thread pool would
    oversubscribe the cores and busy-wait between calls. `TOKENIZERS_PARALLELISM=false` meanwhile,
    as `datasets.map(num_proc=...)` sets it for its workers; the previous value is restored after."""
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def load_conversations(data_cfg, stats: DataStats | None = None) -> list[Conversation]:
    """Read every file of the data section (repeated as asked), placeholders filled from
    `data.replace`. Bad records are skipped, counted and summarised by reason; past
    `data.max_bad_fraction` of all records the run stops. Keys no reader uses, and placeholders left
    unfilled, are reported once per file."""
    from mmtune.data.formats import describe_unused, detect_format, load_records, read_records, unused_keys

    stats = stats if stats is not None else DataStats()
    out: list[Conversation] = []
    problems: list[DataError] = []
    for ds in data_cfg.datasets:
        with no_gc():
            records = load_records(ds.path)
            format = detect_format(records, ds.path) if ds.format == "auto" else ds.format
            convs, errors = read_records(records, ds.path, format, errors="collect")
            unused = unused_keys(records, format)
        del records
        if unused:
            log.warning(describe_unused(ds.path, unused, len(convs) + len(errors)))
        left = fill_and_report(convs, data_cfg.replace)
        if left:
            log.warning("%s: %s", ds.path, left)
        stats.records += len(convs) + len(errors)
        stats.bad_records += len(errors)
        problems.extend(errors)
        if errors:
            log.warning("%s: skipped %d bad record(s) of %d; first: %s (run `mmtune data check %s` for all)",
                        ds.path, len(errors), len(convs) + len(errors), errors[0], ds.path)
        log.info("%s: %d conversations x %d", ds.path, len(convs), ds.repeat)
        out.extend(convs * ds.repeat)
    if problems:
        log.warning("skipped records by reason: %s", summarise_reasons(problems))
        if stats.bad_records > data_cfg.max_bad_fraction * stats.records:
            raise DataError(f"{stats.bad_records} of {stats.records} records are bad, more than data.max_bad_fraction "
                            f"{data_cfg.max_bad_fraction:.0%}; first: {problems[0]}",
                            hint="run `mmtune data check FILE` to see them all and fix the data, or raise "
                                 "data.max_bad_fraction to train on the rest")
    return out


def summarise_reasons(problems: list[DataError], most: int = 5) -> str:
    """"3 x unknown role 'bot' ..., 1 x ...": the commonest reasons first."""
    ranked = Counter(e.message for e in problems).most_common()
    text = "; ".join(f"{n} x {reason}" for reason, n in ranked[:most])
    return text + (f"; and {len(ranked) - most} other reason(s)" if len(ranked) > most else "")


def file_digest(path: str) -> str:
    """sha1 of a file's content. A run asks for each data file's digest more than once (the dataset
    cache key, what resume compares, each checkpoint's manifest): a file read once per process,
    while its size and modification time stay the same."""
    st = os.stat(path)
    return _content_digest(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    # The Rust serialization orders its vocab map differently from run to run: normalize it.
    canonical = json.dumps(json.loads(tokenizer.backend_tokenizer.to_str()), sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()


def cache_key(data_cfg, tokenizer, image_spec=None) -> str:
    """The cache entry of a recipe's `data` section encoded with `tokenizer` (and `image_spec`)."""
    template = data_cfg.template
    parts = {
        "images": repr(image_spec),
        "format": CACHE_FORMAT,
        "files": [(file_digest(d.path), d.format, d.repeat) for d in data_cfg.datasets],
        "tokenizer": tokenizer_digest(tokenizer),
        "chat_template": tokenizer.chat_template if template == "auto" else None,
        "template": template,
        "system": data_cfg.system,
        "replace": data_cfg.replace,
        "max_length": data_cfg.max_length,
        "overlong": data_cfg.overlong,
    }
    if template != "auto":
        from mmtune.data.templates import get_template

        parts["template_def"] = repr(get_template(template))
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def dataset_cache_root() -> Path:
    base = os.environ.get("MMTUNE_CACHE") or Path.home() / ".cache" / "mmtune"
    return Path(base) / "datasets"


TEXT_CHUNK = 1000  # conversations per tokenizer call


def _chunked(convs: list) -> list[list]:
    """Conversations in chunks of TEXT_CHUNK, one tokenizer call each."""
    return [convs[i:i + TEXT_CHUNK] for i in range(0, len(convs), TEXT_CHUNK)]


def _list_column(values: np.ndarray, offsets: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))


def _token_columns(batch: EncodedBatch) -> dict:
    return {"input_ids": _list_column(batch.input_ids, batch.offsets),
            "labels": _list_column(batch.labels, batch.offsets),
            "length": pa.array(batch.lengths, pa.int32())}


def _encode_text(chunks: list, encoder: ConversationEncoder, threads: int, key: str, stats: DataStats):
    """Text samples as a Dataset: each chunk of conversations is one tokenizer call, on `threads` threads.

    The Rust tokenizer releases the GIL, so one thread's tokenizing overlaps another's Python work
    (rendering, labels): `threads` cores are used without worker processes, which would have to be
    forked and fed the data (on 5k conversations that took about a third more CPU in all).
    Each chunk is let go of once tokenized (`chunks` ends up all None), so conversations leave
    memory as their tokens arrive."""
    import datasets
    from datasets.utils import tqdm as hf_tqdm

    def encode(i: int):
        convs, chunks[i] = chunks[i], None
        fitted, status = encoder.encode_batch(convs).fit_lengths(encoder.max_length, encoder.overlong)
        lengths = fitted.lengths[status != DROPPED]  # a dropped sample has no tokens: leaving its row out is enough
        kept = EncodedBatch(fitted.input_ids, fitted.labels, np.concatenate([[0], np.cumsum(lengths)]))
        return pa.table(_token_columns(kept)), np.bincount(status, minlength=3), int(kept.trained_counts().sum())

    sizes = [len(c) for c in chunks]
    parts = []
    with threads_only(), ThreadPoolExecutor(max(1, threads), thread_name_prefix="mmtune-tokenize") as pool, \
            hf_tqdm(unit=" examples", total=sum(sizes), desc="tokenizing") as progress:  # as `datasets.map` shows
        for size, part in zip(sizes, pool.map(encode, range(len(chunks)))):
            parts.append(part)
            progress.update(size)
    counts = sum(c for _, c, _ in parts)
    table = pa.concat_tables([t for t, _, _ in parts])
    stats.truncated, stats.dropped_overlong = int(counts[TRUNCATED]), int(counts[DROPPED])
    stats.samples = table.num_rows
    stats.tokens = int(pc.sum(table.column("length")).as_py() or 0)
    stats.trained_tokens = sum(n for _, _, n in parts)
    return datasets.Dataset(table, fingerprint=key)  # a fingerprint of its own would hash every token


def _encode_image_batch(batch: dict, encoder: ConversationEncoder, image_spec) -> pa.Table:
    """Samples with images (a datasets map: expanding placeholders needs each image's size, Python
    work that processes parallelize); a dropped or bad sample gets an empty row, filtered out after."""
    from mmtune.data.encode import fit_length

    convs = [Conversation.from_dict({"messages": messages}) for messages in batch["messages"]]
    results = image_spec.encode_samples(encoder, convs, batch["images"], batch["source"])
    ids, labels, status, error, images, grids = [], [], [], [], [], []
    for result in results:
        kept_paths, kept_grids, err = [], [], ""
        if isinstance(result, DataError):
            sample, state, err = None, "bad", result.format()
        else:
            full, keep_whole, kept_paths, kept_grids = result
            sample, state = fit_length(full, encoder.max_length, encoder.overlong, keep_whole)
        ids.append(sample.input_ids if sample else [])
        labels.append(sample.labels if sample else [])
        status.append(state)
        error.append(err)
        images.append(kept_paths)
        grids.append(kept_grids)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
    flat = EncodedBatch(np.fromiter(chain.from_iterable(ids), np.int32, offsets[-1]),
                        np.fromiter(chain.from_iterable(labels), np.int32, offsets[-1]), offsets)
    return pa.table({**_token_columns(flat), "trained": pa.array(flat.trained_counts(), pa.int32()),
                     "status": pa.array(status, pa.string()), "error": pa.array(error, pa.string()),
                     "images": pa.array(images, pa.list_(pa.string())),
                     "grids": pa.array(grids, pa.list_(pa.list_(pa.int64()))),
                     "source": pa.array(batch["source"], pa.string())})


def _encode_images(convs: list[Conversation], encoder: ConversationEncoder, image_spec, num_proc: int, key: str,
                   stats: DataStats):
    import datasets

    with no_gc():
        raw = datasets.Dataset.from_dict({
            "messages": pa.array([c.to_dict()["messages"] for c in convs],
                                 pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            "source": pa.array([c.source for c in convs], pa.string()),
            "images": pa.array([list(c.images) for c in convs], pa.list_(pa.string())),
        })
    encoded = raw.map(
        _encode_image_batch,
        batched=True,
        fn_kwargs={"encoder": encoder, "image_spec": image_spec},
        remove_columns=raw.column_names,
        num_proc=num_proc if len(raw) >= 1000 * num_proc else None,
        new_fingerprint=key,  # content-based already; saves hashing the tokenizer
        desc="tokenizing",
    )
    table = encoded.data  # straight from map: no indices mapping
    status = Counter(table.column("status").to_pylist())
    stats.truncated, stats.dropped_overlong = status["truncated"], status["dropped"]
    if status["bad"]:
        bad = [e for e in table.column("error").to_pylist() if e]
        stats.bad_records += len(bad)
        log.warning("skipped %d record(s) with bad images or image placeholders; first: %s", len(bad), bad[0])
    stats.samples = len(encoded) - status["dropped"] - status["bad"]
    stats.tokens = int(pc.sum(table.column("length")).as_py() or 0)  # dropped and bad rows are empty
    stats.trained_tokens = int(pc.sum(table.column("trained")).as_py() or 0)
    if stats.samples < len(encoded):
        encoded = encoded.filter(lambda s: [x in ("ok", "truncated") for x in s], input_columns="status", batched=True)
    return encoded.remove_columns(["status", "error", "trained"])


def encode_datasets(data_cfg, tokenizer, *, image_spec=None, template=None, use_cache: bool = True):
    """The files of a recipe's `data` section, encoded: (datasets.Dataset with input_ids/labels
    (int32) and length (+ images/grids/source for a VLM), DataStats). `template` overrides the
    section's (a native VLM renders with its processor's); `image_spec` says how images become tokens
    (LlavaImages or ProcessorImages)."""
    # Text: the cyclic GC waits until the data is ready (see no_gc). Image data forks map workers,
    # which keep theirs (only reading pauses it there).
    with no_gc() if image_spec is None else nullcontext():
        return _encode_datasets(data_cfg, tokenizer, image_spec, use_cache, template)


def _encode_datasets(data_cfg, tokenizer, image_spec, use_cache: bool, template=None):
    import datasets

    stats = DataStats()
    key = cache_key(data_cfg, tokenizer, image_spec)
    cached = dataset_cache_root() / key
    if use_cache and (cached / "stats.json").exists():
        stats = DataStats(**json.loads((cached / "stats.json").read_text()))
        stats.from_cache = True
        log.info("tokenized data loaded from cache %s", cached)
        return datasets.load_from_disk(str(cached / "data")), stats

    convs = load_conversations(data_cfg, stats)
    if not convs:
        raise DataError("no usable conversations in the recipe's datasets", hint="run `mmtune data check FILE`")
    encoder = encoder_for(data_cfg, tokenizer, template)
    if image_spec is None:
        encoder.fast = FastBPE.from_tokenizer(tokenizer) if data_cfg.fast_bpe else None
        chunks, convs = _chunked(convs), None  # the chunks alone hold the conversations (see _encode_text)
        encoded = _encode_text(chunks, encoder, data_cfg.num_proc, key, stats)
        if encoder.fast is not None and encoder.fast.mismatch:
            log.warning("fast BPE (tiktoken) disagreed with the tokenizer: %s; tokenizing again with the "
                        "tokenizer itself (set data.fast_bpe: false to skip the first pass)", encoder.fast.mismatch)
            encoder.fast, stats = None, DataStats()
            chunks = _chunked(load_conversations(data_cfg, stats))
            encoded = _encode_text(chunks, encoder, data_cfg.num_proc, key, stats)
    else:
        encoded = _encode_images(convs, encoder, image_spec, data_cfg.num_proc, key, stats)
        del convs
    if stats.truncated or stats.dropped_overlong:
        log.warning("%d sample(s) longer than max_length %d were truncated and %d dropped (data.overlong=%s)",
                    stats.truncated, data_cfg.max_length, stats.dropped_overlong, data_cfg.overlong)
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


def sample_lengths(encoded) -> list[int]:
    """Token count of every sample: the `length` column when there is one (no pass over the tokens)."""
    if "length" in (getattr(encoded, "column_names", None) or ()):
        return encoded.with_format("arrow")["length"].to_pylist()
    return [len(x) for x in encoded["input_ids"]]


class TrainRows(torch.utils.data.Dataset):
    """Training rows over encoded samples: packed bins, or one sample per row.

    For a VLM `image_loader` turns a sample's images into the model's image tensors (a dict), and
    `position_fn` gives a packed sample its position ids when the model needs more than one row of
    them (Qwen-VL's mrope: `position_fn(input_ids, image tensors)`). A sample whose image cannot
    be read is logged and counted, then either its row is replaced by another (`bad_images:
    resample`, as MiniCPM-V does) or the sample is left out of its row (`skip`); past
    `max_bad_fraction` of the samples seen, training stops with a clear error.
    """

    def __init__(self, encoded, *, pack: bool, max_length: int, seed: int = 0, image_loader=None,
                 bad_images: str = "resample", max_bad_fraction: float = 1.0, position_fn=None):
        self.encoded = encoded
        self.pack = pack
        self.image_loader = image_loader
        self.position_fn = position_fn
        self.bad_images = bad_images
        self.max_bad_fraction = max_bad_fraction
        self.seen = 0
        self.bad = 0
        self._rng = random.Random(seed)
        lengths = sample_lengths(encoded)
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
        row["image_inputs"] = [s["image_inputs"] for s in samples if s.get("image_inputs") is not None]
        if self.pack and self.position_fn is not None:  # e.g. mrope: each sample's own positions, restarting
            row["position_ids"] = torch.cat([self.position_fn(torch.tensor(s["input_ids"]), s.get("image_inputs") or {})
                                             for s in samples], dim=-1)
        return row

    def _with_pixels(self, samples: list[dict]) -> list[dict] | None:
        kept = []
        for s in samples:
            self.seen += 1
            if not s["images"]:
                kept.append(s)
                continue
            try:
                kept.append({**s, "image_inputs": self.image_loader(s["images"], s["grids"], s.get("source", "sample"))})
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
