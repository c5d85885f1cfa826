"""`mmtune data tools`: generated tool-use data that reads back clean, with held-out questions that
training never shows (cities, numbers, no-tool phrasings), and right tool results."""

from __future__ import annotations

import json
import re

from mmtune.cli.main import main
from mmtune.data.formats import read_file
from mmtune.data.synth.tools import TOOLS, make_tool_dataset, run_demo_tool


def _asks(convs):
    calls = [c for conv in convs for m in conv.messages for c in m.tool_calls]
    no_tool = {conv.messages[i].content for conv in convs for i in range(len(conv.messages) - 1)
               if conv.messages[i].role == "user" and not conv.messages[i + 1].tool_calls}
    return calls, no_tool


def test_heldout_questions_are_new(tmp_path):
    data = make_tool_dataset(tmp_path, n=600, seed=3, heldout=120, max_rounds=3)
    train, bad_train = read_file(data.files["train"], errors="collect")  # read with every tool check
    held, bad_held = read_file(data.files["heldout"], errors="collect")
    assert (len(train), len(held), bad_train, bad_held) == (600, 120, [], [])
    assert json.loads(data.files["tools"].read_text()) == TOOLS
    assert {len([m for m in c.messages if m.role == "user"]) for c in train} == {1, 2, 3}
    assert all(len([m for m in c.messages if m.role == "user"]) == 1 for c in held)

    train_calls, train_no_tool = _asks(train)
    held_calls, held_no_tool = _asks(held)
    cities = lambda calls: {c.arguments["city"] for c in calls if c.name == "get_weather"}  # noqa: E731
    numbers = lambda calls: {v for c in calls for k, v in c.arguments.items() if k in ("a", "b", "value")}  # noqa: E731
    assert cities(held_calls) and not cities(held_calls) & cities(train_calls)
    assert numbers(held_calls) and not numbers(held_calls) & numbers(train_calls)
    assert held_no_tool and not held_no_tool & train_no_tool
    assert {c.name for c in held_calls} == {t["function"]["name"] for t in TOOLS}


def test_tool_results_are_right(tmp_path):
    data = make_tool_dataset(tmp_path, n=200, seed=0)
    convs, _ = read_file(data.files["train"])
    checked = 0
    for conv in convs:
        for call, result in zip(conv.messages, conv.messages[1:]):
            if call.tool_calls and result.role == "tool":
                assert json.loads(result.content) == json.loads(run_demo_tool(call.tool_calls[0].name,
                                                                              call.tool_calls[0].arguments))
                checked += 1
    assert checked > 100
    assert json.loads(run_demo_tool("calculate", {"operation": "divide", "a": 1, "b": 0}))["result"] is None
    assert "error" in json.loads(run_demo_tool("calculate", {"a": 1}))
    assert run_demo_tool("unknown", {}) is None


def test_cli_writes_the_files_and_refuses_bad_counts(tmp_path, capsys):
    assert main(["data", "tools", "-o", str(tmp_path / "t"), "--n", "30", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"train\s+\S+train\.jsonl\s+\(30 conversations\)", out), out
    assert main(["data", "tools", "-o", str(tmp_path / "u"), "--rounds", "0"]) != 0
    assert "--rounds must be at least 1" in capsys.readouterr().err


def test_training_asks_are_sometimes_wrapped_and_held_out_asks_never():
    from mmtune.data.synth.tools import WRAPPERS, make_tool_conversations

    prefixes = tuple(w.split("{")[0] for w in WRAPPERS if not w.startswith("{"))
    suffixes = tuple(w.split("}")[1] for w in WRAPPERS if w.startswith("{"))
    wrapped = lambda text: text.startswith(prefixes) or text.endswith(suffixes)  # noqa: E731

    asks = lambda convs: [c.messages[0].content for c in convs if c.messages[1].tool_calls]  # noqa: E731
    train = asks(make_tool_conversations(400, seed=5, split="train", max_rounds=1))
    held = asks(make_tool_conversations(400, seed=5, split="heldout"))
    assert 0.15 < sum(map(wrapped, train)) / len(train) < 0.45  # ~30% of the asks
    assert not [a for a in held if wrapped(a)]
