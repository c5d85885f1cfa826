"""The format registry and the small checks every reader shares.

A reader is a class with `description` (one line for --help), `keys` (the record keys it reads),
`turn_keys` (the keys it reads in each turn, with `turns` the key holding them; both empty for
single-turn formats) and two static methods, `detect(record) -> bool` and
`read(record, where) -> Conversation`, registered with `@register_format("name")`, which also sets
its `name`. `where` is the record's place
("file:record N"); readers report a bad field at `f"{where}:{field}"` (= `record_location(file, i, field)`)
so the user sees file, record and field in one line.
"""

from __future__ import annotations

from typing import Any, Callable

from mmtune.data.conversation import IMAGE_PLACEHOLDER, Message
from mmtune.errors import DataError

FORMATS: dict[str, type] = {}  # name -> reader class, in registration order


def register_format(name: str) -> Callable[[type], type]:
    """Class decorator: add a reader to FORMATS under `name`."""

    def add(cls: type) -> type:
        if name in FORMATS:
            raise ValueError(f"format {name!r} is registered twice")
        cls.name = name
        FORMATS[name] = cls
        return cls

    return add


def field_error(where: str, field: str, reason: str, hint: str | None = None) -> DataError:
    return DataError(reason, where=f"{where}:{field}", hint=hint)


def type_name(value: Any) -> str:
    """JSON's name for a Python value, as users see it in their file."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def require(record: dict, key: str, kind: type | tuple[type, ...], where: str, *, field: str | None = None) -> Any:
    """record[key], checked to exist and be of `kind`; `field` is its name in messages (default key)."""
    field = field or key
    if key not in record:
        raise field_error(where, field, f"missing key {key!r}")
    return check_type(record[key], kind, where, field)


def optional(record: dict, key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    """record[key] if present and not null, checked to be of `kind`; else `default`."""
    if record.get(key) is None:
        return default
    return check_type(record[key], kind, where, key)


def check_type(value: Any, kind: type | tuple[type, ...], where: str, field: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python but never a valid string/list/object in our records.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(type_name(k()) for k in kinds)
        raise field_error(where, field, f"value is {type_name(value)}, expected {expected}")
    return value


def map_role(value: Any, roles: dict[str, str], where: str, field: str) -> str:
    """Translate a format's role name (e.g. 'human') to ours ('user'); unknown names are an error."""
    if not isinstance(value, str) or value not in roles:
        raise field_error(where, field, f"unknown role {value!r} (expected one of {', '.join(roles)})")
    return roles[value]


def image_paths(value: Any, where: str, field: str) -> list[str]:
    """An `image`/`images` value: one path or a list of paths."""
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list):
        raise field_error(where, field, f"value is {type_name(value)}, expected a path or a list of paths")
    for i, p in enumerate(paths):
        if not isinstance(p, str) or not p:
            raise field_error(where, f"{field}[{i}]", f"image path is {type_name(p)}, expected a non-empty string")
    return list(paths)


def read_turns(record: dict, key: str, where: str, *, role_key: str, content_key: str, roles: dict[str, str],
               noun: str = "turn", parts: Callable[[list, str], str] | None = None,
               calls: Callable[[Any, str], list] | None = None) -> list[Message]:
    """The turns of `record[key]` (each `{role_key: ..., content_key: ...}`) as Messages: the one
    turn-reading loop of the conversation formats. `roles` maps the format's role names to ours;
    `parts(content, field)` turns a list content into text (OpenAI content parts), or lists are an error.
    `calls(value, field)` reads a turn's `tool_calls` (OpenAI); then a tool message's `tool_call_id`
    and `name` are read too, and an assistant turn with tool calls may have no content."""
    turns = require(record, key, list, where)
    messages = []
    for i, turn in enumerate(turns):
        if type(turn) is dict:  # fast path: a well-formed text turn, checked without building field names
            role, content = turn.get(role_key), turn.get(content_key)
            if type(role) is str and role in roles and type(content) is str and (
                    calls is None or ("tool_calls" not in turn and roles[role] != "tool")):
                messages.append(Message(roles[role], content, _origin(key, i, role_key, content_key)))
                continue
        field = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise field_error(where, field, f"{noun} is {type_name(turn)}, expected an object with "
                                            f"{role_key!r} and {content_key!r}")
        role = map_role(require(turn, role_key, str, where, field=f"{field}.{role_key}"), roles, where,
                        f"{field}.{role_key}")
        has_calls = calls is not None and turn.get("tool_calls") not in (None, [])
        if has_calls and turn.get(content_key) is None:
            content = ""
        else:
            content = require(turn, content_key, (str, list) if parts else str, where, field=f"{field}.{content_key}")
        if isinstance(content, list):
            content = parts(content, f"{field}.{content_key}")
        message = Message(role, content, _origin(key, i, role_key, content_key))
        if has_calls:
            message.tool_calls = calls(turn["tool_calls"], f"{field}.tool_calls")
        if calls is not None and role == "tool":
            for attr in ("tool_call_id", "name"):
                if turn.get(attr) is not None:
                    setattr(message, attr, check_type(turn[attr], str, where, f"{field}.{attr}"))
        messages.append(message)
    return messages


def _origin(key: str, i: int, role_key: str, content_key: str) -> dict:
    return {"role": f"{key}[{i}].{role_key}", "content": f"{key}[{i}].{content_key}"}


def field_origin(name: str) -> dict:
    """The origin of a message made from one record key (an Alpaca `output`, a top-level `system`)."""
    return {"role": name, "content": name}


def take_system(record: dict, messages: list[Message], where: str, turns: str) -> None:
    """A top-level `system` (ShareGPT / LLaMA-Factory) becomes the conversation's system message.
    A system turn that says something else as well is an error: which one was meant is a guess."""
    system = optional(record, "system", str, where)
    if not system or not system.strip():
        return
    if messages and messages[0].role == "system":
        if messages[0].content != system:
            raise field_error(where, "system", f"record has a 'system' key and a different system turn ({turns}[0])",
                              hint="keep one of the two system prompts")
        return
    messages.insert(0, Message("system", system, field_origin("system")))


def count_placeholders(messages: list[Message]) -> int:
    return sum(m.content.count(IMAGE_PLACEHOLDER) for m in messages if isinstance(m.content, str))


def place_images(messages: list[Message], images: list[str], where: str, field: str) -> None:
    """Make the number of <image> placeholders match `images`.

    Text without any placeholder gets them prepended to the first user message (the LLaVA
    convention); any other mismatch is an error, because guessing would pair text with the
    wrong picture.
    """
    n_text = count_placeholders(messages)
    if images and n_text == 0:
        first_user = next((m for m in messages if m.role == "user" and isinstance(m.content, str)), None)
        if first_user is not None:
            first_user.content = f"{IMAGE_PLACEHOLDER}\n" * len(images) + first_user.content
            return
    if n_text != len(images):
        raise field_error(
            where, field,
            f"text has {n_text} {IMAGE_PLACEHOLDER} placeholder(s) but the record has {len(images)} image(s)",
            hint=f"put one {IMAGE_PLACEHOLDER} in the text where each image goes",
        )

