"""Batched generation for `mmtune serve`: transformers' continuous batching engine behind the same
job interface as the one-at-a-time GenerationWorker (worker.py).

The engine (paged KV cache, requests joining and leaving a running batch) is transformers'; this
module only feeds it the server's jobs and turns its token outputs back into the server's events:
stop strings, the end-of-turn cut, streaming pieces, usage counts and finish reasons, a client that
left. One dispatcher thread reads the engine's outputs (public `get_result`), decodes them and
cancels requests whose client left or whose stop string appeared.

Not every model can run there: `open_batched` says why not (a vision-language model needs its
image tensors in the forward; a model class without the attention interface) and checks on a probe
prompt that the batched greedy answer equals `generate`'s before serving with it; the server then
falls back to the one-at-a-time worker and says which one it uses.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
from dataclasses import dataclass

import torch

from mmtune.infer.api_schema import APIError
from mmtune.infer.engine import _cut_at_stop, _decode, _stop_prefix_len, context_length, stop_token_ids
from mmtune.infer.load import LoadedModel
from mmtune.infer.seeded_sampling import NO_TOP_K, request_kwargs, sampling_top_k, seeded_processors
from mmtune.infer.worker import Job, Slots, TrimStream, fit_context
from mmtune.models.families import base_model  # under a peft wrapper: its LoRA layers are in place

log = logging.getLogger(__name__)

PAGE_SIZE = 64  # tokens per KV-cache page: small pages waste little on short chat answers
CPU_KV_CACHE_BYTES = 2 * 2**30  # on CPU the engine would size its cache from total RAM; this is ours
PROBE_TOKENS = 6


class CannotBatch(Exception):
    """Why this model is served one request at a time."""


def why_not_batched(loaded: LoadedModel) -> str | None:
    """None when the model can be served through continuous batching, else the reason."""
    model = base_model(loaded.model)
    if getattr(loaded, "vision", None) is not None:  # transformers' engine runs LLMs only (as `transformers serve`)
        return "a vision-language model: transformers' continuous batching takes text models only"
    if not hasattr(model, "init_continuous_batching"):
        return f"{type(model).__name__} has no continuous batching"
    if not getattr(model, "_supports_attention_backend", False):
        return f"{type(model).__name__} does not use transformers' attention interface (paged attention)"
    return None


def kv_bytes_per_token(config) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", 1)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return 2 * text.num_hidden_layers * kv_heads * head_dim


def engine_config(model, limit: int):
    """The engine's settings: on a GPU it sizes its cache from free memory; on CPU (where it would
    take a share of all RAM) the cache holds `limit` full contexts, within CPU_KV_CACHE_BYTES but
    never less than one full context."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    if model.device.type != "cpu":  # at most `limit` rows of vocabulary-wide sampling tensors per step
        return ContinuousBatchingConfig(max_memory_percent=0.8, max_requests_per_batch=limit)
    context = context_length(model) or 4096
    per_token = kv_bytes_per_token(model.config) * model.dtype.itemsize
    tokens = max(context, min(limit * context, CPU_KV_CACHE_BYTES // max(per_token, 1)))
    return ContinuousBatchingConfig(page_size=PAGE_SIZE, num_blocks=math.ceil(tokens / PAGE_SIZE) + limit,
                                    max_batch_tokens=min(8192, max(2048, limit * 256)),
                                    max_requests_per_batch=limit)


@dataclass
class _Running:
    job: Job
    streaming: bool
    trim: TrimStream
    emitted: int = 0  # characters of the (stop-cut) text sent as pieces


class BatchedWorker:
    """`start`, `stop`, `submit(job)`, `pending` and `context`, as GenerationWorker."""

    batched = True

    def __init__(self, loaded: LoadedModel, limit: int):
        self.loaded, self.limit = loaded, limit
        self.model = base_model(loaded.model)
        self.context = context_length(self.model)
        self.eos_ids = stop_token_ids(loaded.tokenizer, loaded.template, loaded.model) or [-1]
        self.top_k = sampling_top_k(loaded.model)  # as generate() samples
        self._manager = None
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()  # guards _running
        self._slots = Slots(limit)
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def pending(self) -> int:
        return self._slots.used

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self, dispatch: bool = True) -> None:
        if self._manager is not None:
            if dispatch and self._thread is None:
                self._start_dispatch()
            return
        self._manager = self._new_engine()
        if dispatch:
            self._start_dispatch()

    def _new_engine(self):
        from transformers import GenerationConfig

        # do_sample off: the seeded processors already leave one finite score per row
        config = GenerationConfig(do_sample=False, max_new_tokens=256, eos_token_id=self.eos_ids)
        self.model.eval()
        manager = self.model.init_continuous_batching(generation_config=config,
                                                      continuous_batching_config=engine_config(self.model, self.limit))
        manager.logit_processor = seeded_processors()
        manager.start()
        return manager

    def _restart_engine(self) -> None:
        """After the engine's thread died (its error is logged by transformers): a fresh one, so one
        bad moment (an out-of-memory, say) does not leave the server answering 503 for good."""
        log.error("the batched generation engine stopped; starting it again")
        try:
            self._manager.stop(block=True, timeout=10)
        except Exception:  # noqa: BLE001 - it is gone either way
            pass
        try:
            self._manager = self._new_engine()
        except Exception:  # noqa: BLE001 - try again on the next round
            log.exception("restarting the generation engine failed")
            self._stopping.wait(1.0)

    def _start_dispatch(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._dispatch, name="mmtune-batch-results", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._manager is None:
            return
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._manager.stop(block=True, timeout=30, hard_stop=True)
        self._manager, self._thread = None, None
        self._fail_all(APIError(503, "the server is shutting down", type="server_error"))

    # -- requests -----------------------------------------------------------------------------------

    def submit(self, job: Job) -> bool:
        """Queue `job`; False when `limit` jobs are already waiting or running (answer 429)."""
        if not self._slots.take():
            return False
        job.loop = job.loop or asyncio.get_running_loop()
        try:
            self._add(job)
        except APIError as e:  # raised before the job joined _running
            self._slots.release()
            job.emit("error", e)
        except Exception as e:  # noqa: BLE001 - a bug: log it, answer 500, keep serving
            log.exception("could not queue a generation")
            self._slots.release()
            job.emit("error", e)
        return True

    def _add(self, job: Job) -> None:
        ids = job.inputs["input_ids"][0].tolist()
        job.control.prompt_tokens = len(ids)
        fit_context(job, self.context, len(ids))
        s = job.settings
        streaming = job.stream or bool(s.stop)  # a stop string is looked for as tokens come
        request_id = f"mmtune-{next(self._ids)}"
        run = _Running(job, streaming, TrimStream())
        with self._lock:
            self._running[request_id] = run
        job.emit("start")
        # from here on the job is answered by _close, once, whatever happens
        refused = APIError(503, "the generation engine is not accepting requests", type="server_error")
        try:
            added = self._manager.add_request(ids, request_id=request_id, max_new_tokens=s.max_new_tokens,
                                              streaming=streaming, eos_token_id=self.eos_ids,
                                              **request_kwargs(s.temperature, s.top_p, s.seed, self.top_k))
        except Exception:  # noqa: BLE001 - logged; the client gets a 503
            log.exception("the generation engine refused a request")
            added = None
        if added is None or not self._manager.is_running():
            self._close(request_id, run, ("error", refused))

    # -- results (dispatcher thread) ----------------------------------------------------------------

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            try:
                self._cancel_abandoned()
                output = self._manager.get_result(timeout=0.05)
                if output is not None:
                    self._deliver_or_fail(output)
                elif not self._manager.is_running() and not self._stopping.is_set():  # the engine died
                    self._fail_all(RuntimeError("the generation engine stopped"))
                    self._restart_engine()
            except Exception:  # noqa: BLE001 - keep reading: one bad output must not stall every client
                log.exception("reading a batched generation result failed")

    def _deliver_or_fail(self, output) -> None:
        try:
            self._deliver(output)
        except Exception as e:  # noqa: BLE001 - this request gets a 500, the others go on
            log.exception("turning a batched generation result into text failed")
            with self._lock:
                run = self._running.get(output.request_id)
            if run is not None:
                self._manager.cancel_request(output.request_id)
                self._close(output.request_id, run, ("error", e))

    def _fail_all(self, error: Exception) -> None:
        with self._lock:
            running = list(self._running.items())
        for request_id, run in running:
            self._close(request_id, run, ("error", error))

    def _cancel_abandoned(self) -> None:
        with self._lock:
            gone = [(rid, run) for rid, run in self._running.items() if run.job.control.cancel.is_set()]
        for request_id, run in gone:
            self._manager.cancel_request(request_id)
            run.job.control.finish_reason = "cancelled"
            self._close(request_id, run, ("done", "" if not run.job.stream else None))

    def _deliver(self, output) -> None:
        from transformers.generation.continuous_batching.requests import RequestStatus

        with self._lock:
            run = self._running.get(output.request_id)
        if run is None:  # cancelled or stopped meanwhile
            return
        job, s = run.job, run.job.settings
        if output.status == RequestStatus.FAILED:
            log.error("batched generation failed: %s", output.error)
            self._close(output.request_id, run, ("error", RuntimeError(output.error or "generation failed")))
            return
        tokens = output.generated_tokens
        job.control.completion_tokens = len(tokens)
        text, stopped = _cut_at_stop(_decode(self.loaded.tokenizer, self.loaded.template, tokens, s), s.stop)
        finished = output.is_finished() or stopped
        if job.stream:
            self._stream(run, text, stopped, finished)
        if not finished:
            return
        if stopped:
            self._manager.cancel_request(output.request_id)  # no more tokens past the stop string
        job.control.finish_reason = self._finish_reason(tokens, s.max_new_tokens, stopped)
        self._close(output.request_id, run, ("done", None if job.stream else text.strip()))

    def _stream(self, run: _Running, text: str, stopped: bool, finished: bool) -> None:
        """Send what is settled: not a possible start of a stop string, nor a half-decoded character."""
        ready = len(text) if (stopped or finished) else len(text) - _stop_prefix_len(text, run.job.settings.stop)
        while ready > run.emitted and text[ready - 1] == "\ufffd" and not finished:
            ready -= 1
        if ready > run.emitted:
            if piece := run.trim.feed(text[run.emitted:ready]):
                run.job.emit("piece", piece)
            run.emitted = ready

    def _finish_reason(self, tokens: list[int], max_new_tokens: int, stopped: bool) -> str:
        if not stopped and len(tokens) >= max_new_tokens and (not tokens or tokens[-1] not in self.eos_ids):
            return "length"
        return "stop"

    def _close(self, request_id: str, run: _Running, last: tuple) -> None:
        with self._lock:
            if self._running.pop(request_id, None) is None:  # answered already
                return
        self._slots.release()
        run.job.emit(*last)  # only now the client hears back, so its next request finds the slot free


def open_batched(loaded: LoadedModel, limit: int) -> BatchedWorker:
    """A started BatchedWorker, after a probe prompt's greedy answer through it equalled `generate`'s;
    CannotBatch (with the reason) otherwise."""
    reason = why_not_batched(loaded)
    if reason:
        raise CannotBatch(reason)
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = tokenizer("Hello, how are you today?", add_special_tokens=False).input_ids or [0]
    device = base_model(model).device
    with torch.no_grad():  # before the engine switches the attention implementation
        expected = model.generate(input_ids=torch.tensor([ids], device=device),
                                  attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                                  max_new_tokens=PROBE_TOKENS, do_sample=False, eos_token_id=None,
                                  pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
    worker = BatchedWorker(loaded, limit)
    try:
        worker.start(dispatch=False)  # the probe's result is read here, not by the dispatcher
        got = worker._manager.add_request(ids, request_id="mmtune-probe", max_new_tokens=PROBE_TOKENS,
                                          eos_token_id=-1, **request_kwargs(0.0, 1.0, None, NO_TOP_K))
        output = worker._manager.get_result(got, timeout=120) if got else None
    except Exception as e:  # noqa: BLE001 - any failure of the engine on this model means: do not use it
        worker.stop()
        raise CannotBatch(f"continuous batching failed on this model ({type(e).__name__}: {e})") from None
    if output is None or output.generated_tokens != expected:
        worker.stop()
        raise CannotBatch("its batched answer to a probe prompt differed from generate's")
    worker.start()
    return worker


def choose_worker(loaded: LoadedModel, limit: int, batching: str = "auto"):
    """The batched worker where the model allows it (batching "auto"), else the one-at-a-time one;
    its `how` says which and why, for the startup log."""
    from mmtune.infer.worker import GenerationWorker

    if batching == "auto":
        try:
            worker = open_batched(loaded, limit)
            worker.how = "batched (transformers continuous batching)"
            return worker
        except CannotBatch as e:
            reason = str(e)
    else:
        reason = "--batching off"
    worker = GenerationWorker(loaded, limit)
    worker.how = f"one request at a time ({reason})"
    return worker
