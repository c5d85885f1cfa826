"""The OpenAI chat-completions request: its schema, its errors, and its conversion to engine inputs.

Field policy (documented in docs/deploy.md): fields we honour are typed below (`tools` and
`tool_choice` "auto"/"none" included: tool definitions go into the prompt through the model's chat
template, and calls come back as OpenAI `tool_calls`); fields OpenAI clients commonly send that do
not change the answer (`user`, `metadata`, `store`, ...) are accepted and ignored; fields asking for
something this server cannot do (`n` > 1, `logprobs`, `tool_choice` "required" or a named function,
a JSON `response_format`, ...) are a 400 naming the field, so a client never gets a silently
different answer; any other field is a 400 "unrecognized request argument" (catches typos such as
`max_token`).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmtune.data.conversation import IMAGE_PLACEHOLDER, Message
from mmtune.infer.engine import GenerationSettings


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    # strict: JSON types as sent ("stream": "yes" or "max_tokens": "5" is a 400, not a guess)
    model_config = ConfigDict(extra="forbid", strict=True)


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Strict):
    # One model rather than a union of part types: validation errors then name plain fields.
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _has_its_field(self):
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text'")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs 'image_url': {'url': ...}")
        return self


class FunctionCall(_Strict):
    name: str
    arguments: str  # a JSON object, as a string (OpenAI's shape)


class ToolCallIn(_Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: list[ContentPart]  # a plain string arrives as one text part; null (an assistant's tool call) as none
    name: str | None = None  # a tool message's tool; otherwise accepted, not used by chat templates
    tool_calls: list[ToolCallIn] | None = None  # an assistant message's calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    @model_validator(mode="before")
    @classmethod
    def _calls_need_no_content(cls, data):
        # OpenAI lets an assistant message that calls tools leave `content` out (its client does).
        if isinstance(data, dict) and data.get("role") == "assistant" and data.get("tool_calls") \
                and "content" not in data:
            return {**data, "content": None}
        return data

    @field_validator("content", mode="before")
    @classmethod
    def _string_is_one_text_part(cls, value):
        if value is None:
            return []
        return [{"type": "text", "text": value}] if isinstance(value, str) else value


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # accepted and ignored


# OpenAI fields that would change the answer in ways we cannot honour: a 400 unless left at the default.
UNSUPPORTED_DEFAULTS = {"n": 1, "logprobs": False, "top_logprobs": None, "functions": None,
                        "function_call": None, "response_format": None, "audio": None,
                        "modalities": None, "logit_bias": None, "prediction": None, "web_search_options": None,
                        "frequency_penalty": 0, "presence_penalty": 0}
_DEFAULT_OK = {"response_format": ({"type": "text"},), "modalities": (["text"],), "logit_bias": ({},),
               "functions": ([],)}


class ChatRequest(_Strict):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # OpenAI's newer name for max_tokens
    stop: Union[str, list[str], None] = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)  # the range torch's generators take
    stream: bool = False
    stream_options: StreamOptions | None = None

    # Known to OpenAI and accepted; these do not change the answer and are ignored.
    user: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    prompt_cache_key: Any = None
    safety_identifier: Any = None
    parallel_tool_calls: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    # Known to OpenAI, and a 400 unless left at the default (UNSUPPORTED_DEFAULTS).
    tools: list | None = None  # checked by tool_definitions
    tool_choice: Any = None  # "auto" or "none" (checked by tool_definitions)
    # Known to OpenAI, and a 400 unless left at the default (UNSUPPORTED_DEFAULTS).
    n: Any = 1
    logprobs: Any = False
    top_logprobs: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: Any = None
    audio: Any = None
    modalities: Any = None
    logit_bias: Any = None
    prediction: Any = None
    web_search_options: Any = None
    frequency_penalty: Any = 0
    presence_penalty: Any = 0


def parse_request(data: Any) -> ChatRequest:
    """A decoded JSON body -> a valid request, or an APIError saying which field is wrong."""
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as e:
        raise _field_error(e) from None
    for name, default in UNSUPPORTED_DEFAULTS.items():
        value = getattr(request, name)
        if value is not None and value != default and value not in _DEFAULT_OK.get(name, ()):
            raise APIError(400, f"'{name}' is not supported by this server (leave it out)", param=name,
                           code="unsupported_parameter")
    stops = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    if len(stops) > 4:
        raise APIError(400, "'stop' takes at most 4 sequences", param="stop")
    _refuse_lone_surrogates(request, stops)
    return request


def _refuse_lone_surrogates(request: ChatRequest, stops: list[str]) -> None:
    """JSON may carry half a character ("\\ud800"); no tokenizer can encode it: a 400, not a 500."""
    texts = [(f"messages.{i}.content.{j}.text", part.text) for i, m in enumerate(request.messages)
             for j, part in enumerate(m.content) if part.text]
    texts += [(f"stop.{k}", stop) for k, stop in enumerate(stops)]
    for param, text in texts:
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise APIError(400, f"invalid '{param}': the text holds a lone surrogate (half of a character)",
                               param=param, code="invalid_value") from None


def tool_definitions(request: ChatRequest) -> list[dict] | None:
    """The request's tools as chat templates take them; None when it sends none or says
    `tool_choice: "none"` (then the model is not told about them)."""
    from mmtune.data.formats.tools import read_tools
    from mmtune.errors import DataError

    choice = request.tool_choice
    if choice not in (None, "auto", "none"):
        raise APIError(400, "'tool_choice' may be 'auto' or 'none' here: the model decides whether to call a tool "
                            "(forcing a call is not supported)", param="tool_choice", code="unsupported_parameter")
    if not request.tools or choice == "none":
        return None
    try:
        return read_tools(request.tools, "request", "tools")
    except DataError as e:
        raise APIError(400, f"invalid 'tools': {e.message}", param="tools", code="invalid_value") from None


def image_part_count(request: ChatRequest) -> int:
    """Image parts in the request, counted before any is decoded."""
    return sum(part.type == "image_url" for m in request.messages for part in m.content)


def _field_error(e: ValidationError) -> APIError:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return APIError(400, f"unrecognized request argument supplied: {loc}", param=loc, code="unknown_parameter")
    if err["type"] == "missing":
        return APIError(400, f"'{loc}' is required", param=loc, code="missing_required_parameter")
    reason = err["msg"].removeprefix("Value error, ")
    return APIError(400, f"invalid '{loc}': {reason}" if loc else reason, param=loc or None, code="invalid_value")


def to_messages(request: ChatRequest, max_image_bytes: int, max_image_pixels: int = 50_000_000) -> tuple[list[Message], list]:
    """Engine messages, with IMAGE_PLACEHOLDER where each image part was, and the decoded images.

    Leading system/developer messages become one system message (chat templates take one, first);
    the last message must be the user's (or a tool result), since the server answers it."""
    messages: list[Message] = []
    images: list = []
    for i, m in enumerate(request.messages):
        role = "system" if m.role == "developer" else m.role
        if role == "system" and any(x.role != "system" for x in messages):
            raise APIError(400, "system messages may only come before the conversation", param=f"messages.{i}.role")
        text = _content_text(m.content, f"messages.{i}.content", images, max_image_bytes, max_image_pixels)
        if role == "system" and messages:
            messages[0] = Message("system", messages[0].content + "\n\n" + text)
        else:
            messages.append(_message(role, text, m, i))
    if not messages or messages[-1].role not in ("user", "tool"):
        raise APIError(400, "the last message must be from the user (or a tool result)", param="messages")
    turns = [m for m in messages if m.role != "system"]
    if turns[0].role != "user":  # chat templates (and training) start a conversation with the user
        raise APIError(400, "the conversation must start with a user message (after any system message)",
                       param="messages")
    return messages, images


