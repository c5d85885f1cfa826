"""Preprocessing throughput: mmtune tokenize+pack vs LLaMA-Factory's get_dataset, on N conversations.

The kit's 2,000 conversations (/tmp/peer/assets/data) are scaled up to --n (default 100,000): copy 0 is
the original, copy k>0 shuffles the words of every message with a seed fixed by (k, conversation), so
no two conversations are identical (no tokenizer or dedup cache can short-cut the work) while the
length distribution stays the kit's. Written once per N to /tmp/peer/prep_data/N/ as messages.jsonl
(mmtune) and sharegpt.json + dataset_info.json (LLaMA-Factory, dataset bench_sharegpt).

Runs (each its own process, alternated, even reps reversed; results appended to OUT/results.jsonl):
- mm:        mmtune's encode_datasets (what run_training uses: read, tokenize with data.num_proc
             processes, filter, save to the cache) + TrainRows(pack=True), fresh MMTUNE_CACHE
- mm_cached: the same again on the MMTUNE_CACHE the preceding mm run filled (cache hit)
- lf, lf_pack: LLaMA-Factory 0.9.5 get_dataset (load json, align, tokenize; packing=true packs),
             preprocessing_num_workers = --num-proc, fresh HF_DATASETS_CACHE, overwrite_cache
Tokenizer loading is timed apart and not part of prep s in either toolkit.

    .venv/bin/python bench/preprocess.py --reps 3                  # 100k conversations, 2 processes
    .venv/bin/python bench/preprocess.py --reps 1 --n 5000
    .venv/bin/python bench/preprocess.py --summarize OUT/results.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runner import emit, fmt, interleave, load_results, median, mmtune_rev, peak_rss_mb, ratio, run_and_summarize, run_one, table  # noqa: E402

KIT = Path("/work/shared/peer-bench")
ORDER = ["mm", "lf", "mm_cached", "lf_pack"]  # mm_cached must follow mm within a rep (see interleave_runs)


def scaled_data(assets: Path, n: int, root: Path) -> Path:
    """DIR with messages.jsonl, sharegpt.json and dataset_info.json holding n distinct conversations."""
    out = root / str(n)
    if (out / "dataset_info.json").exists():
        return out
    base = [json.loads(line)["messages"] for line in (assets / "data/messages.jsonl").read_text().splitlines()]
    seen, convs, retries = set(), [], 0
    for j in range(n):
        k, i = divmod(j, len(base))
        for attempt in range(20):
            if k == 0 and attempt == 0:
                msgs = base[i]
            else:
                rng = random.Random((k * 1_000_003 + i) * 31 + attempt)
                msgs = []
                for m in base[i]:
                    words = m["content"].split(" ")
                    rng.shuffle(words)
                    msgs.append({"role": m["role"], "content": " ".join(words)})
            key = json.dumps(msgs)
            if key not in seen:
                break
            retries += 1
        else:
            sys.exit(f"cannot make conversation {j} distinct")
        seen.add(key)
        convs.append(msgs)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    with open(tmp / "messages.jsonl", "w") as f:
        for msgs in convs:
            f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    share = [{"conversations": [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]} for m in msgs]}
             for msgs in convs]
    (tmp / "sharegpt.json").write_text(json.dumps(share, ensure_ascii=False))
    (tmp / "dataset_info.json").write_text(json.dumps({"bench_sharegpt": {
        "file_name": "sharegpt.json", "formatting": "sharegpt", "columns": {"messages": "conversations"}}}, indent=2))
    tmp.rename(out)
    print(f"wrote {n} distinct conversations to {out} ({retries} reshuffles to avoid duplicates)", flush=True)
    return out


def time_parts() -> dict:
    """Seconds spent in each step of encode_datasets (read, cache key, Dataset.from_list, map, filter,
    save/load of the cache), by wrapping the functions it looks up at call time."""
    import datasets

    import mmtune.data.dataset as ds

    parts: dict[str, float] = {}
    active = []  # outermost timed call only (Dataset.filter runs Dataset.map inside)

    def timed(owner, attr, label, static=False):
        fn = getattr(owner, attr)

        def wrapper(*a, **kw):
            if active:
                return fn(*a, **kw)
            active.append(label)
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[label] = parts.get(label, 0.0) + time.perf_counter() - t
                active.pop()

        setattr(owner, attr, staticmethod(wrapper) if static else wrapper)

    timed(ds, "load_conversations", "read")
    timed(ds, "cache_key", "cache_key")
    timed(datasets.Dataset, "from_list", "from_list", static=True)
    timed(datasets.Dataset, "map", "tokenize_map")
    timed(datasets.Dataset, "filter", "filter")
    timed(datasets.Dataset, "save_to_disk", "cache_save")
    timed(datasets, "load_from_disk", "cache_load")
    return parts


def mm_worker(data_dir: Path, assets: Path, num_proc: int) -> None:
    """mmtune's data path of run_training: encode_datasets (cache on, MMTUNE_CACHE) + TrainRows."""
    rev = mmtune_rev()  # before the heavy imports: a forked git would count the parent's RSS as its own
    t_start = time.time()
    from mmtune.config.load import validate_recipe
    from mmtune.data.dataset import TrainRows, encode_datasets
    from mmtune.models.load import load_tokenizer

    from _mmtune_train import recipe_dict

    raw = recipe_dict(str(assets), "full", True, 60)
    raw["data"].update(datasets=[{"path": str(data_dir / "messages.jsonl"), "format": "openai"}], num_proc=num_proc)
    recipe = validate_recipe(raw, where="bench preprocess")
    t = time.perf_counter()
    tok = load_tokenizer(recipe.model)
    tok_s = time.perf_counter() - t
    parts = time_parts()
    t = time.perf_counter()
    encoded, stats = encode_datasets(recipe.data, tok)
    encode_s = time.perf_counter() - t
    parts["stats_etc"] = encode_s - sum(parts.values())  # status/length columns, trained-token count
    t = time.perf_counter()
    rows = TrainRows(encoded, pack=True, max_length=recipe.data.max_length, seed=recipe.train.seed)
    pack_s = time.perf_counter() - t
    prep_s = encode_s + pack_s
    emit({"toolkit": "mmtune", "mmtune_rev": rev, "packing": True, "workers": num_proc, "conversations": stats.records,
          "samples": stats.samples, "rows": len(rows), "tokens": stats.tokens, "tokenizer_s": round(tok_s, 2),
          "encode_s": round(encode_s, 2), "pack_s": round(pack_s, 2), "prep_s": round(prep_s, 2),
          "conv_s": round(stats.records / prep_s, 1), "from_cache": stats.from_cache,
          "wall_s": round(time.time() - t_start, 2), **peak_rss_mb(),
          "encode_parts_s": {k: round(v, 2) for k, v in parts.items()}})


