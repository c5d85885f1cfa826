"""An OpenAI-compatible HTTP server for one model: /v1/chat/completions, /v1/models, /health, a web UI.

Requests are parsed and checked here (api_schema.py), answered by the one generation thread
(worker.py) that calls the shared engine, and written back as OpenAI JSON or server-sent events.
Every error is OpenAI's `{"error": {...}}` shape, so the official clients raise their usual types.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmtune.data.conversation import IMAGE_PLACEHOLDER
from mmtune.data.tool_parse import ParsedReply, parse_reply
from mmtune.data.tool_parse import tool_style as tool_style_of
from mmtune.infer.api_schema import (APIError, image_part_count, parse_request, to_messages, to_settings,
                                     tool_definitions)
from mmtune.infer.load import LoadedModel
from mmtune.infer.batching import choose_worker
from mmtune.infer.worker import Job, model_takes_images, prepare_inputs

log = logging.getLogger(__name__)


@dataclass
class ServerSettings:
    model_id: str
    api_key: str | None = None
    max_concurrency: int = 8  # requests waiting or generating; more get 429
    default_max_tokens: int = 512  # when a request gives no max_tokens (clipped to the context)
    max_image_bytes: int = 20 * 2**20
    max_image_pixels: int = 50_000_000  # per image, read from its header before decoding
    max_images: int = 8  # per request, counted before any is decoded
    max_body_bytes: int = 64 * 2**20
    body_timeout_s: float = 60.0  # a client that sends its body slower than this gets 408 (slow-loris)
    header_timeout_s: float = 30.0  # and its request headers: the connection is closed
    ui: bool = False
    # Host header values accepted (no port); None: any. A server on 127.0.0.1 accepts only local names,
    # so a web page on another site cannot reach it through DNS rebinding.
    allowed_hosts: tuple[str, ...] | None = None
    allow_origins: tuple[str, ...] = ()  # CORS: browser pages on these origins may call the API
    batching: str = "auto"  # "auto": continuous batching where the model allows it; "off": one at a time


class ClientGone(Exception):
    """The client closed the connection while its request waited."""


def create_app(loaded: LoadedModel, settings: ServerSettings, worker=None) -> FastAPI:
    """`worker`: a BatchedWorker or GenerationWorker (default: choose_worker's pick for the model)."""
    if worker is None:
        worker = choose_worker(loaded, settings.max_concurrency, settings.batching)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        worker.start()
        yield
        worker.stop()
        preparer.shutdown(wait=False)

    app = FastAPI(title="mmtune", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.worker, app.state.settings = worker, settings
    vision = model_takes_images(loaded)
    tool_style = tool_style_of(loaded.template)  # how the model writes tool calls (None: it cannot)
    # Decoding images and tokenizing happen before a request joins the generation queue, on a thread of
    # their own (the generation thread only generates, so a long prompt never holds up the others),
    # each request holding a slot of the same limit: no more requests are prepared at once than may
    # be in progress.
    prepare_slots = asyncio.Semaphore(settings.max_concurrency)
    preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmtune-prepare")

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    if settings.allowed_hosts is not None:
        @app.middleware("http")
        async def check_host(request: Request, call_next):
            host = host_name(request.headers.get("host", ""))
            if host not in settings.allowed_hosts:
                error = APIError(400, f"the Host header {host!r} is not a name of this server", code="invalid_host")
                return JSONResponse(error.body(), status_code=400)
            return await call_next(request)

    if settings.allow_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.allow_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):  # 404, 405 in OpenAI's shape too
        return JSONResponse(APIError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code)

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise APIError(401, "missing or incorrect API key (send 'Authorization: Bearer KEY')", code="invalid_api_key")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": settings.model_id, "pending": worker.pending}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [_model_card(settings.model_id)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request):
        authorize(request)
        if model_id != settings.model_id:
            raise APIError(404, f"the model '{model_id}' does not exist", param="model", code="model_not_found")
        return _model_card(settings.model_id)

    def prepare(req, tools):
        """(messages, images, model inputs) of a request: images decoded, the prompt tokenized."""
        messages, images = to_messages(req, settings.max_image_bytes, settings.max_image_pixels)
        if vision and sum(m.content.count(IMAGE_PLACEHOLDER) for m in messages) != len(images):
            raise APIError(400, f"message text may not contain '{IMAGE_PLACEHOLDER}' (send images as image_url parts)",
                           param="messages", code="invalid_value")
        return messages, images, prepare_inputs(loaded, messages, images, tools)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            # a browser form or text/plain post from another site cannot be a "simple" cross-origin request here
            raise APIError(415, "send the request as JSON (Content-Type: application/json)", code="invalid_content_type")
        body = await _read_json(request, settings.max_body_bytes, settings.body_timeout_s)
        req = parse_request(body)
        if req.model not in (None, "", settings.model_id):
            raise APIError(404, f"the model '{req.model}' does not exist (this server serves '{settings.model_id}')",
                           param="model", code="model_not_found")
        n_images = image_part_count(req)  # checked before any image is decoded
        if n_images and not vision:
            raise APIError(400, f"the model '{settings.model_id}' has no vision input: send text only",
                           param="messages", code="image_input_not_supported")
        if n_images > settings.max_images:
            raise APIError(400, f"{n_images} images in one request; this server takes at most {settings.max_images}",
                           param="messages", code="too_many_images")
        tools = tool_definitions(req)
        if tools and tool_style is None:
            raise APIError(400, f"the model's chat template ({loaded.template.name}) writes no tool calls this server "
                                "can read", param="tools", code="tools_not_supported")
        too_long_for(req, worker.context)  # before any tokenizer sees a huge prompt
        if prepare_slots.locked():
            raise busy(settings)
        async with prepare_slots:
            messages, images, inputs = await asyncio.get_running_loop().run_in_executor(
                preparer, prepare, req, tools)
        gen, chosen = to_settings(req, settings.default_max_tokens)
        if tools:  # the whole reply is read for calls (their markers may be special tokens)
            gen.keep_special_tokens = True
        job = Job(messages, gen, stream=req.stream and not tools, max_tokens_chosen=chosen, images=images,
                  inputs=inputs, tools=tools)
        if not worker.submit(job):
            raise busy(settings)
        reply = _Reply(job, settings.model_id)
        left = asyncio.ensure_future(_client_left(request.receive))
        try:
            kind, value = await _next_event(job, left)  # waits in the queue until the prompt is checked
            if kind == "error":
                raise _as_api_error(value)
            if not job.stream:
                kind, value = await _next_event(job, left)
                if kind == "error":
                    raise _as_api_error(value)
                parsed = parse_reply(value, tool_style) if tools else None
                if req.stream:  # with tools: the finished reply, sent as OpenAI's stream of deltas
                    include_usage = bool(req.stream_options and req.stream_options.include_usage)
                    return StreamingResponse(reply.buffered_events(parsed, include_usage),
                                             media_type="text/event-stream")
                return JSONResponse(reply.completion(value, parsed))
        except ClientGone:
            job.control.cancel.set()
            return JSONResponse({}, status_code=499)  # nobody reads it
        finally:
            left.cancel()  # a streamed answer watches for the client itself (StreamingResponse)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return _JobStream(reply.events(include_usage), job)

    if settings.ui:
        _add_ui(app, settings, vision)
    app.openapi = lambda: _openapi(app)
    return app


ERROR_STATUSES = {"400": "invalid request (the message and `param` say which field)", "401": "missing or wrong API key",
                  "404": "unknown model", "408": "the body arrived too slowly", "413": "body or image over the limit",
                  "415": "not sent as application/json", "429": "busy: retry after `Retry-After` seconds",
                  "500": "generation failed"}


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema, with the chat request and its error answers described (the route reads the
    body itself, so FastAPI cannot see them)."""
    from fastapi.openapi.utils import get_openapi

    from mmtune.infer.api_schema import ChatRequest

    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title="mmtune", version="1", routes=app.routes,
                         description="An OpenAI-compatible chat-completions server for one model")
    request = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(request.pop("$defs", {}))
    components["ChatRequest"] = request
    components["Error"] = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    chat["requestBody"] = {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}}}
    chat["responses"] = {"200": {"description": "a chat.completion object, or with `stream` server-sent "
                                                "chat.completion.chunk events ending in `data: [DONE]`"},
                         **{code: {"description": text, **error} for code, text in ERROR_STATUSES.items()}}
    app.openapi_schema = schema
    return schema


def busy(settings: ServerSettings) -> APIError:
    return APIError(429, f"the server is busy ({settings.max_concurrency} requests in progress); retry shortly",
                    type="rate_limit_error", code="server_busy", headers={"Retry-After": "1"})


MAX_CHARS_PER_TOKEN = 32  # more than any tokenizer averages: a longer text cannot fit, whatever it says


def too_long_for(req, context: int | None) -> None:
    """A prompt with more characters than the context could hold tokens is refused before it is
    tokenized (tokenizing megabytes would hold up the one generation thread)."""
    if context is None:
        return
    chars = sum(len(part.text or "") for m in req.messages for part in m.content)
    if chars > context * MAX_CHARS_PER_TOKEN:
        raise APIError(400, f"this model's maximum context length is {context} tokens; the messages hold {chars:,} "
                            "characters, far more than that", param="messages", code="context_length_exceeded")


def _model_card(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "mmtune"}


async def _read_json(request: Request, limit: int, timeout_s: float = 60.0):
    if int(request.headers.get("content-length") or 0) > limit:
        raise APIError(413, f"request body is larger than the server's limit of {limit // 2**20} MiB", code="body_too_large")
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():  # counted as it arrives: a chunked upload cannot dodge the limit
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"request body is larger than the server's limit of {limit // 2**20} MiB",
                               code="body_too_large")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout_s:g} s", code="request_timeout") from None
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the request body is nested too deeply", code="invalid_json") from None
    except ValueError as e:  # an integer past Python's digit limit
        raise APIError(400, f"the request body holds a number too long to read: {e}", code="invalid_json") from None


def host_name(header: str) -> str:
    """The name in a Host header, without the port: "127.0.0.1:8000" -> "127.0.0.1", "[::1]:80" -> "::1"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """An address only this machine reaches (127.x, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def allowed_hosts_for(bind: str) -> tuple[str, ...] | None:
    """The Host names a server bound to `bind` answers: only local names for a loopback address (a web
    page elsewhere cannot reach it by DNS rebinding); any for other addresses, which other machines
    reach by names the server cannot know (protect those with --api-key)."""
    if is_loopback(bind):
        return tuple(dict.fromkeys((bind, *LOCAL_HOSTS)))
    return None


async def _client_left(receive) -> None:
    """Returns when the client disconnects. The body is read, so nothing else arrives before that;
    waiting on this (not polling) keeps the event loop quiet while the model works."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _next_event(job: Job, left: asyncio.Future) -> tuple[str, object]:
    """The job's next event; ClientGone if the client disconnects first."""
    getter = asyncio.ensure_future(job.events.get())
    done, _ = await asyncio.wait({getter, left}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    raise ClientGone


def _as_api_error(exc) -> APIError:
    return exc if isinstance(exc, APIError) else APIError(500, f"generation failed: {exc}", type="server_error")


class _Reply:
    """OpenAI's response objects for one job."""

    def __init__(self, job: Job, model_id: str):
        self.job, self.model_id = job, model_id
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model_id, "system_fingerprint": None}

    def _finish(self) -> str:
        return "length" if self.job.control.finish_reason == "length" else "stop"

    def usage(self) -> dict:
        c = self.job.control
        return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                "total_tokens": c.prompt_tokens + c.completion_tokens}

    def completion(self, text: str, parsed: ParsedReply | None = None) -> dict:
        message = {"role": "assistant", "content": text}
        finish = self._finish()
        if parsed is not None:
            message["content"] = parsed.content if (parsed.content or not parsed.calls) else None
            if parsed.calls:
                message["tool_calls"] = tool_calls_out(parsed)
                finish = "tool_calls"
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        return {**self._head("chat.completion"), "choices": [choice], "usage": self.usage()}

    async def buffered_events(self, parsed: ParsedReply, include_usage: bool):
        """A finished reply with tools as OpenAI streams it: role, content, each call's delta, finish."""
        yield self._chunk({"role": "assistant", "content": ""})
        if parsed.content:
            yield self._chunk({"content": parsed.content})
        for k, call in enumerate(tool_calls_out(parsed)):
            yield self._chunk({"tool_calls": [{"index": k, **call}]})
        yield self._chunk({}, "tool_calls" if parsed.calls else self._finish())
        if include_usage:
            yield _sse({**self._head("chat.completion.chunk"), "choices": [], "usage": self.usage()})
        yield "data: [DONE]\n\n"

    def _chunk(self, delta: dict, finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse({**self._head("chat.completion.chunk"), "choices": [choice]})

    async def events(self, include_usage: bool):
        yield self._chunk({"role": "assistant", "content": ""})
        while True:
            kind, value = await self.job.events.get()
            if kind == "piece":
                yield self._chunk({"content": value})
            elif kind == "done":
                break
            else:  # headers are sent: report the failure inside the stream, as OpenAI does
                yield _sse(_as_api_error(value).body())
                yield "data: [DONE]\n\n"
                return
        yield self._chunk({}, self._finish())
        if include_usage:
            yield _sse({**self._head("chat.completion.chunk"), "choices": [], "usage": self.usage()})
        yield "data: [DONE]\n\n"


def tool_calls_out(parsed: ParsedReply) -> list[dict]:
    """The calls in OpenAI's shape: ids, and arguments as a JSON string."""
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in parsed.calls]


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class _JobStream(StreamingResponse):
    """An SSE response that cancels its job however the response ends (done, error, client gone)."""

    def __init__(self, content, job: Job):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job = job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.control.cancel.set()  # a no-op when the job already finished


# The chat page loads only its own files, and images only from data: URLs (what the user attached): even
# markup that got past the sanitizer could not run script or send the conversation elsewhere.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _add_ui(app: FastAPI, settings: ServerSettings, vision: bool) -> None:
    from fastapi.staticfiles import StaticFiles

    webui = resources.files("mmtune.infer") / "webui"

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(str(webui / "index.html"), headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/ui/config", include_in_schema=False)
    async def ui_config():  # what the page needs before the first request; no secrets
        return {"model": settings.model_id, "vision": vision, "auth": settings.api_key is not None,
                "max_tokens": settings.default_max_tokens}

    app.mount("/ui", StaticFiles(directory=str(webui)), name="ui")


def run_server(loaded: LoadedModel, settings: ServerSettings, host: str, port: int, worker=None) -> None:
    """Serve until interrupted (the `mmtune serve` command)."""
    import uvicorn

    from mmtune.infer.http_protocol import protocol_with_header_timeout

    uvicorn.run(create_app(loaded, settings, worker), host=host, port=port, log_level="info",
                http=protocol_with_header_timeout(settings.header_timeout_s))
