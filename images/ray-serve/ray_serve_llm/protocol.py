"""The OpenAI chat completions protocol: the subset this server speaks, its validation, and
OpenAI-style errors.

Validation happens before any token is generated, so a bad request is always a 4xx with
`{"error": {"message", "type", "param", "code"}}`, never a 500 and never a broken stream.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json

MAX_TEMPERATURE = 2.0


class OpenAIError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code
        # Response headers that go with it (Retry-After on a 429, WWW-Authenticate on a 401).
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# OpenAI's range for `seed`; beyond it torch and vLLM cannot seed a generator.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class _Strict(BaseModel):
    # No JSON-type coercion (`max_tokens: true` is not 1, `stream: "yes"` is not true) and
    # no unknown field silently dropped: each is a 400 that names it.
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    # "developer" is what newer OpenAI clients call the system message.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_template_message(self) -> dict[str, str]:
        """What the chat template reads: plain role and text."""
        content = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str | None = Field(default=None, min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    # An end-user id OpenAI keeps for abuse monitoring; it never changes the answer.
    user: str | None = None

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


def _absent(value: Any) -> bool:
    return value is None


def _no_list(value: Any) -> bool:
    return value is None or value == []


def _no_stop(value: Any) -> bool:
    return value is None or value == [] or value == ""


def _no_bias(value: Any) -> bool:
    return value is None or value == {}


def _zero(value: Any) -> bool:
    # `type(...) in` rather than isinstance: `false` is not the number 0.
    return value is None or (type(value) in (int, float) and value == 0)


def _false(value: Any) -> bool:
    return value is None or value is False


# OpenAI parameters this server does not implement. Each is accepted only with the value
# that asks for nothing beyond what the server does anyway (its default); any other value
# is refused with a 400 naming it, never ignored. Values: (is neutral, what is accepted).
UNSUPPORTED_PARAMETERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "stop": (_no_stop, "null, '' or an empty list"),
    "tools": (_no_list, "null or an empty list"),
    "tool_choice": (lambda value: value is None or value == "none", "null or 'none'"),
    "parallel_tool_calls": (_absent, "null"),
    "functions": (_no_list, "null or an empty list"),
    "function_call": (lambda value: value is None or value == "none", "null or 'none'"),
    "logprobs": (_false, "null or false"),
    "top_logprobs": (_absent, "null"),
    "logit_bias": (_no_bias, "null or {}"),
    "presence_penalty": (_zero, "null or 0"),
    "frequency_penalty": (_zero, "null or 0"),
    "response_format": (lambda value: value is None or value == {"type": "text"}, 'null or {"type": "text"}'),
}
# The same for the fields of a message: what a client replaying an earlier answer (e.g. the
# openai client's `message.model_dump()`) sends back, empty.
UNSUPPORTED_MESSAGE_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_absent, "null"),
    "tool_calls": (_no_list, "null or an empty list"),
    "function_call": (_absent, "null"),
    "refusal": (_absent, "null"),
    "audio": (_absent, "null"),
    "annotations": (_no_list, "null or an empty list"),
}


# JSON spends at most this many bytes on one character of text: one outside the Basic
# Multilingual Plane written as an escaped surrogate pair, "\ud83d\ude00".
MAX_JSON_BYTES_PER_CHAR = 12
# Room in a body for all but the messages' text: field names, the other parameters, JSON
# punctuation and ordinary whitespace.
BODY_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class RequestLimits:
    """What a request can hold and still fit the context, known before any tokenizing.

    Each token stands for at most `max_chars_per_token` characters (the longest entry of the
    tokenizer's vocabulary), so a prompt of N characters takes at least N / that many
    tokens: text beyond `max_prompt_chars` can never fit `max_model_len` tokens. A body beyond
    `max_body_bytes` holds more text than that, however escaped, unless it is mostly padding
    (whitespace, empty parts): it is answered 413 before it is even read."""

    max_model_len: int
    max_chars_per_token: int

    @property
    def max_prompt_chars(self) -> int:
        return self.max_model_len * self.max_chars_per_token

    @property
    def max_body_bytes(self) -> int:
        return self.max_prompt_chars * MAX_JSON_BYTES_PER_CHAR + BODY_OVERHEAD_BYTES

    def body_too_large(self, declared: int | None) -> OpenAIError:
        """`declared`: the Content-Length, None for a chunked body cut off at the limit."""
        size = f"{declared} bytes" if declared is not None else f"more than {self.max_body_bytes} bytes"
        return OpenAIError(
            f"The request body is {size}; this server takes at most {self.max_body_bytes} bytes, "
            f"as no more can fit its context of {self.max_model_len} tokens.",
            status_code=413,
            code="request_too_large",
        )

    def check_prompt_chars(self, chars: int, *, param: str) -> None:
        if chars > self.max_prompt_chars:
            raise OpenAIError(
                f"This model's maximum context length is {self.max_model_len} tokens; '{param}' holds "
                f"{chars} characters, and no more than {self.max_prompt_chars} fit in that many tokens.",
                param=param,
                code="context_length_exceeded",
            )


def _param(loc: tuple[Any, ...]) -> str:
    """('messages', 1, 'role') -> 'messages[1].role', as OpenAI names params."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The request's JSON object. pydantic's parser (not `json`) because it refuses, with a
    position, what would otherwise fail later as a 500: nesting deeper than it recurses
    (a RecursionError in `json`), a lone UTF-16 surrogate such as "\\ud800" (valid JSON
    syntax, but no character: the tokenizer cannot encode it), NaN and Infinity (not JSON)."""
    try:
        body = from_json(raw, allow_inf_nan=False)
    except ValueError as error:
        hint = ""
        if "surrogate" in str(error) or "hex escape" in str(error):
            hint = " Strings must be valid Unicode: a \\uD800-\\uDFFF escape is only valid as half of a surrogate pair."
        raise OpenAIError(
            f"We could not parse the JSON body of your request: {error}. The body must be one UTF-8 JSON object.{hint}",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise OpenAIError("The request body must be a JSON object.", code="invalid_json")
    return body


def _refuse_unsupported(
    fields: dict[str, Any], table: dict[str, tuple[Callable[[Any], bool], str]], prefix: str
) -> dict[str, Any]:
    """Raises for the first unsupported field with a non-neutral value; returns the others."""
    for name, (neutral, accepted) in table.items():
        if name in fields and not neutral(fields[name]):
            param = f"{prefix}{name}"
            raise OpenAIError(
                f"Unsupported parameter: '{param}' is not supported by this server; it accepts only {accepted}.",
                param=param,
                code="unsupported_parameter",
            )
    return {key: value for key, value in fields.items() if key not in table}


def parse_chat_request(body: dict[str, Any], *, max_tokens_limit: int) -> ChatCompletionRequest:
    """Validates a chat completion request; raises `OpenAIError` naming the bad param."""
    if "messages" in body and body["messages"] == []:
        raise OpenAIError("'messages' must contain at least one message.", param="messages", code="empty_array")
    body = _refuse_unsupported(body, UNSUPPORTED_PARAMETERS, "")
    if isinstance(body.get("messages"), list):
        body["messages"] = [
            _refuse_unsupported(message, UNSUPPORTED_MESSAGE_FIELDS, f"messages[{index}].")
            if isinstance(message, dict)
            else message
            for index, message in enumerate(body["messages"])
        ]
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        # A union (str | list of parts) reports one error per branch; name the field only.
        loc = tuple(part for part in first["loc"] if not (isinstance(part, str) and ("[" in part or part == "str")))
        param = _param(loc)
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            raise OpenAIError(
                f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
            ) from None
        if first["type"] == "extra_forbidden":
            raise OpenAIError(
                f"Unrecognized request argument supplied: '{param}'.", param=param, code="unknown_parameter"
            ) from None
        if len(loc) >= 3 and loc[0] == "messages" and loc[2] == "content":
            param = _param(loc[:3])
            raise OpenAIError(
                f"Invalid value for '{param}': it must be a string or a list of text parts "
                '({"type": "text", "text": "..."}); other content types are not supported.',
                param=param,
                code="invalid_value",
            ) from None
        if loc[-1:] == ("role",):
            raise OpenAIError(
                f"Invalid value for '{param}': {first.get('input')!r}. Supported roles are "
                "'system', 'developer', 'user' and 'assistant'.",
                param=param,
                code="invalid_value",
            ) from None
        raise OpenAIError(f"Invalid value for '{param}': {message}.", param=param, code="invalid_value") from None
    if request.stream_options is not None and not request.stream:
        raise OpenAIError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    wanted = request.requested_max_tokens
    if wanted is not None and not 1 <= wanted <= max_tokens_limit:
        param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        raise OpenAIError(
            f"Invalid '{param}': {wanted}. It must be between 1 and {max_tokens_limit}.",
            param=param,
            code="invalid_value",
        )
    return request


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    *, chat_id: str, model: str, created: int, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": chat_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chunk_body(
    *, chat_id: str, model: str, created: int, delta: dict[str, Any], finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": chat_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"


SSE_DONE = sse("[DONE]")
