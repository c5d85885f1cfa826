"""Requests that could take the server down or let another site drive it: image limits checked
before decoding, Host and Content-Type checks, CORS off unless asked, Retry-After, a port in use."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
from urllib.parse import urlparse

import pytest

from mmtune.infer.server import ServerSettings, allowed_hosts_for, create_app, host_name
from mmtune.testing.serving import serve_in_thread


def png(width: int, height: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def ask(url: str, n_images: int = 1, image: str | None = None) -> dict:
    parts = [{"type": "text", "text": "what is this?"}]
    parts += [{"type": "image_url", "image_url": {"url": image or png(8, 8)}}] * n_images
    return {"messages": [{"role": "user", "content": parts}], "max_tokens": 2}


def request(url: str, body=None, *, raw: bytes | None = None, headers: dict | None = None, method: str = "POST",
            path: str = "/v1/chat/completions") -> tuple[int, dict, dict]:
    """(status, headers, JSON body) for a hand-made request, Host header included as given."""
    target = urlparse(url)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=data, headers=sent)
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), (json.loads(text) if text and text[:1] in b"{[" else {})


@pytest.fixture(scope="module")
def vision_server():
    from mmtune.infer.load import load_for_inference
    from mmtune.testing.tiny_vlm import tiny_vlm_dir

    loaded = load_for_inference(str(tiny_vlm_dir("qwen2_5_vl")), device="cpu")
    settings = ServerSettings("tiny-vlm", max_images=2, max_image_pixels=64 * 64, max_image_bytes=64 * 1024,
                              allowed_hosts=allowed_hosts_for("127.0.0.1"))
    running = serve_in_thread(create_app(loaded, settings))
    yield running
    running.stop()


@pytest.mark.parametrize("case, body, status, code", [
    ("non-image data url", ask("", image="data:text/plain;base64,aGVsbG8="), 400, "invalid_image_url"),
    ("remote url", ask("", image="https://example.com/cat.png"), 400, "invalid_image_url"),
    ("broken image", ask("", image="data:image/png;base64,aGVsbG8="), 400, "invalid_image"),
    ("too many bytes", ask("", image="data:image/png;base64," + "A" * 200_000), 413, "image_too_large"),
    ("too many pixels", ask("", image=png(65, 64)), 400, "image_too_large"),  # a small file, more than 64x64 pixels
    ("too many images", ask("", n_images=3), 400, "too_many_images"),
])
def test_images_past_the_limits_are_refused_and_the_server_goes_on(vision_server, case, body, status, code):
    got, _, answer = request(vision_server.url, body)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert request(vision_server.url, ask(""))[0] == 200  # still serving, one image of 8x8


def test_a_decompression_bomb_is_refused_from_its_header(vision_server):
    """A PNG whose header declares 20000x20000 pixels: refused before any pixel is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    got, _, answer = request(vision_server.url, ask("", image="data:image/png;base64," + base64.b64encode(bomb).decode()))
    assert got == 400 and answer["error"]["code"] == "image_too_large"


def test_only_local_host_names_reach_a_local_server(vision_server):
    for host in ("evil.example.com", "attacker.test:8000"):  # DNS rebinding: another name for 127.0.0.1
        status, _, answer = request(vision_server.url, path="/health", method="GET", headers={"Host": host})
        assert status == 400 and answer["error"]["code"] == "invalid_host"
    port = urlparse(vision_server.url).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert request(vision_server.url, path="/health", method="GET", headers={"Host": host})[0] == 200
    assert allowed_hosts_for("0.0.0.0") is None  # reached by names it cannot know: protect it with --api-key
    assert host_name("[::1]:80") == "::1" and host_name("LocalHost:1") == "localhost"


