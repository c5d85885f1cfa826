"""What makes tool-call data wrong although it parses: a call to a tool the record does not define,
arguments that do not match the tool's JSON schema (required keys, types, enums, ...: checked with
`jsonschema`), a tool result with no call to answer, a call never answered before the next user turn
or the end (OpenAI: one tool message per call, by `tool_call_id` or in order; ShareGPT: an
observation turn answers all calls of the function_call turn before it). Each problem is (field in the record's own terms, reason); such records are bad records,
named and counted like every other (training skips them, `data check` lists them)."""

from __future__ import annotations

import json
from functools import lru_cache

from mmtune.data.conversation import Conversation, Message


@lru_cache(maxsize=256)
def _validator(schema_json: str):
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    schema = json.loads(schema_json)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        return str(e.message)
    return Draft202012Validator(schema)


def argument_problem(parameters: dict, arguments: dict) -> str | None:
    """Why `arguments` do not match the JSON schema `parameters` (None when they do)."""
    validator = _validator(json.dumps(parameters, sort_keys=True))
    if isinstance(validator, str):
        return f"the tool's parameters are not a valid JSON schema ({validator})"
    errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    first = errors[0]
    where = ".".join(str(p) for p in first.absolute_path)
    return (f"{where}: " if where else "") + first.message


def _base(m: Message, i: int) -> str:
    return m.origin["role"].rsplit(".", 1)[0] if m.origin else f"messages[{i}]"


def _calls_field(m: Message, i: int, j: int) -> str:
    """Where call j of message i stands in the record: OpenAI's tool_calls[j], or a ShareGPT
    function_call turn's value."""
    if m.origin and not m.origin["content"].endswith(".content"):
        return m.origin["content"]
    return f"{_base(m, i)}.tool_calls[{j}]"


def tool_problems(conv: Conversation) -> list[tuple[str, str]]:
    defined = {t["function"]["name"]: t["function"] for t in conv.tools}
    problems: list[tuple[str, str]] = []
    pending: list[tuple[int, int, str | None, str]] = []  # (message, call, id, name) not yet answered

    def unanswered(reason: str) -> None:
        for i, j, _, name in pending:
            problems.append((_calls_field(conv.messages[i], i, j), f"tool call {name!r} {reason}"))
        pending.clear()

    for i, m in enumerate(conv.messages):
        if m.role == "user":
            unanswered("is never answered before the next user turn")
        elif m.role == "assistant":
            unanswered("is never answered (an assistant turn follows)")
            for j, call in enumerate(m.tool_calls):
                at = _calls_field(m, i, j)
                if call.name not in defined:
                    known = ", ".join(defined) if defined else "the record defines no tools"
                    problems.append((at, f"calls tool {call.name!r}, which is not defined ({known})"))
                else:
                    why = argument_problem(defined[call.name].get("parameters") or {}, call.arguments)
                    if why:
                        problems.append((at, f"arguments of {call.name!r} do not match its parameters: {why}"))
                pending.append((i, j, call.id, call.name))
        elif m.role == "tool":
            at = f"{_base(m, i)}.{'tool_call_id' if m.tool_call_id else (m.origin or {}).get('role', 'role').rsplit('.', 1)[-1]}"
            if m.tool_call_id:
                match = next((p for p in pending if p[2] == m.tool_call_id), None)
                if match is None:
                    problems.append((at, f"answers call id {m.tool_call_id!r}, which no call before it has"))
                else:
                    pending.remove(match)
            elif pending and m.origin and m.origin["content"].endswith(".value"):
                pending.clear()  # ShareGPT: one observation turn holds the results of the turn's calls
            elif pending:
                pending.pop(0)
            else:
                problems.append((at, "a tool result with no call left to answer"))
    unanswered("is never answered (the conversation ends)")
    return problems
