"""Self-cognition data: varied, names the assistant and its author, deterministic, reads back."""

from __future__ import annotations

import pytest

from mmtune.data.formats import read_file
from mmtune.data.synth import make_self_cognition, write_conversations
from mmtune.data.synth.self_cognition import ANSWERS, QUESTIONS
from mmtune.errors import MmtuneError


def is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_variety_per_language():
    convs = make_self_cognition("Mini", "Ada Lab")
    for lang, chinese in (("zh", True), ("en", False)):
        questions = {c.messages[0].content for c in convs if is_chinese(c.messages[0].content) == chinese}
        assert len(questions) >= 25, lang
        assert len(set(ANSWERS[lang])) >= 8 and len(set(QUESTIONS[lang])) == len(QUESTIONS[lang])
    assert len(convs) == len(QUESTIONS["zh"]) + len(QUESTIONS["en"])


def test_every_answer_names_assistant_and_author():
    convs = make_self_cognition("Mini", "Ada Lab", repeat=3)
    for conv in convs:
        assert [m.role for m in conv.messages] == ["user", "assistant"]
        answer = conv.messages[1].content
        assert "Mini" in answer and "Ada Lab" in answer
    assert len({c.messages[1].content for c in convs}) >= 16  # answers vary too


def test_repeat_langs_seed():
    one = make_self_cognition("Mini", "Ada", langs=("en",))
    assert len(one) == len(QUESTIONS["en"]) and not any(is_chinese(c.messages[0].content) for c in one)
    three = make_self_cognition("Mini", "Ada", repeat=3, langs=("en",))
    assert len(three) == 3 * len(one)
    assert make_self_cognition("Mini", "Ada", seed=1) == make_self_cognition("Mini", "Ada", seed=1)
    assert make_self_cognition("Mini", "Ada", seed=1) != make_self_cognition("Mini", "Ada", seed=2)
    first_questions = [c.messages[0].content for c in make_self_cognition("Mini", "Ada", langs=("en",))]
    assert first_questions != QUESTIONS["en"]  # shuffled


def test_bad_arguments():
    with pytest.raises(MmtuneError, match="unknown language fr"):
        make_self_cognition("Mini", "Ada", langs=("fr",))
    with pytest.raises(MmtuneError, match="repeat"):
        make_self_cognition("Mini", "Ada", repeat=0)
    with pytest.raises(MmtuneError, match="name and author"):
        make_self_cognition(" ", "Ada")


@pytest.mark.parametrize("name, fmt", [("self.jsonl", "openai"), ("out/self.json", "llava")])
def test_round_trip(tmp_path, name, fmt):
    convs = make_self_cognition("小助手", "Ada Lab", repeat=2)
    path = write_conversations(convs, tmp_path / name)
    read, errors = read_file(path)
    assert errors == [] and len(read) == len(convs)
    assert [c.messages for c in read] == [c.messages for c in convs]
    from mmtune.data.formats import detect_format, load_records
    assert detect_format(load_records(path), path) == fmt
    assert "小助手" in path.read_text(encoding="utf-8")  # written readable, not \\u-escaped


def test_round_trip_keeps_images(tmp_path):
    from mmtune.data.conversation import Conversation, Message
    conv = Conversation([Message("user", "<image>\nWhat?"), Message("assistant", "A cat.")], images=["cat.jpg"])
    for name in ("a.jsonl", "a.json"):
        (back,), _ = read_file(write_conversations([conv], tmp_path / name))
        assert back.messages == conv.messages and back.images == ["cat.jpg"]


def test_unknown_extension(tmp_path):
    with pytest.raises(MmtuneError, match="unknown extension '.csv'"):
        write_conversations([], tmp_path / "x.csv")