def _message(role: str, text: str, m: ChatMessage, i: int) -> Message:
    """An engine message, with an assistant's tool calls (arguments parsed) or a tool result's id."""
    import json

    from mmtune.data.conversation import ToolCall

    if m.tool_calls and role != "assistant":
        raise APIError(400, "only assistant messages carry tool_calls", param=f"messages.{i}.tool_calls")
    calls = []
    for j, call in enumerate(m.tool_calls or []):
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise APIError(400, "tool call arguments must be a JSON object (as a string)",
                           param=f"messages.{i}.tool_calls.{j}.function.arguments", code="invalid_value")
        calls.append(ToolCall(call.function.name, arguments, call.id))
    if role == "tool":
        return Message("tool", text, tool_call_id=m.tool_call_id, name=m.name)
    return Message(role, text, tool_calls=calls)


def _content_text(content: list[ContentPart], param: str, images: list, max_image_bytes: int,
                  max_image_pixels: int) -> str:
    pieces = []
    for j, part in enumerate(content):
        if part.type == "text":
            pieces.append(part.text)
        else:
            images.append(decode_image_url(part.image_url.url, f"{param}.{j}.image_url.url", max_image_bytes,
                                           max_image_pixels))
            pieces.append(IMAGE_PLACEHOLDER)
    return "\n".join(pieces)


_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*),(?P<data>.*)$", re.S)


def decode_image_url(url: str, param: str, max_image_bytes: int, max_image_pixels: int = 50_000_000):
    """A `data:image/...;base64,...` URL -> a PIL image. Remote URLs are refused: the server fetches nothing.
    The pixel count is read from the image header and checked before anything is decoded (a small
    file can declare a huge image: a decompression bomb)."""
    from PIL import Image, UnidentifiedImageError

    match = _DATA_URL.match(url)
    if not match:
        raise APIError(400, "image_url must be a data URL (data:image/png;base64,...); the server does not fetch URLs",
                       param=param, code="invalid_image_url")
    if not match["mime"].startswith("image/") or ";base64" not in match["params"]:
        raise APIError(400, f"image_url is a {match['mime'] or 'text/plain'} data URL, expected data:image/...;base64,...",
                       param=param, code="invalid_image_url")
    if len(match["data"]) * 3 // 4 > max_image_bytes:  # check before decoding a huge payload
        raise APIError(413, f"image is larger than the server's limit of {max_image_bytes / 2**20:.1f} MiB",
                       param=param, code="image_too_large")
    too_big = APIError(400, f"image has more pixels than the server's limit of {max_image_pixels / 1e6:g} MP",
                       param=param, code="image_too_large")
    try:
        raw = base64.b64decode(match["data"], validate=True)
        image = Image.open(io.BytesIO(raw))  # reads the header only
        width, height = image.size
        if width * height > max_image_pixels:
            raise too_big
        image.load()
    except Image.DecompressionBombError:  # PIL's own limit, hit while opening
        raise too_big from None
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise APIError(400, "image_url does not hold a readable image", param=param, code="invalid_image") from None
    return image.convert("RGB")


def to_settings(request: ChatRequest, default_max_tokens: int) -> tuple[GenerationSettings, bool]:
    """Engine settings, and whether the client chose max_tokens (then it must fit the context)."""
    chosen = request.max_completion_tokens or request.max_tokens
    stops = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    settings = GenerationSettings(
        max_new_tokens=chosen or default_max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,  # OpenAI's default
        top_p=1.0 if request.top_p is None else request.top_p,
        seed=request.seed,
        stop=tuple(s for s in stops if s),
    )
    return settings, chosen is not None
