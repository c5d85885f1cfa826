"""Bounded fuzzing of /v1/chat/completions (hypothesis): any JSON body gets a 200 or an OpenAI-shaped
4xx, never a 500 or a dropped connection, and the server keeps answering."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmtune.infer.server import ServerSettings, allowed_hosts_for, create_app
from mmtune.testing.serving import serve_in_thread

texts = st.one_of(st.text(max_size=20), st.just("\ud800"), st.just("<image>"), st.just(""))
values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 10**20), st.floats(allow_nan=True),
                                texts), lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                 st.dictionaries(texts, inner, max_size=3)),
                      max_leaves=10)
parts = st.one_of(st.fixed_dictionaries({"type": st.just("text"), "text": texts}),
                  st.fixed_dictionaries({"type": st.just("image_url"),
                                         "image_url": st.fixed_dictionaries({"url": st.sampled_from(
                                             ["data:image/png;base64,aGVsbG8=", "https://x.test/a.png", ""])})}),
                  values)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", 3]),
                                           "content": st.one_of(texts, st.lists(parts, max_size=3), values)}),
                    max_size=3)
bodies = st.one_of(values, st.fixed_dictionaries({"messages": messages}, optional={
    "max_tokens": st.integers(-2, 6), "temperature": st.one_of(st.floats(-1, 3), values), "top_p": values,
    "stream": st.one_of(st.booleans(), values), "stop": st.one_of(texts, st.lists(texts, max_size=6)),
    "seed": st.one_of(st.integers(-(2**70), 2**70), values), "n": values, "model": st.one_of(texts, st.just("tiny")),
    "unknown": values}))


@pytest.fixture(scope="module")
def server():
    from mmtune.infer.load import load_for_inference
    from mmtune.testing.tiny import tiny_lm_dir

    loaded = load_for_inference(str(tiny_lm_dir("qwen2")), device="cpu")
    running = serve_in_thread(create_app(loaded, ServerSettings("tiny", default_max_tokens=2,
                                                                allowed_hosts=allowed_hosts_for("127.0.0.1"))))
    yield running
    running.stop()


def post(url: str, body) -> tuple[int, bytes]:
    target = urlparse(url)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(bodies)
def test_any_body_gets_an_answer_or_an_openai_error(server, body):
    status, data = post(server.url, body)
    assert status in (200, 400, 404, 413), (status, data[:300])
    if status == 200:
        if isinstance(body, dict) and body.get("stream") is True:
            assert data.rstrip().endswith(b"data: [DONE]")
        else:
            assert json.loads(data)["object"] == "chat.completion"
    else:
        error = json.loads(data)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
