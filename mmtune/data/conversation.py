"""The single internal form of a training sample.

Every reader turns its file format into `Conversation`s; everything downstream (templates,
encoding, checks) works only with these types and never sees the source format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmtune.constants import IMAGE_PLACEHOLDER  # noqa: F401  (the readers' placeholder, imported from here)

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class ToolCall:
    """One call an assistant message makes: the tool's name and its arguments (a JSON object)."""

    name: str
    arguments: dict
    id: str | None = None

    def to_dict(self) -> dict:
        """As chat templates and the OpenAI API take it."""
        out = {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        return {"id": self.id, **out} if self.id else out


@dataclass
class Message:
    role: str  # one of ROLES
    content: str
    # Where the role and content stand in the source record, for messages in the record's own terms:
    # {"role": "conversations[2].from", "content": "conversations[2].value"}; None when built in code.
    origin: dict | None = field(default=None, compare=False, repr=False)
    tool_calls: list[ToolCall] = field(default_factory=list)  # assistant: the tools it calls (in order)
    tool_call_id: str | None = None  # tool: the call this result answers
    name: str | None = None  # tool: the tool that produced this result

    def to_dict(self) -> dict:
        """The message as chat templates take it (tool calls and ids only when present)."""
        out: dict = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Message":
        calls = [ToolCall(c["function"]["name"], c["function"]["arguments"], c.get("id")) for c in d.get("tool_calls") or []]
        return cls(d["role"], d["content"], tool_calls=calls, tool_call_id=d.get("tool_call_id"), name=d.get("name"))


@dataclass
class Conversation:
    messages: list[Message]
    # Image paths in the order their IMAGE_PLACEHOLDERs appear in the text (empty for text data).
    images: list[str] = field(default_factory=list)
    # Where the record came from, for error messages: "file:record N".
    source: str = ""
    # Tool (function) definitions the conversation offers, as chat templates take them:
    # {"type": "function", "function": {"name", "description", "parameters": JSON schema}}.
    tools: list[dict] = field(default_factory=list)

    @property
    def has_tools(self) -> bool:
        return bool(self.tools) or any(m.tool_calls or m.role == "tool" for m in self.messages)

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
        out = {"messages": [m.to_dict() for m in self.messages], "images": list(self.images), "source": self.source}
        if self.tools:
            out["tools"] = self.tools
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Conversation":
        return cls(
            messages=[Message.from_dict(m) for m in d["messages"]],
            images=list(d.get("images") or []),
            source=d.get("source", ""),
            tools=list(d.get("tools") or []),
        )


def validate_conversation(conv: Conversation) -> list[tuple[str, str]]:
    """Structural problems of a conversation as (field, reason) pairs; empty when it is fine.

    Rules: at least one user and one assistant message; an optional system message only first;
    then turns start with user and end with assistant; a user message is followed by an assistant
    one; an assistant message by a user message, or, when it calls tools, by tool results (each
    followed by another result or an assistant message). Contents are non-empty strings for user,
    strings for assistant (empty only when it calls tools) and tool results.
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
        if m.tool_calls and m.role != "assistant":
            problems.append((f"messages[{i}].tool_calls", f"a {m.role} message cannot call tools"))
    if problems:
        return problems
    turns = conv.turns
    offset = len(conv.messages) - len(turns)
    if not turns:
        return [("messages", "conversation has no user/assistant turns")]
    if turns[0].role != "user":
        return [(f"messages[{offset}].role", f"first turn is from {turns[0].role!r}, expected 'user'")]
    for i, (m, nxt) in enumerate(zip(turns, turns[1:])):
        allowed = {"user": ("assistant",), "tool": ("tool", "assistant"),
                   "assistant": ("user", "tool") if m.tool_calls else ("user",)}[m.role]
        if nxt.role not in allowed:
            if nxt.role == "tool":
                reason = "a tool result must follow an assistant message that calls tools"
            else:
                reason = f"roles do not alternate: got {nxt.role!r}, expected {' or '.join(map(repr, allowed))}"
            return [(f"messages[{offset + i + 1}].role", reason)]
    if turns[-1].role != "assistant":
        return [(f"messages[{offset + len(turns) - 1}].role", "conversation ends without an assistant answer")]
    for i, m in enumerate(turns):
        if m.role == "user" and not m.content.strip():
            problems.append((f"messages[{offset + i}].content", "empty user message"))
        if m.role == "assistant" and not m.content.strip() and not m.tool_calls:
            problems.append((f"messages[{offset + i}].content", "empty assistant answer (nothing to learn)"))
    return problems
