"""The single internal form of a training sample.

Every reader turns its file format into `Conversation`s; everything downstream (templates,
encoding, checks) works only with these types and never sees the source format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmtune.constants import IMAGE_PLACEHOLDER  # noqa: F401  (the readers' placeholder, imported from here)

ROLES = ("system", "user", "assistant")


@dataclass
class Message:
    role: str  # one of ROLES
    content: str
    # Where the role and content stand in the source record, for messages in the record's own terms:
    # {"role": "conversations[2].from", "content": "conversations[2].value"}; None when built in code.
    origin: dict | None = field(default=None, compare=False, repr=False)


@dataclass
class Conversation:
    messages: list[Message]
    # Image paths in the order their IMAGE_PLACEHOLDERs appear in the text (empty for text data).
    images: list[str] = field(default_factory=list)
    # Where the record came from, for error messages: "file:record N".
    source: str = ""

    @property
    def system(self) -> str | None:
        if self.messages and self.messages[0].role == "system":
            return self.messages[0].content
        return None

    @property
    def turns(self) -> list[Message]:
        """Messages after the optional leading system message."""
        return self.messages[1:] if self.system is not None else list(self.messages)

    def to_dict(self) -> dict:
        return {
            "messages": [{"role": m.role, "content": m.content} for m in self.messages],
            "images": list(self.images),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Conversation":
        return cls(
            messages=[Message(m["role"], m["content"]) for m in d["messages"]],
            images=list(d.get("images") or []),
            source=d.get("source", ""),
        )


def validate_conversation(conv: Conversation) -> list[tuple[str, str]]:
    """Structural problems of a conversation as (field, reason) pairs; empty when it is fine.

    Rules: at least one user and one assistant message; an optional system message only first;
    then user/assistant alternate, starting with user and ending with assistant; contents are
    non-empty strings for user, strings for assistant.
    """
    problems: list[tuple[str, str]] = []
    if not conv.messages:
        return [("messages", "empty conversation")]
    for i, m in enumerate(conv.messages):
        if m.role not in ROLES:
            problems.append((f"messages[{i}].role", f"unknown role {m.role!r} (expected one of {', '.join(ROLES)})"))
        if not isinstance(m.content, str):
            problems.append((f"messages[{i}].content", f"content is {type(m.content).__name__}, expected a string"))
        if m.role == "system" and i != 0:
            problems.append((f"messages[{i}].role", "a system message may only come first"))
    if problems:
        return problems
    turns = conv.turns
    offset = len(conv.messages) - len(turns)
    if not turns:
        return [("messages", "conversation has no user/assistant turns")]
    if turns[0].role != "user":
        return [(f"messages[{offset}].role", f"first turn is from {turns[0].role!r}, expected 'user'")]
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.role != expected:
            return [(f"messages[{offset + i}].role", f"roles do not alternate: got {m.role!r}, expected {expected!r}")]
    if turns[-1].role != "assistant":
        return [(f"messages[{offset + len(turns) - 1}].role", "conversation ends without an assistant answer")]
    for i, m in enumerate(turns):
        if m.role == "user" and not m.content.strip():
            problems.append((f"messages[{offset + i}].content", "empty user message"))
        if m.role == "assistant" and not m.content.strip():
            problems.append((f"messages[{offset + i}].content", "empty assistant answer (nothing to learn)"))
    return problems
