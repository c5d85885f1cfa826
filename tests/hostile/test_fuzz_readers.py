"""Bounded fuzzing of the data readers (hypothesis): whatever a file holds, reading it gives records
or DataErrors located in that file, never another exception; what is read is a valid conversation."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmtune.data.conversation import validate_conversation
from mmtune.data.formats import load_records, read_records, unused_keys
from mmtune.errors import DataError

KEYS = ["conversations", "messages", "from", "value", "role", "content", "image", "images", "system", "tools",
        "instruction", "input", "output", "history", "type", "text", "image_url", "url", "videos", "chosen",
        "rejected", "label", "id", "human", "gpt", "user", "assistant", "<image>", "<image_00>"]
SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.sampled_from(KEYS),
                    st.text(max_size=12), st.just("<image>\nhi"), st.just("\ud800"))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=25)
turn = st.fixed_dictionaries({}, optional={"from": st.sampled_from(["human", "gpt", "system", "bot", 3]),
                                           "value": scalars, "role": st.sampled_from(["user", "assistant", "tool", None]),
                                           "content": st.one_of(scalars, st.lists(json_values, max_size=3))})
records = st.one_of(
    json_values,
    st.fixed_dictionaries({"conversations": st.lists(turn, max_size=4)}, optional={"image": json_values,
                                                                                 "system": scalars}),
    st.fixed_dictionaries({"messages": st.lists(turn, max_size=4)}, optional={"images": json_values}),
    st.fixed_dictionaries({"instruction": scalars, "output": scalars}, optional={"history": json_values}),
)


@SETTINGS
@given(st.lists(records, min_size=1, max_size=6), st.sampled_from(["auto", "llava", "openai", "alpaca", "minicpm"]))
def test_any_records_read_or_fail_with_a_located_data_error(items, format):
    try:
        convs, problems = read_records(items, "f.json", format, errors="collect")
    except DataError as e:  # the file as a whole: detection found no single format
        assert str(e).startswith("f.json") or "format" in str(e)
        return
    assert len(convs) + len(problems) == len(items)
    for e in problems:
        assert isinstance(e, DataError) and e.where.startswith("f.json:record ")
    for conv in convs:
        assert validate_conversation(conv) == []
        for m in conv.messages:
            m.content.encode("utf-8")  # no lone surrogate gets through to a tokenizer
    if format != "auto":
        unused_keys(items, format)  # never raises


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from(["d.json", "d.jsonl"]))
def test_any_bytes_load_or_fail_with_one_located_line(tmp_path_factory, data, name):
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data)
    try:
        loaded = load_records(path)
    except DataError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)
        return
    assert isinstance(loaded, list)


@SETTINGS
@given(st.lists(records, min_size=1, max_size=4))
def test_jsonl_text_round_trips_through_the_loader(tmp_path_factory, items):
    path = tmp_path_factory.mktemp("fuzz") / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    loaded = load_records(path)
    flat = [x for r in items for x in (r if isinstance(r, list) else [r])]  # a list on a line is its records
    assert loaded == flat
