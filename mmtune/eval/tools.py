"""Tool-call accuracy (`mmtune eval tools`): on held-out tool conversations, the model is asked each
user turn (with the record's tools, through the chat template) and its reply is read back with the
template's tool-call markup (data/tool_parse.py).

Per case (an assistant turn right after a user turn; the reference says whether and what to call):
  * tool_name_accuracy     the called tools' names equal the reference's (as a multiset);
  * argument_exact_match   the calls equal the reference's, names and arguments (JSON equality);
  * json_valid_rate        of the replies that tried to call (call markup), those whose calls all parse;
  * false_call_rate        of the cases that need no tool, those where the model called one anyway;
  * no_call_accuracy       of those cases, the ones answered without a call (1 - false_call_rate).
The first two are over the cases that need a call; `n_call` / `n_no_call` count both kinds.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mmtune.data.conversation import Conversation, Message, ToolCall
from mmtune.data.tool_parse import ParsedReply, parse_reply, tool_style
from mmtune.errors import MmtuneError
from mmtune.eval import report


@dataclass
class ToolCase:
    source: str
    prompt: list[Message]
    tools: list[dict]
    reference: Message


def tool_cases(convs: Sequence[Conversation]) -> list[ToolCase]:
    cases = []
    for conv in convs:
        for i, m in enumerate(conv.messages):
            if m.role == "assistant" and i and conv.messages[i - 1].role == "user":
                cases.append(ToolCase(f"{conv.source}:messages[{i}]", conv.messages[:i], conv.tools, m))
    return cases


def _key(call: ToolCall) -> tuple[str, str]:
    return call.name, json.dumps(call.arguments, sort_keys=True)


def score_case(case: ToolCase, parsed: ParsedReply) -> dict:
    wanted = case.reference.tool_calls
    record = {"source": case.source, "needs_call": bool(wanted),
              "reference": [{"name": c.name, "arguments": c.arguments} for c in wanted],
              "calls": [{"name": c.name, "arguments": c.arguments} for c in parsed.calls],
              "invalid": parsed.invalid, "content": parsed.content}
    if wanted:
        record["name_ok"] = Counter(c.name for c in parsed.calls) == Counter(c.name for c in wanted)
        record["arguments_ok"] = Counter(map(_key, parsed.calls)) == Counter(map(_key, wanted))
    else:
        record["called"] = parsed.attempted
    return record


def summarize(records: list[dict]) -> dict:
    calls = [r for r in records if r["needs_call"]]
    plain = [r for r in records if not r["needs_call"]]
    tried = [r for r in records if r["calls"] or r["invalid"]]

    def rate(rows, key) -> float | None:
        return sum(bool(r[key]) for r in rows) / len(rows) if rows else None

    false_call = rate(plain, "called")
    return {"n": len(records), "n_call": len(calls), "n_no_call": len(plain),
            "tool_name_accuracy": rate(calls, "name_ok"), "argument_exact_match": rate(calls, "arguments_ok"),
            "json_valid_rate": sum(not r["invalid"] for r in tried) / len(tried) if tried else None,
            "false_call_rate": false_call, "no_call_accuracy": None if false_call is None else 1 - false_call}


def evaluate_tools(model, tokenizer, template, convs: Sequence[Conversation], *, max_new_tokens: int = 128,
                   batch_size: int = 8) -> tuple[dict, list[dict]]:
    """(summary, one record per case) for a model in memory."""
    from mmtune.infer.engine import GenerationSettings, generate_replies

    style = tool_style(template)
    if style is None:
        raise MmtuneError(f"template {getattr(template, 'name', template)!r} writes no tool calls mmtune can read",
                          hint="use qwen_chat, qwen3_chat, llama3_1_chat, internlm2_chat or a tool-aware auto template")
    cases = tool_cases(convs)
    if not cases:
        raise MmtuneError("no assistant turn after a user turn to evaluate")
    settings = GenerationSettings(max_new_tokens=max_new_tokens, keep_special_tokens=True)
    records = []
    for start in range(0, len(cases), batch_size):
        batch = cases[start:start + batch_size]
        replies = generate_replies(model, tokenizer, template, [c.prompt for c in batch], settings,
                                   tools=[c.tools for c in batch])
        for case, reply in zip(batch, replies):
            records.append({**score_case(case, parse_reply(reply, style)), "reply": reply})
    return summarize(records), records


def run_tool_eval(model_path: str, data: str, work_dir: str | Path, *, adapter: str | None = None,
                  template: str | None = None, data_format: str = "auto", max_new_tokens: int = 128,
                  batch_size: int = 8, device: str = "auto", trust_remote_code: bool = False) -> dict:
    from mmtune.data.formats import read_file
    from mmtune.infer.load import load_for_inference

    convs, _ = read_file(data, data_format)
    loaded = load_for_inference(model_path, adapter=adapter, template=template, device=device,
                                trust_remote_code=trust_remote_code)
    summary, records = evaluate_tools(loaded.model, loaded.tokenizer, loaded.template, convs,
                                      max_new_tokens=max_new_tokens, batch_size=batch_size)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    summary["data"] = str(data)
    report.write_jsonl(records, work_dir / "predictions.jsonl")
    report.write_json(summary, work_dir / "summary.json")
    return summary
