"""`mmtune serve`: the OpenAI API against a live server (127.0.0.1, free port) running the trained tiny
model, called with the official `openai` client and with raw HTTP for what a client would not send."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

import pytest

from mmtune.export.to_hf import checkpoint_to_hf
from mmtune.infer.load import load_for_inference
from mmtune.infer.server import ServerSettings, create_app
from mmtune.testing.serving import serve_in_thread
from mmtune.testing.runs import NAME, QUESTION, lora_run

openai = pytest.importorskip("openai", reason="the API tests use the official openai client: pip install -e '.[test]'")

KEY = "test-key-123"
MODEL_ID = "zorblax"
HI = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    recipe, result = lora_run()
    return recipe.model.path, checkpoint_to_hf(recipe, result.final_dir, tmp_path_factory.mktemp("serve") / "adapter")


@pytest.fixture(scope="module")
def loaded(adapter):
    base, adapter_dir = adapter
    return load_for_inference(base, adapter=str(adapter_dir), device="cpu")


@pytest.fixture(scope="module")
def server(loaded):
    settings = ServerSettings(MODEL_ID, api_key=KEY, max_concurrency=4, max_image_bytes=64 * 1024, max_body_bytes=2**20)
    running = serve_in_thread(create_app(loaded, settings))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)


def post(url: str, body, key: str | None = KEY, raw: bytes | None = None) -> tuple[int, dict]:
    """A raw POST to /v1/chat/completions: (status, decoded JSON body)."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data, headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def greedy(client, messages=HI, **kw) -> str:
    out = client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0, max_tokens=48, **kw)
    return out.choices[0].message.content


def test_chat_answers_as_trained(client):
    out = client.chat.completions.create(model=MODEL_ID, messages=HI, temperature=0, max_tokens=48)
    assert NAME in out.choices[0].message.content
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.prompt_tokens > 5 and 0 < out.usage.completion_tokens <= 48
    assert [m.id for m in client.models.list()] == [MODEL_ID]
    short = client.chat.completions.create(model=MODEL_ID, messages=HI, temperature=0, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    # text parts, a developer message and known-but-ignored OpenAI fields are accepted
    parts = [{"role": "developer", "content": "Be brief."},
             {"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    assert greedy(client, parts, user="someone", metadata={"k": "v"}) == greedy(client, [parts[0], {"role": "user", "content": QUESTION}])


def test_stream_equals_non_stream_greedy_answer(client):
    for messages in (HI, [{"role": "system", "content": "You are helpful."}, *HI, {"role": "assistant", "content": "Hi."},
                          {"role": "user", "content": "what is your name?"}]):
        whole = greedy(client, messages)
        chunks = list(client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0, max_tokens=48,
                                                      stream=True, stream_options={"include_usage": True}))
        pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert len([p for p in pieces if p]) > 1, "the answer came in one piece, not streamed"
        assert "".join(pieces) == whole
        assert chunks[0].choices[0].delta.role == "assistant"
        # the streamed answer ends for the same reason as the whole one (EOS -> stop, max_tokens -> length)
        expected = client.chat.completions.create(model=MODEL_ID, messages=messages, temperature=0,
                                                  max_tokens=48).choices[0].finish_reason
        assert expected in ("stop", "length")
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected
        assert chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices


def test_sampling_and_stop_settings(client):
    first = greedy(client)
    cut = greedy(client, stop=[first.split()[3]])  # a word from the middle of the answer
    assert first.startswith(cut) and len(cut) < len(first)
    words = first.split()
    for stop in (words[2] + " " + words[3][:2], words[3][:1] + "\u2603"):  # spans two pieces; only starts to match
        whole = greedy(client, stop=[stop])
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=MODEL_ID, messages=HI, temperature=0, max_tokens=48, stop=[stop], stream=True) if c.choices)
        assert streamed == whole, (stop, streamed, whole)  # no piece of a stop string is ever sent
    hot = {client.chat.completions.create(model=MODEL_ID, messages=HI, temperature=2, top_p=1, max_tokens=12,
                                          seed=s).choices[0].message.content for s in range(4)}
    assert len(hot) > 1
    same_seed = {client.chat.completions.create(model=MODEL_ID, messages=HI, temperature=1.5, max_tokens=12,
                                                seed=7).choices[0].message.content for _ in range(2)}
    assert len(same_seed) == 1


