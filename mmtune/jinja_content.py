"""Chat templates that take list content: the jinja step shared by mmtune's named templates (data)
and the processors of LLaVA models assembled from parts (models).

transformers' processors are called with OpenAI-style content lists; mmtune trains on text with
`<image>` placeholders. `with_content_parts` puts a preamble in front of a jinja template that turns
each list-content message into that text first, so both calls render the same prompt.
"""

from __future__ import annotations

import json

from mmtune.constants import IMAGE_PLACEHOLDER


PARTS_MARK = "{#- mmtune: list content -> text #}"


def with_content_parts(template: str, image_token: str = IMAGE_PLACEHOLDER) -> str:
    """The jinja `template` made to take OpenAI-style list content as well, the way transformers'
    processors are called (`[{"type": "image"}, {"type": "text", "text": "What is it?"}]`): each
    such message is first turned into the text training saw, image parts as `image_token`, parts
    joined by newlines (as mmtune's readers join them), so "<image>\nWhat is it?". String content is
    untouched. Applying it twice changes nothing."""
    if template.startswith(PARTS_MARK):
        return template
    preamble = (
        PARTS_MARK + "\n"
        "{%- set parts_ns = namespace(messages=[]) %}\n"
        "{%- for m in messages %}\n"
        "{%- if m['content'] is string or m['content'] is none %}\n"
        "{%- set parts_ns.messages = parts_ns.messages + [m] %}\n"
        "{%- else %}\n"
        "{%- set texts = namespace(items=[]) %}\n"
        "{%- for part in m['content'] %}\n"
        "{%- if part['type'] == 'text' %}{%- set texts.items = texts.items + [part['text']] %}\n"
        "{%- elif part['type'] in ('image', 'image_url') %}{%- set texts.items = texts.items + ["
        + json.dumps(image_token) + "] %}\n"
        "{%- endif %}\n"
        "{%- endfor %}\n"
        "{%- set parts_ns.messages = parts_ns.messages + [{'role': m['role'], 'content': texts.items | join('\\n')}] %}\n"
        "{%- endif %}\n"
        "{%- endfor %}\n"
        "{%- set messages = parts_ns.messages %}\n"
    )
    return preamble + template