def run_all(a) -> Path:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = scaled_data(Path(a.peers) / "assets", a.n, Path(a.data_root))
    names = [n for n in ORDER if re.search(a.only, n)]
    if "mm_cached" in names and "mm" not in names:
        sys.exit("mm_cached reuses the cache of the mm run of the same rep: select mm too")
    print(f"runs: {names} x {a.reps} on {a.n} conversations; results -> {out / 'results.jsonl'}", flush=True)
    pairs = list(interleave(names, a.reps))
    for rep in range(1, a.reps + 1):  # keep mm before mm_cached in reversed reps
        idx = [i for i, (r, _) in enumerate(pairs) if r == rep]
        names_rep = [pairs[i][1] for i in idx]
        if "mm_cached" in names_rep and names_rep.index("mm_cached") < names_rep.index("mm"):
            names_rep.remove("mm")
            names_rep.insert(names_rep.index("mm_cached"), "mm")
            for i, n in zip(idx, names_rep):
                pairs[i] = (rep, n)
    for rep, name in pairs:
        env = {"CUDA_VISIBLE_DEVICES": "", "HF_DATASETS_CACHE": str(out / f"cache_{name}")}
        fresh = [out / f"cache_{name}", out / name]
        if name.startswith("mm"):
            env["MMTUNE_CACHE"] = str(out / "mmcache")
            if name == "mm":
                fresh.append(out / "mmcache")
            cmd = [sys.executable, Path(__file__).resolve(), "--worker", "--data", data, "--assets",
                   Path(a.peers) / "assets", "--num-proc", str(a.num_proc)]
        else:
            cmd = [Path(a.peers) / "lf/bin/python", Path(__file__).resolve().parent / "_lf_prep_worker.py",
                   a.kit / "lf_sft.yaml", data, out / name, str(a.num_proc)] + (["packing"] if name == "lf_pack" else [])
        res = run_one(name, cmd, rep=rep, out_dir=out, env=env, cwd=out, fresh=tuple(fresh))
        if res is not None and res.get("from_cache") != (name == "mm_cached"):
            print(f"WARNING: {name} from_cache={res.get('from_cache')}", flush=True)
    return out / "results.jsonl"


