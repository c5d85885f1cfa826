"""A bounded load test of the server on loopback: many concurrent clients, no request lost, failed or
mixed up (each seeded answer equals the answer to the same prompt and seed asked alone). Uses bench/serve_load.py's driver;
run that script for the latency table (BENCHMARKS.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.infer.load import load_for_inference
from mmtune.infer.server import ServerSettings, create_app
from mmtune.testing.serving import serve_in_thread
from mmtune.testing.runs import lora_run

BENCH = Path(__file__).resolve().parents[2] / "bench" / "serve_load.py"
CLIENTS, REQUESTS, MAX_TOKENS = 32, 5, 8


def load_bench():
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    recipe, result = lora_run()
    adapter = checkpoint_to_hf(recipe, result.final_dir, tmp_path_factory.mktemp("load") / "adapter")
    loaded = load_for_inference(recipe.model.path, adapter=str(adapter), device="cpu")
    running = serve_in_thread(create_app(loaded, ServerSettings("tiny", max_concurrency=CLIENTS)))
    yield running
    running.stop()


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_concurrent_clients_get_their_own_answers(server, stream):
    bench = load_bench()
    report = bench.run_load(server.url, "tiny", clients=CLIENTS, requests=REQUESTS, max_tokens=MAX_TOKENS,
                            stream=stream, deadline_s=300)
    print("\n" + bench.table(report, CLIENTS, REQUESTS, stream))
    assert len(report.results) == CLIENTS * REQUESTS, "a client ran out of time"
    assert not report.failed, report.failed[:3]
    assert not report.wrong, [(r.variant, r.text, report.expected[r.variant]) for r in report.wrong[:3]]
    assert len(set(report.expected.values())) >= 4  # the requests have different answers, so a mix-up would show


def test_over_the_limit_is_429_not_a_crash(server):
    bench = load_bench()
    over = serve_in_thread(create_app(server_loaded(server), ServerSettings("tiny", max_concurrency=2)))
    try:
        report = bench.run_load(over.url, "tiny", clients=8, requests=2, max_tokens=MAX_TOKENS, deadline_s=120)
    finally:
        over.stop()
    statuses = {r.status for r in report.results}
    assert statuses <= {200, 429} and 429 in statuses and 200 in statuses
    assert not report.wrong  # whoever got in got the right answer


def server_loaded(running):
    """The model a running server was made with (its app keeps the worker, the worker the model)."""
    return running.server.config.app.state.worker.loaded
