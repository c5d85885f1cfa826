"""One thread owns the model: requests become jobs in a bounded FIFO queue, answered one at a time.

Why one thread: `generate` on one model is not something two requests should share (the seed is
global, memory doubles, outputs could interleave), and a single owner makes that impossible by
construction. The bound (`limit` jobs waiting or running) lets the server answer 429 at once
instead of piling up work. A job whose client left (its `control.cancel` is set) is skipped if
still waiting and stopped after the current token if running.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field

from jinja2 import TemplateError

from mmtune.data.conversation import Message
from mmtune.infer.api_schema import APIError
from mmtune.infer.engine import GenerationControl, GenerationSettings, context_length, generate_reply, stream_reply
from mmtune.infer.load import LoadedModel

log = logging.getLogger(__name__)


def model_takes_images(loaded: LoadedModel) -> bool:
    """A vision-language model (loaded with `vision` inputs) takes images: `Job.images`, in the order
    of the IMAGE_PLACEHOLDERs in the messages, go to the engine with it."""
    return getattr(loaded, "vision", None) is not None


@dataclass
class Job:
    messages: list[Message]
    settings: GenerationSettings
    stream: bool
    max_tokens_chosen: bool  # the client set max_tokens: over the context is an error, not a clip
    # The model inputs (prepare_inputs), tokenized by the server on its preparing thread, so that the
    # generation thread only generates.
    inputs: dict
    images: list = field(default_factory=list)
    tools: list[dict] | None = None  # tool definitions in the prompt (the reply is then read for tool calls)
    control: GenerationControl = field(default_factory=GenerationControl)
    # Events for the request handler, put from the worker thread through the handler's loop:
    # ("start", None) once the prompt fits, ("piece", str)*, then ("done", str) or ("error", exc).
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    loop: asyncio.AbstractEventLoop | None = None

    def emit(self, kind: str, value=None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the server's loop is closed: nobody is listening any more
            pass


def prepare_inputs(loaded: LoadedModel, messages: list[Message], images: list, tools: list[dict] | None = None) -> dict:
    """The model inputs of a request (its tokens, and image tensors), as generation takes them; a
    message list the model's chat template refuses is a 400."""
    from mmtune.errors import MmtuneError
    from mmtune.infer.engine import prompt_inputs

    try:
        return prompt_inputs(loaded.model, loaded.tokenizer, loaded.template, messages, images or None,
                             loaded.vision if images else None, tools)
    except (ValueError, TemplateError, MmtuneError) as e:
        raise APIError(400, f"the model's chat template cannot render these messages: {e}", param="messages",
                       code="invalid_value") from None


class TrimStream:
    """Streams pieces so that their concatenation equals the non-streamed, stripped answer."""

    def __init__(self):
        self.started, self.held = False, ""

    def feed(self, piece: str) -> str:
        if not self.started:
            piece = piece.lstrip()
            if not piece:
                return ""
            self.started = True
        text = self.held + piece
        body = text.rstrip()
        self.held = text[len(body):]  # trailing whitespace waits until more text follows it
        return body


def fit_context(job: Job, context: int | None, prompt_tokens: int) -> None:
    """Clip the job's answer length to the room the context leaves; a 400 when there is none, or when
    the client's own max_tokens does not fit."""
    if context is None:
        return
    room = context - prompt_tokens
    wanted = job.settings.max_new_tokens
    if room < 1 or (job.max_tokens_chosen and wanted > room):
        raise APIError(400, f"this model's maximum context length is {context} tokens; the messages take "
                            f"{prompt_tokens} tokens" + (f" and max_tokens asks for {wanted} more" if room >= 1 else ""),
                       param="messages", code="context_length_exceeded")
    job.settings.max_new_tokens = min(wanted, room)


class Slots:
    """At most `limit` jobs waiting or running, for both workers: `take` says whether one more may come
    in (when not, the server answers 429), `release` frees the slot of a job that was answered."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.used -= 1


class GenerationWorker:
    batched = False

    def __init__(self, loaded: LoadedModel, limit: int):
        self.loaded, self.limit = loaded, limit
        self.context = context_length(loaded.model)
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._slots = Slots(limit)
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        return self._slots.used

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mmtune-generate", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, job: Job) -> bool:
        """Queue `job`; False when `limit` jobs are already waiting or running (answer 429)."""
        if not self._slots.take():
            return False
        job.loop = job.loop or asyncio.get_running_loop()
        self._jobs.put(job)
        return True

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._run_job(job)

    def _run_job(self, job: Job) -> None:
        try:
            last = ("done", self._answer(job))
        except APIError as e:
            last = ("error", e)
        except Exception as e:  # noqa: BLE001 - a bug: log it, answer 500, keep serving
            log.exception("generation failed")
            last = ("error", e)
        finally:
            self._slots.release()
        # Only now the client hears back, so its next request finds the slot free (no false 429).
        job.emit(*last)

    def _answer(self, job: Job) -> str | None:
        """Run the job; the text for a non-streamed job (pieces were emitted for a streamed one)."""
        if job.control.cancel.is_set():  # its client left while it waited
            job.control.finish_reason = "cancelled"
            return ""
        m = self.loaded
        fit_context(job, self.context, int(job.inputs["input_ids"].shape[1]))
        job.emit("start")
        extra = {"images": job.images, "vision": m.vision} if job.images else {}  # text-only calls stay as they were
        extra["inputs"] = job.inputs
        if not job.stream:
            return generate_reply(m.model, m.tokenizer, m.template, job.messages, job.settings, control=job.control, **extra)
        trim = TrimStream()
        for piece in stream_reply(m.model, m.tokenizer, m.template, job.messages, job.settings, control=job.control, **extra):
            if text := trim.feed(piece):
                job.emit("piece", text)
        return None