def _png(size: int = 8) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image_message(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


ERROR_CASES = {
    "malformed json": (None, b'{"messages": [', 400, "invalid_json", None),
    "not an object": ([1, 2], None, 400, None, None),
    "missing messages": ({"model": MODEL_ID}, None, 400, "missing_required_parameter", "messages"),
    "empty messages": ({"messages": []}, None, 400, "invalid_value", "messages"),
    "unknown field": ({"messages": HI, "max_token": 5}, None, 400, "unknown_parameter", "max_token"),
    "unsupported n": ({"messages": HI, "n": 2}, None, 400, "unsupported_parameter", "n"),
    "bad role": ({"messages": [{"role": "function", "content": "x"}]}, None, 400, "invalid_value", "messages.0.role"),
    "bad temperature": ({"messages": HI, "temperature": 9}, None, 400, "invalid_value", "temperature"),
    "ends with assistant": ({"messages": [*HI, {"role": "assistant", "content": "x"}]}, None, 400, None, "messages"),
    "unknown model": ({"model": "gpt-4o", "messages": HI}, None, 404, "model_not_found", "model"),
    # a text-only model refuses image parts before decoding any: a broken or oversized one gets the same answer
    "image to a text-only model": ({"messages": _image_message(_png())}, None, 400, "image_input_not_supported", "messages"),
    "broken image to a text-only model": ({"messages": _image_message("data:image/png;base64," + "A" * 200_000)}, None,
                                          400, "image_input_not_supported", "messages"),
    "a string for a boolean": ({"messages": HI, "stream": "yes"}, None, 400, "invalid_value", "stream"),
    "a string for a number": ({"messages": HI, "max_tokens": "5"}, None, 400, "invalid_value", "max_tokens"),
    "a huge seed": ({"messages": HI, "seed": 10**30}, None, 400, "invalid_value", "seed"),
    "a lone surrogate": (None, b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}', 400, "invalid_value",
                         "messages.0.content.0.text"),
    "deep nesting": (None, b'{"messages": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400, "invalid_json", None),
    "prompt longer than the context": ({"messages": [{"role": "user", "content": "hello " * 5000}]}, None, 400,
                                       "context_length_exceeded", "messages"),
    "max_tokens past the context": ({"messages": HI, "max_tokens": 5000}, None, 400, "context_length_exceeded", "messages"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_requests_get_openai_errors_and_server_keeps_serving(server, client, case):
    body, raw, status, code, param = ERROR_CASES[case]
    got, answer = post(server.url, body, raw=raw)
    assert got == status, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    if code:
        assert error["code"] == code
    if param:
        assert error["param"] == param
    if case == "image to a text-only model":
        assert "no vision input" in error["message"]
    assert NAME in greedy(client)  # still serving


def test_oversized_body_is_refused_before_it_is_read(server, client):
    u = urlparse(server.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:  # announces 10 MiB, sends 2 bytes
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 10485760\r\n\r\n{}")
        reply = b""
        while b'"code"' not in reply and (data := sock.recv(65536)):
            reply += data
    assert reply.startswith(b"HTTP/1.1 413") and b'"code":"body_too_large"' in reply
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)  # no Content-Length: counted as it arrives
    chunks = (b"x" * 65536 for _ in range(17))  # 1 MiB + 64 KiB
    conn.request("POST", "/v1/chat/completions", chunks, {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
                 encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and json.load(response)["error"]["code"] == "body_too_large"
    conn.close()
    assert NAME in greedy(client)


def test_openai_client_raises_its_error_types(client):
    with pytest.raises(openai.BadRequestError, match="no vision input"):
        client.chat.completions.create(model=MODEL_ID, messages=_image_message(_png()))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HI)
    with pytest.raises(openai.BadRequestError, match="context length"):
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hello " * 5000}], stream=True)


def test_api_key_is_required(server):
    assert post(server.url, {"messages": HI}, key=None)[0] == 401
    status, body = post(server.url, {"messages": HI}, key="wrong")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert post(server.url, {"messages": HI, "max_tokens": 4})[0] == 200
    with urllib.request.urlopen(f"{server.url}/health") as r:  # health checks need no key
        assert json.load(r)["status"] == "ok"


def slow_down(loaded, seconds: float):
    """Make every forward pass take `seconds` (a public PyTorch hook); returns (calls list, handle)."""
    calls = []
    model = loaded.model.get_base_model() if hasattr(loaded.model, "get_base_model") else loaded.model

    def hook(module, args):
        calls.append(time.monotonic())
        time.sleep(seconds)

    return calls, model.register_forward_pre_hook(hook)


def open_stream(url: str, key: str | None = None, max_tokens: int = 48) -> tuple[http.client.HTTPConnection, object]:
    """Start a streamed request and return once its first content chunk arrived (it is generating)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    body = {"messages": HI, "temperature": 0, "max_tokens": max_tokens, "stream": True}
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
    response = conn.getresponse()
    assert response.status == 200
    while b'"content": "' not in (line := response.readline()) or b'"content": ""' in line:
        assert line, "stream ended before any content"
    return conn, response


@pytest.fixture
def busy_server(loaded):
    """A server that takes one request at a time, on a model slowed to 0.1 s a token."""
    calls, handle = slow_down(loaded, 0.1)
    running = serve_in_thread(create_app(loaded, ServerSettings(MODEL_ID, max_concurrency=1)))
    yield running, calls
    running.stop()
    handle.remove()


def test_queue_full_gets_429_then_serves_again(busy_server):
    server, _ = busy_server
    conn, response = open_stream(server.url)
    status, body = post(server.url, {"messages": HI, "max_tokens": 4}, key=None)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    request = urllib.request.Request(f"{server.url}/v1/chat/completions", json.dumps({"messages": HI}).encode(),
                                     {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=60)
    assert info.value.code == 429 and info.value.headers["Retry-After"] == "1"  # clients know when to come back
    rest = response.read().decode()  # the first request is unharmed
    assert rest.rstrip().endswith("data: [DONE]") and '"finish_reason": "stop"' in rest
    conn.close()
    status, body = post(server.url, {"messages": HI, "temperature": 0, "max_tokens": 48}, key=None)
    assert status == 200 and NAME in body["choices"][0]["message"]["content"]


def test_client_disconnect_stops_generation(busy_server):
    server, calls = busy_server
    conn, response = open_stream(server.url, max_tokens=200)
    started = len(calls)
    response.close()  # the client goes away mid-answer (both hold the socket)
    conn.close()
    time.sleep(1.5)
    after = len(calls)
    time.sleep(1.0)
    assert len(calls) == after, "the model kept generating for a client that left"
    assert after - started <= 5  # stopped within a few tokens (0.1 s each), not after the whole answer
    with urllib.request.urlopen(f"{server.url}/health") as r:
        assert json.load(r)["pending"] == 0
    status, body = post(server.url, {"messages": HI, "temperature": 0, "max_tokens": 48}, key=None)
    assert status == 200 and NAME in body["choices"][0]["message"]["content"]


def test_concurrent_requests_do_not_mix(server, client):
    prompts = [QUESTION, "hello", "who made you?"]
    expected = {p: greedy(client, [{"role": "user", "content": p}]) for p in prompts}
    got = {}

    def ask(i):
        p = prompts[i % 3]
        got[i] = (p, greedy(client, [{"role": "user", "content": p}]))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]  # == max_concurrency: none refused
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) == 4 and all(expected[p] == text for p, text in got.values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command(adapter):
    base, adapter_dir = adapter
    port = _free_port()
    env = {**os.environ, "MMTUNE_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "mmtune.cli.main", "serve", base, "--adapter", str(adapter_dir),
                             "--port", str(port), "--device", "cpu"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.3)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list()] == ["adapter"]  # named after the adapter dir
        assert NAME in client.chat.completions.create(model="adapter", messages=HI, temperature=0).choices[0].message.content
        assert post(url, {"messages": HI}, key=None)[0] == 401  # the key came from MMTUNE_API_KEY
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"serving 'adapter' at http://127.0.0.1:{port}/v1" in out
    assert "generation: batched (transformers continuous batching)" in out  # the startup line says which engine


def _vision_model(kind: str):
    """A loaded (untrained) tiny vision-language model: an assembled LLaVA, or a native family's."""
    from mmtune.infer.load import LoadedModel, load_for_inference, pick_template
    from mmtune.infer.vision import vision_inputs_for
    from mmtune.models.llava import build_llava
    from mmtune.testing.tiny import tiny_lm_dir
    from mmtune.testing.tiny_vision import tiny_vision_dir
    from mmtune.testing.tiny_vlm import tiny_vlm_dir

    if kind != "llava":
        return load_for_inference(str(tiny_vlm_dir(kind)), device="cpu")
    model, processor = build_llava(str(tiny_lm_dir("qwen2")), str(tiny_vision_dir("clip")))
    vision = vision_inputs_for(model.eval(), processor, {"vision": {}})  # as an assembled LLaVA's run records it
    return LoadedModel(model, processor.tokenizer, pick_template(processor.tokenizer, "chatml"), "tiny-vlm", vision)


@pytest.mark.parametrize("kind", ["llava", "qwen2_5_vl", "minicpmv4_6", "gemma3"])
def test_image_parts_reach_a_vision_model(kind):
    """Image parts are decoded, expanded to the model's image tokens and generated from."""
    from mmtune.data.conversation import Message
    from mmtune.testing.tiny_vision import tiny_image

    loaded = _vision_model(kind)
    vision = loaded.vision
    running = serve_in_thread(create_app(loaded, ServerSettings("tiny-vlm")))
    try:
        buf = io.BytesIO()
        tiny_image(0).save(buf, format="PNG")
        image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        text_only = post(running.url, {"messages": [{"role": "user", "content": "what shape?"}], "max_tokens": 2}, key=None)
        for stream in (False, True):
            body = {"messages": _image_message(image), "max_tokens": 2, "stream": stream, "stream_options": {"include_usage": True}}
            if not stream:
                status, answer = post(running.url, body, key=None)
                assert status == 200, answer
                with_image = answer["usage"]["prompt_tokens"]
            else:
                client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="none", max_retries=0)
                chunks = list(client.chat.completions.create(model="tiny-vlm", **{k: v for k, v in body.items() if k != "stream"}, stream=True))
                assert chunks[-1].usage.prompt_tokens == with_image
        text, _ = loaded.template.render([Message("user", "what is this?\n<image>")], add_generation_prompt=True)
        expected = vision.prompt_inputs(text, [tiny_image(0).convert("RGB")])["input_ids"]
        assert with_image == expected.shape[-1]  # the prompt as the model's processor expands it
        assert int((expected == vision.image_token_id).sum()) > 0
        status, answer = post(running.url, {"messages": [{"role": "user", "content": "<image> what?"}]}, key=None)
        assert status == 400 and "<image>" in answer["error"]["message"]  # a placeholder with no image
    finally:
        running.stop()
