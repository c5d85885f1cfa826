"""Tool calls through `mmtune serve` (the official openai client, a two-step loop: call -> tool
message -> answer; streamed and not) and `mmtune chat --tools`, on the tiny model fine-tuned on
`mmtune data tools` data."""

from __future__ import annotations

import json

import pytest

from mmtune.data.synth.tools import TOOLS
from mmtune.infer.load import load_for_inference
from mmtune.infer.server import ServerSettings, create_app
from mmtune.testing.runs import tool_run
from mmtune.testing.serving import serve_in_thread

openai = pytest.importorskip("openai", reason="the API tests use the official openai client: pip install -e '.[test]'")
pytestmark = pytest.mark.slow
NAMES = {t["function"]["name"] for t in TOOLS}


@pytest.fixture(scope="module")
def run():
    return tool_run()


@pytest.fixture(scope="module")
def client(run):
    recipe, result, _ = run
    loaded = load_for_inference(str(result.final_dir), device="cpu")
    running = serve_in_thread(create_app(loaded, ServerSettings("agent", api_key="k", max_concurrency=2)))
    yield openai.OpenAI(base_url=f"{running.url}/v1", api_key="k", max_retries=0, timeout=120)
    running.stop()


def test_two_step_tool_loop_with_the_openai_client(client):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="agent", messages=messages, tools=TOOLS, temperature=0,
                                           max_tokens=160)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name in NAMES
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments, dict)
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"city": "Paris", "temperature_c": 21, '
                                                                      '"condition": "sunny"}'}]
    second = client.chat.completions.create(model="agent", messages=messages, tools=TOOLS, temperature=0,
                                            max_tokens=60)
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert second.choices[0].message.content

    # streamed: the deltas add up to the same call
    stream = client.chat.completions.create(model="agent", messages=messages[:1], tools=TOOLS, temperature=0,
                                            max_tokens=160, stream=True)
    name, args, finish = "", "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for piece in delta.tool_calls or []:
            name += piece.function.name or ""
            args += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, json.loads(args), finish) == (call.function.name, arguments, "tool_calls")


def test_no_tool_needed_and_tool_choice_none(client):
    reply = client.chat.completions.create(model="agent", messages=[{"role": "user", "content": "Hi!"}], tools=TOOLS,
                                           temperature=0, max_tokens=40)
    assert reply.choices[0].finish_reason == "stop" and not reply.choices[0].message.tool_calls
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        client.chat.completions.create(model="agent", messages=[{"role": "user", "content": "Hi"}], tools=TOOLS,
                                       tool_choice="required")
    with pytest.raises(openai.BadRequestError, match="invalid 'tools'"):
        client.chat.completions.create(model="agent", messages=[{"role": "user", "content": "Hi"}],
                                       tools=[{"type": "function", "function": {"description": "no name"}}])


def test_chat_with_tools_shows_calls_and_runs_demo_tools(run, tmp_path, capsys):
    from mmtune.cli.main import main

    _, result, data = run
    assert main(["chat", str(result.final_dir), "--tools", str(data.files["tools"]), "--max-new-tokens", "160",
                 "--query", "What is the weather in Oslo?", "--query", "Hi!"]) == 0
    out = capsys.readouterr().out
    assert "[tool call] " in out and "[tool result] " in out
    assert main(["chat", str(result.final_dir), "--tools", str(tmp_path / "none.json"), "--query", "x"]) == 2
