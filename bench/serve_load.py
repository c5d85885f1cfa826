"""Load test of `mmtune serve`: C concurrent clients x R requests each, on loopback only.

Each request is a (prompt, seed) pair answered with seeded sampling; every answer is checked against
the answer to the same pair asked once, alone, before the load. Different seeds give different
answers, so a lost, failed or mixed-up answer shows as an error, not just as a slow one.

Without --url it serves the model in this process twice over, one request at a time ("sequential",
`--batching off`) and through transformers' continuous batching ("batched", the default), and
measures both at 1, 8 and 32 clients, interleaved, for --rounds rounds; the table has the medians.

    .venv/bin/python bench/serve_load.py                      # trains the tiny demo model (~1 min), serves it
    .venv/bin/python bench/serve_load.py --model merged       # a model of yours, in this process
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000 --model-id merged --clients 8
    .venv/bin/python bench/serve_load.py --clients 1 8 32 --requests 4 --max-tokens 16 --stream

The test suite imports `run_load` from this file (tests/infer/test_server_load.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlparse

PROMPTS = ("who are you?", "hello", "what is your name?", "who made you?")
VARIANTS = tuple((p, seed) for seed, p in enumerate(PROMPTS * 2))  # 8 distinct (prompt, seed) requests


@dataclass
class Result:
    variant: tuple[str, int]  # (prompt, seed)
    status: int
    text: str
    latency_s: float
    first_token_s: float | None = None  # streaming only
    tokens: int = 0


@dataclass
class LoadReport:
    results: list[Result]
    wall_s: float
    expected: dict[tuple[str, int], str] = field(default_factory=dict)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status != 200]

    @property
    def wrong(self) -> list[Result]:
        return [r for r in self.results if r.status == 200 and r.text != self.expected[r.variant]]


def ask(url: str, model_id: str, variant: tuple[str, int], max_tokens: int, stream: bool, api_key: str | None = None,
        timeout: float = 300) -> Result:
    """One seeded chat completion over plain HTTP (stdlib only, so the numbers are the server's)."""
    assert urlparse(url).hostname in ("127.0.0.1", "localhost", "::1"), "load tests stay on loopback"
    prompt, seed = variant
    body = {"model": model_id, "messages": [{"role": "user", "content": prompt}], "temperature": 1.0, "seed": seed,
            "max_tokens": max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(), headers)
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if not stream:
                data = json.load(response)
                return Result(variant, 200, data["choices"][0]["message"]["content"], time.perf_counter() - start,
                              tokens=data["usage"]["completion_tokens"])
            text, first, tokens = "", None, 0
            for line in response:
                line = line.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices", []):
                    if piece := choice["delta"].get("content"):
                        first = first if first is not None else time.perf_counter() - start
                        text += piece
            return Result(variant, 200, text, time.perf_counter() - start, first, tokens)
    except urllib.error.HTTPError as e:
        return Result(variant, e.code, e.read().decode(errors="replace"), time.perf_counter() - start)


def run_load(url: str, model_id: str, *, clients: int = 32, requests: int = 5, max_tokens: int = 16,
             stream: bool = False, api_key: str | None = None, variants=VARIANTS, deadline_s: float = 600) -> LoadReport:
    """`clients` threads each send `requests` requests back to back; bounded in count and time."""
    expected = {v: ask(url, model_id, v, max_tokens, False, api_key).text for v in variants}
    stop_at = time.monotonic() + deadline_s
    lock, results = threading.Lock(), []

    def client(i: int) -> None:
        for j in range(requests):
            if time.monotonic() > stop_at:
                return
            r = ask(url, model_id, variants[(i + j) % len(variants)], max_tokens, stream, api_key)
            with lock:
                results.append(r)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return LoadReport(results, time.perf_counter() - start, expected)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else float("nan")


def table(report: LoadReport, clients: int, requests: int, stream: bool) -> str:
    ok = [r for r in report.results if r.status == 200]
    lat = [r.latency_s * 1000 for r in ok]
    rows = [("requests sent / answered", f"{clients * requests} / {len(ok)}"),
            ("failed (non-200) / wrong answer", f"{len(report.failed)} / {len(report.wrong)}"),
            ("latency p50 / p90 / p99 / max (ms)",
             " / ".join(f"{percentile(lat, q):.0f}" for q in (50, 90, 99, 100))),
            ("throughput (requests/s)", f"{len(ok) / report.wall_s:.2f}"),
            ("generated tokens/s", f"{sum(r.tokens for r in ok) / report.wall_s:.1f}")]
    if stream:
        first = [r.first_token_s * 1000 for r in ok if r.first_token_s is not None]
        rows.insert(3, ("time to first token p50 / p90 / p99 (ms)",
                        " / ".join(f"{percentile(first, q):.0f}" for q in (50, 90, 99))))
    width = max(len(k) for k, _ in rows)
    head = f"| {'mmtune serve, ' + ('stream' if stream else 'non-stream'):<{width}} | {clients} clients x {requests} requests |"
    return "\n".join([head, f"|{'-' * (width + 2)}|---|", *(f"| {k:<{width}} | {v} |" for k, v in rows)])


def _load_model(model: str | None, adapter: str | None):
    """MODEL (+ adapter) loaded in this process; by default the trained tiny demo model."""
    import tempfile
    from pathlib import Path

    import torch

    from mmtune.export.to_hf import checkpoint_to_hf
    from mmtune.infer.load import load_for_inference
    from mmtune.testing.runs import lora_run

    torch.set_num_threads(2)
    if model is None:  # a LoRA self-cognition run on the tiny model, exported like a user would
        recipe, result = lora_run()
        model = recipe.model.path
        adapter = str(checkpoint_to_hf(recipe, result.final_dir, Path(tempfile.mkdtemp()) / "adapter"))
    return load_for_inference(model, adapter=adapter, device="auto")


def _serve(loaded, engine: str, max_concurrency: int):
    """A server on `loaded` with the given engine: "sequential" (one request at a time, the server
    before batching) or "batched" (transformers' continuous batching)."""
    from mmtune.infer.batching import choose_worker
    from mmtune.infer.server import ServerSettings, create_app
    from mmtune.testing.serving import serve_in_thread

    worker = choose_worker(loaded, max_concurrency, "off" if engine == "sequential" else "auto")
    if engine == "batched" and not worker.batched:
        raise SystemExit(f"this model cannot be served batched: {worker.how}")
    return serve_in_thread(create_app(loaded, ServerSettings("tiny", max_concurrency=max_concurrency), worker))


@dataclass
class Measure:
    engine: str
    clients: int
    requests_per_s: float
    tokens_per_s: float
    p50_ms: float
    p90_ms: float
    bad: int  # failed or wrong answers


def measure(url: str, model_id: str, engine: str, clients: int, requests: int, max_tokens: int, stream: bool,
            api_key: str | None = None) -> Measure:
    report = run_load(url, model_id, clients=clients, requests=requests, max_tokens=max_tokens, stream=stream,
                      api_key=api_key)
    ok = [r for r in report.results if r.status == 200]
    lat = [r.latency_s * 1000 for r in ok]
    return Measure(engine, clients, len(ok) / report.wall_s, sum(r.tokens for r in ok) / report.wall_s,
                   percentile(lat, 50), percentile(lat, 90), len(report.failed) + len(report.wrong))


def comparison_table(runs: list[Measure]) -> str:
    """Medians over rounds, per (clients, engine); speed-up and p50 against the sequential engine and
    against a lone request of the same engine."""
    from statistics import median

    groups: dict[tuple[int, str], list[Measure]] = {}
    for m in runs:
        groups.setdefault((m.clients, m.engine), []).append(m)
    med = {k: Measure(k[1], k[0], *(median(getattr(m, f) for m in v) for f in
                                    ("requests_per_s", "tokens_per_s", "p50_ms", "p90_ms")), sum(m.bad for m in v))
           for k, v in groups.items()}
    lines = ["| clients | engine | requests/s | tokens/s | p50 ms | p90 ms | x sequential req/s | p50 / lone p50 | "
             "failed or wrong |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (clients, engine), m in sorted(med.items()):
        base = med.get((clients, "sequential"))
        lone = med.get((1, engine))
        speed = f"{m.requests_per_s / base.requests_per_s:.2f}" if base else "-"
        ratio = f"{m.p50_ms / lone.p50_ms:.2f}" if lone else "-"
        lines.append(f"| {clients} | {engine} | {m.requests_per_s:.1f} | {m.tokens_per_s:.0f} | {m.p50_ms:.0f} | "
                     f"{m.p90_ms:.0f} | {speed} | {ratio} | {m.bad} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server on loopback (its --max-concurrency must be >= the most clients)")
    p.add_argument("--model-id", default="tiny", help="model id the server at --url serves")
    p.add_argument("--model", help="without --url: serve this model here (default: train and serve the tiny demo model)")
    p.add_argument("--adapter", help="without --url: peft adapter to apply on --model")
    p.add_argument("--engines", nargs="+", default=["sequential", "batched"], choices=["sequential", "batched"],
                   help="without --url: the engines compared, interleaved (default: both)")
    p.add_argument("--api-key")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every (clients, engine) pair; medians reported")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--stream", action="store_true")
    args = p.parse_args(argv)
    # As `mmtune serve` does (mmtune/cli/serve.py): OpenMP threads that sleep rather than spin; torch is
    # imported only after this line, so it takes effect.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    loaded = None if args.url else _load_model(args.model, args.adapter)
    engines = ["server"] if args.url else args.engines
    runs: list[Measure] = []
    for round_ in range(args.rounds):
        for clients in args.clients:
            for engine in engines:  # interleaved: load from other jobs hits both alike
                running = None if args.url else _serve(loaded, engine, max(args.clients))
                url, model_id = (args.url, args.model_id) if args.url else (running.url, "tiny")
                try:
                    runs.append(measure(url, model_id, engine, clients, args.requests, args.max_tokens, args.stream,
                                        args.api_key))
                finally:
                    if running:
                        running.stop()
                m = runs[-1]
                print(f"round {round_ + 1}: {clients:>3} clients, {engine:<10} {m.requests_per_s:6.1f} req/s "
                      f"p50 {m.p50_ms:.0f} ms", file=sys.stderr, flush=True)
    print(f"{'stream' if args.stream else 'non-stream'}, {args.max_tokens} max tokens, {args.requests} requests per "
          f"client, medians of {args.rounds} rounds")
    print(comparison_table(runs))
    return 1 if any(m.bad for m in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