def test_json_is_required_and_cors_is_off_unless_asked(vision_server):
    status, _, answer = request(vision_server.url, raw=json.dumps(ask("")).encode(), headers={"Content-Type": "text/plain"})
    assert status == 415 and answer["error"]["code"] == "invalid_content_type"  # a cross-site form post cannot pass
    status, headers, _ = request(vision_server.url, path="/v1/models", method="GET", headers={"Origin": "https://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in {k.lower() for k in headers}


def test_an_allowed_origin_gets_cors_headers():
    from mmtune.infer.load import load_for_inference
    from mmtune.testing.tiny import tiny_lm_dir

    loaded = load_for_inference(str(tiny_lm_dir("qwen2")), device="cpu")
    running = serve_in_thread(create_app(loaded, ServerSettings("tiny", allow_origins=("http://localhost:3000",))))
    try:
        status, headers, _ = request(running.url, path="/v1/chat/completions", method="OPTIONS",
                                     headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "content-type"})
        assert status == 200 and headers.get("access-control-allow-origin") == "http://localhost:3000"
        status, headers, _ = request(running.url, path="/v1/models", method="GET", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in {k.lower() for k in headers}
    finally:
        running.stop()


def test_a_port_in_use_is_one_line_before_the_model_loads():
    from mmtune.cli.serve import check_port_free
    from mmtune.errors import MmtuneError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MmtuneError, match=f"cannot listen on 127.0.0.1:{port}") as info:
            check_port_free("127.0.0.1", port)
        assert "--port" in info.value.hint


def test_a_requests_seed_does_not_change_how_the_next_requests_sample():
    import torch

    from mmtune.data.conversation import Message
    from mmtune.infer.engine import GenerationSettings, generate_reply, stream_reply
    from mmtune.infer.load import load_for_inference
    from mmtune.testing.tiny import tiny_lm_dir

    loaded = load_for_inference(str(tiny_lm_dir("qwen2")), device="cpu")
    hi = [Message("user", "hi")]
    seeded = GenerationSettings(max_new_tokens=4, temperature=1.0, seed=5)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = generate_reply(loaded.model, loaded.tokenizer, loaded.template, hi, seeded)
    streamed = "".join(stream_reply(loaded.model, loaded.tokenizer, loaded.template, hi, seeded))
    assert torch.equal(torch.get_rng_state(), before)  # the process's random state is untouched
    assert generate_reply(loaded.model, loaded.tokenizer, loaded.template, hi, seeded) == first  # repeatable
    assert streamed.strip() == first


def test_a_slow_body_times_out_and_a_huge_prompt_is_refused_before_tokenizing():
    import time

    from mmtune.infer.engine import context_length
    from mmtune.infer.load import load_for_inference
    from mmtune.testing.tiny import tiny_lm_dir

    loaded = load_for_inference(str(tiny_lm_dir("qwen2")), device="cpu")
    running = serve_in_thread(create_app(loaded, ServerSettings("tiny", body_timeout_s=1.0)))
    try:
        target = urlparse(running.url)
        with socket.create_connection((target.hostname, target.port), timeout=30) as s:  # slow-loris: 10 of 100 bytes
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"message")
            started = time.time()
            reply = b""
            while b"request_timeout" not in reply:  # headers and body may come in separate packets
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 408") and "request_timeout" in reply and time.time() - started < 20
        context = context_length(loaded.model)
        tokenized = []
        original = loaded.tokenizer.__class__.__call__
        loaded.tokenizer.__class__.__call__ = lambda self, *a, **k: tokenized.append(1) or original(self, *a, **k)
        try:
            huge = {"messages": [{"role": "user", "content": "x" * (context * 32 + 1)}]}
            status, _, answer = request(running.url, huge)
        finally:
            loaded.tokenizer.__class__.__call__ = original
        assert status == 400 and answer["error"]["code"] == "context_length_exceeded" and not tokenized
    finally:
        running.stop()


def test_the_openapi_schema_describes_the_chat_request_and_its_errors(vision_server):
    status, _, schema = request(vision_server.url, path="/openapi.json", method="GET")
    assert status == 200
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    ref = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"messages", "temperature", "max_tokens", "stream", "seed"} <= set(body["properties"])
    assert body["additionalProperties"] is False  # unknown fields are a 400, as the schema says
    for code in ("400", "401", "413", "415", "429"):
        assert chat["responses"][code]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    refs = json.dumps(schema)
    for name in set(__import__("re").findall(r'"#/components/schemas/([^"]+)"', refs)):
        assert name in schema["components"]["schemas"], name  # every reference resolves


def test_headers_sent_too_slowly_close_the_connection_and_the_server_goes_on():
    import time

    from mmtune.infer.load import load_for_inference
    from mmtune.testing.tiny import tiny_lm_dir

    loaded = load_for_inference(str(tiny_lm_dir("qwen2")), device="cpu")
    running = serve_in_thread(create_app(loaded, ServerSettings("tiny", header_timeout_s=1.0)))
    try:
        target = urlparse(running.url)
        with socket.create_connection((target.hostname, target.port), timeout=30) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the headers never end
            started = time.time()
            assert s.recv(4096) == b""  # closed by the server
            assert time.time() - started < 15
        with socket.create_connection((target.hostname, target.port), timeout=30) as s:  # keep-alive: again per request
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):  # the whole response, however many packets it takes
                answer += s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            s.sendall(b"GET /health HTTP/1.1\r\n")
            assert s.recv(4096) == b""
        assert request(running.url, path="/health", method="GET")[0] == 200  # and it keeps serving
    finally:
        running.stop()


def test_prompts_are_tokenized_off_the_generation_thread():
    import threading

    from mmtune.infer.load import load_for_inference
    from mmtune.testing.tiny import tiny_lm_dir

    loaded = load_for_inference(str(tiny_lm_dir("qwen2")), device="cpu")
    threads = []
    cls = loaded.tokenizer.__class__
    original = cls.__call__

    def recording(self, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(self, *args, **kwargs)

    running = serve_in_thread(create_app(loaded, ServerSettings("tiny")))
    cls.__call__ = recording
    try:
        status, _, _ = request(running.url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert status == 200
        threads_seen = list(threads)
    finally:
        cls.__call__ = original
        running.stop()
    assert threads_seen and "mmtune-generate" not in threads_seen, threads_seen
    assert all(name.startswith("mmtune-prepare") for name in threads_seen)
