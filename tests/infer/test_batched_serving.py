"""`mmtune serve` through transformers' continuous batching: requests in progress share forward
passes, answers are the ones each request gets alone (greedy equal to `generate`, seeded sampling
repeatable whatever else runs), and models the engine cannot run fall back to one at a time."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
import torch

from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.infer.batching import BatchedWorker, choose_worker, why_not_batched
from mmtune.infer.load import load_for_inference
from mmtune.infer.seeded_sampling import GREEDY_SEED, SeededChoice, gumbel_noise, noise_key
from mmtune.infer.server import ServerSettings, create_app
from mmtune.infer.worker import GenerationWorker
from mmtune.testing.serving import serve_in_thread
from mmtune.testing.runs import lora_run

PROMPTS = ["who are you?", "hello there", "what is the weather like", "tell me a story", "2 + 2 = ?",
           "where is the station", "good morning", "name three colours"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    # the trained tiny model with its LoRA adapter unmerged (the engine runs the adapter's layers)
    recipe, result = lora_run()
    adapter = checkpoint_to_hf(recipe, result.final_dir, tmp_path_factory.mktemp("batched") / "adapter")
    return load_for_inference(recipe.model.path, adapter=str(adapter), device="cpu")


def ask(url: str, prompt: str, temperature: float = 0.0, seed: int | None = None, max_tokens: int = 24) -> dict:
    body = {"messages": [{"role": "user", "content": prompt}], "temperature": temperature, "max_tokens": max_tokens}
    if seed is not None:
        body["seed"] = seed
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as r:
        return json.load(r)


def together(url: str, calls: list[tuple]) -> list[dict]:
    """All calls at once, from threads (each a (prompt, temperature, seed))."""
    out: list = [None] * len(calls)

    def run(i):
        out[i] = ask(url, *calls[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return out


def text(reply: dict) -> str:
    return reply["choices"][0]["message"]["content"]


def test_which_worker_serves(loaded):
    worker = choose_worker(loaded, 4)
    try:
        assert isinstance(worker, BatchedWorker) and "continuous batching" in worker.how
    finally:
        worker.stop()
    off = choose_worker(loaded, 4, batching="off")
    assert isinstance(off, GenerationWorker) and "--batching off" in off.how
    assert "vision-language" in why_not_batched(replace(loaded, vision=object()))


def test_requests_share_forward_passes_and_get_their_lone_answers(loaded):
    base = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model
    widths: list[int] = []

    def count(module, args, kwargs):  # sequences in this forward pass (the engine packs them, varlen)
        cu = kwargs.get("cu_seq_lens_q")
        widths.append(len(cu) - 1 if cu is not None else kwargs["input_ids"].shape[0])

    sequential = serve_in_thread(create_app(loaded, ServerSettings("t", batching="off")))
    try:  # the reference: generate(), one request at a time
        reference = {p: text(ask(sequential.url, p)) for p in PROMPTS}
    finally:
        sequential.stop()
    app = create_app(loaded, ServerSettings("t", max_concurrency=16))
    running = serve_in_thread(app)
    handle = base.register_forward_pre_hook(count, with_kwargs=True)
    try:
        assert app.state.worker.batched
        seeded_alone = {(p, s): text(ask(running.url, p, 1.5, s)) for p in PROMPTS[:4] for s in (1, 2)}
        widths.clear()
        calls = [(p, 0.0, None) for p in PROMPTS] + [(p, 1.5, s) for (p, s) in seeded_alone]
        replies = together(running.url, calls)
    finally:
        handle.remove()
        running.stop()
    greedy = {p: text(r) for (p, temperature, _), r in zip(calls, replies) if temperature == 0.0}
    assert all(greedy.values()) and greedy == reference, "batched greedy answers differ from generate()'s"
    sampled = {(p, seed): text(r) for (p, _, seed), r in zip(calls, replies) if seed is not None}
    assert sampled == seeded_alone, "a seeded answer changed when other requests shared its batch"
    assert len(set(seeded_alone.values())) > 1  # the seeds do choose the answers
    assert max(widths) >= 6, f"requests were not batched together: at most {max(widths)} per forward pass"
    assert all(r["usage"]["completion_tokens"] > 0 for r in replies)


def test_seeded_choice_samples_the_distribution():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    rows = 20000
    keys = torch.tensor([noise_key(seed, 0) for seed in range(rows)], dtype=torch.int32)
    scores = SeededChoice()(logits.expand(rows, -1).clone(), keys)
    assert torch.isfinite(scores).sum(dim=-1).eq(1).all()  # one token left per row
    freq = torch.bincount(scores.argmax(-1), minlength=5).float() / rows
    assert torch.allclose(freq, logits.softmax(-1), atol=0.015), (freq, logits.softmax(-1))
    greedy = SeededChoice()(logits.expand(3, -1).clone(), torch.tensor([noise_key(GREEDY_SEED, i) for i in range(3)],
                                                                         dtype=torch.int32))
    assert greedy.argmax(-1).tolist() == [0, 0, 0]
    # the noise is a function of the key: the same key, the same draw; another step, another draw
    assert torch.equal(gumbel_noise(keys[:2], 7), gumbel_noise(keys[:2], 7))
    assert noise_key(5, 0) != noise_key(5, 1) and noise_key(5, 0) != 0


def test_a_dead_engine_answers_errors_then_is_restarted(loaded):
    app = create_app(loaded, ServerSettings("t"))
    running = serve_in_thread(app)
    try:
        assert text(ask(running.url, "hello"))
        worker = app.state.worker
        first = worker._manager
        first.stop(block=True, hard_stop=True)  # as if the engine's thread had died
        statuses = []
        for _ in range(60):  # each request is answered (an error while it restarts), none hangs
            try:
                statuses.append(200 if text(ask(running.url, "hello")) is not None else 0)
            except urllib.error.HTTPError as e:
                assert "error" in json.loads(e.read())
                statuses.append(e.code)
            if statuses[-1] == 200:
                break
            time.sleep(0.5)
        assert statuses[-1] == 200 and set(statuses) <= {200, 500, 503}, statuses
        assert worker._manager is not first  # a fresh engine serves
        with urllib.request.urlopen(f"{running.url}/health", timeout=10) as r:
            assert json.load(r)["pending"] == 0  # nothing left hanging
    finally:
        running.stop()