def summarize(path: Path) -> str:
    runs = load_results(path)
    names = [n for n in ORDER if n in runs] + [n for n in runs if n not in ORDER]
    header = ["run", "toolkit", "packing", "cache", "workers", "runs", "conversations", "rows",
              "prep s median (each run)", "conv/s", "of which pack s", "tokenizer load s", "process CPU s", "peak RSS MiB",
              "largest child RSS MiB"]
    rows = []
    for n in names:
        rs = runs[n]
        r0 = rs[0]
        each = ", ".join(f"{r['prep_s']:.2f}" for r in rs)
        rows.append([n, r0["toolkit"], str(r0["packing"]), "hit" if r0.get("from_cache") else "fresh",
                     str(r0["workers"]), str(len(rs)), str(r0["conversations"]), fmt(median(rs, "rows")),
                     f"{fmt(median(rs, 'prep_s'), 2)} ({each})", fmt(median(rs, "conv_s")),
                     fmt(median(rs, "pack_s"), 2), fmt(median(rs, "tokenizer_s"), 2), fmt(median(rs, "process_cpu_s"), 1),
                     fmt(median(rs, "peak_rss_mb")),
                     fmt(median(rs, "children_peak_rss_mb"))])
    text = [table(header, rows)]
    parts = [n for n in names if any(r.get("encode_parts_s") for r in runs[n])]
    if parts:
        keys = list(dict.fromkeys(k for n in parts for r in runs[n] for k in r.get("encode_parts_s", {})))
        text.append("\nmmtune encode_datasets, seconds per step (medians)\n")
        text.append(table(["run", *keys, "TrainRows (pack)"], [
            [n, *(fmt(median([r["encode_parts_s"] for r in runs[n]], k), 2) for k in keys), fmt(median(runs[n], "pack_s"), 2)]
            for n in parts]))
    pairs = [("mm", "lf"), ("mm", "lf_pack"), ("mm_cached", "mm"), ("mm_cached", "lf")]
    ratio_rows = [[f"{x} / {y}", ratio(median(runs[x], "prep_s"), median(runs[y], "prep_s")),
                   ratio(median(runs[x], "conv_s"), median(runs[y], "conv_s")),
                   ratio(median(runs[x], "process_cpu_s"), median(runs[y], "process_cpu_s")),
                   ratio(median(runs[x], "peak_rss_mb"), median(runs[y], "peak_rss_mb"))]
                  for x, y in pairs if x in runs and y in runs]
    if ratio_rows:
        text.append("\nRatios of medians (prep s, CPU s, RSS: < 1 is mmtune lower; conv/s: > 1 is mmtune faster)\n")
        text.append(table(["runs", "prep s", "conv/s", "process CPU s", "peak RSS"], ratio_rows))
    return "\n".join(text)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--n", type=int, default=100_000, help="conversations (the kit's 2,000 scaled up)")
    p.add_argument("--num-proc", type=int, default=2, help="mmtune data.num_proc and LF preprocessing_num_workers")
    p.add_argument("--only", default=".", help="regex over run names (mm, mm_cached, lf, lf_pack)")
    p.add_argument("--peers", default="/tmp/peer")
    p.add_argument("--kit", type=Path, default=KIT)
    p.add_argument("--data-root", default="/tmp/peer/prep_data")
    p.add_argument("--out", default=None, help="default /tmp/peer/bench_prep/DATE-TIME")
    p.add_argument("--summarize", metavar="FILE.jsonl")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--assets", type=Path, default=Path("/tmp/peer/assets"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        mm_worker(a.data, a.assets, a.num_proc)
    elif a.summarize:
        print(summarize(Path(a.summarize)))
    else:
        a.out = a.out or f"/tmp/peer/bench_prep/{time.strftime('%Y%m%d-%H%M%S')}"
        run_and_summarize(run_all, a, summarize)


if __name__ == "__main__":
    main()
