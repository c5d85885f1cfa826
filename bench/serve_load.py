"""Load test of `mmtune serve`: C concurrent clients x R requests each, on loopback only.

Each request is a (prompt, seed) pair answered with seeded sampling; every answer is checked against
the answer to the same pair asked once, alone, before the load. Different seeds give different
answers, so a lost, failed or mixed-up answer shows as an error, not just as a slow one.

    .venv/bin/python bench/serve_load.py                      # trains the tiny demo model (~2 min), serves it
    .venv/bin/python bench/serve_load.py --model merged       # serves a model of yours in this process
    .venv/bin/python bench/serve_load.py --url http://127.0.0.1:8000 --model-id merged
    .venv/bin/python bench/serve_load.py --clients 32 --requests 5 --max-tokens 16 --stream

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


def _local_server(model: str | None, adapter: str | None, max_concurrency: int):
    """MODEL (+ adapter) served in this process; by default the trained tiny demo model."""
    import tempfile
    from pathlib import Path

    import torch

    from mmtune.export.to_hf import checkpoint_to_hf
    from mmtune.infer.load import load_for_inference
    from mmtune.infer.server import ServerSettings, create_app, serve_in_thread
    from mmtune.testing.runs import lora_run

    torch.set_num_threads(2)
    if model is None:  # a LoRA self-cognition run on the tiny model, exported like a user would
        recipe, result = lora_run()
        model = recipe.model.path
        adapter = str(checkpoint_to_hf(recipe, result.final_dir, Path(tempfile.mkdtemp()) / "adapter"))
    loaded = load_for_inference(model, adapter=adapter, device="auto")
    return serve_in_thread(create_app(loaded, ServerSettings("tiny", max_concurrency=max_concurrency)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running server on loopback (its --max-concurrency must be >= --clients)")
    p.add_argument("--model-id", default="tiny", help="model id the server at --url serves")
    p.add_argument("--model", help="without --url: serve this model here (default: train and serve the tiny demo model)")
    p.add_argument("--adapter", help="without --url: peft adapter to apply on --model")
    p.add_argument("--api-key")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=5, help="requests per client")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--stream", action="store_true")
    args = p.parse_args(argv)
    # As `mmtune serve` does (mmtune/cli/serve.py): OpenMP threads that sleep rather than spin; torch is
    # imported only after this line, so it takes effect.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    running = None if args.url else _local_server(args.model, args.adapter, max_concurrency=args.clients)
    url, model_id = (args.url, args.model_id) if args.url else (running.url, "tiny")
    try:
        report = run_load(url, model_id, clients=args.clients, requests=args.requests,
                          max_tokens=args.max_tokens, stream=args.stream, api_key=args.api_key)
    finally:
        if running:
            running.stop()
    print(table(report, args.clients, args.requests, args.stream))
    return 1 if report.failed or report.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
