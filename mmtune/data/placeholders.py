"""Template placeholders such as `{{name}}` in answers (LLaMA-Factory's identity.json), found and filled.

Trained as they are, the model learns to call itself "{{name}}". `data.replace: {name: Nova,
author: Ada}` fills them when the data is read; whatever stays unfilled is reported (by `data check`
and by training) with that fix. Not an error: code answers (Jinja, Vue, Handlebars) hold `{{ x }}`
on purpose.
"""

from __future__ import annotations

import re

from mmtune.data.conversation import Conversation

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")


def fill_placeholders(convs: list[Conversation], replace: dict[str, str]) -> None:
    """Replace `{{key}}` (spaces inside the braces allowed) by replace[key] in every message, in place."""
    if not replace:
        return

    def sub(match: re.Match) -> str:
        return str(replace[match.group(1)]) if match.group(1) in replace else match.group(0)

    for conv in convs:
        for m in conv.messages:
            if "{{" in m.content:
                m.content = PLACEHOLDER.sub(sub, m.content)


def find_placeholders(convs: list[Conversation]) -> tuple[dict[str, int], list[str]]:
    """({name: records holding it}, the places of the first few) for the placeholders left in the data."""
    counts: dict[str, int] = {}
    places: list[str] = []
    for conv in convs:
        names: set[str] = set()
        for i, m in enumerate(conv.messages):
            found = PLACEHOLDER.findall(m.content) if "{{" in m.content else []
            if found:
                names.update(found)
                if len(places) < 3:
                    field = m.origin["content"] if m.origin else f"messages[{i}].content"
                    places.append(f"{conv.source}:{field}")
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return counts, places


def fill_and_report(convs: list[Conversation], replace: dict[str, str]) -> str | None:
    """Fill the placeholders `replace` names, in place; the line about those left, or None."""
    fill_placeholders(convs, replace)
    counts, places = find_placeholders(convs)
    return describe_placeholders(counts, places) if counts else None


def describe_placeholders(counts: dict[str, int], places: list[str]) -> str:
    """One line: which placeholders, in how many records, where first, and how to fill them."""
    names = ", ".join(f"{{{{{n}}}}} ({c} records)" for n, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    example = ", ".join(f"{n}: ..." for n in sorted(counts))
    return (f"template placeholders left in the data would be trained as written: {names}; first at "
            f"{', '.join(places)}. Fill them with `--set data.replace='{{{example}}}'` (or a `replace:` "
            "mapping in the recipe's data section), or write the data with `mmtune data self-cognition`")
