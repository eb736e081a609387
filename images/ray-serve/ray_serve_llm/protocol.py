"""The OpenAI chat completions protocol: the subset this server speaks, its validation, and
OpenAI-style errors.

Validation happens before any token is generated, so a bad request is always a 4xx with
`{"error": {"message", "type", "param", "code"}}`, never a 500 and never a broken stream.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_TEMPERATURE = 2.0


class OpenAIError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # "developer" is what newer OpenAI clients call the system message.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_template_message(self) -> dict[str, str]:
        """What the chat template reads: plain role and text."""
        content = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Unknown optional fields (user, presence_penalty, ...) are accepted and ignored, as
    # OpenAI-compatible servers do; the ones that would change the answer are refused below.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)
    stop: None = Field(default=None, description="Stop sequences are not supported.")
    tools: None = Field(default=None, description="Tool calls are not supported.")

    @field_validator("stop", "tools", mode="before")
    @classmethod
    def _unsupported(cls, value: Any) -> None:
        if value in (None, [], ""):
            return None
        raise ValueError("is not supported by this server")

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


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
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OpenAIError(
            "We could not parse the JSON body of your request: it is not valid JSON.", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise OpenAIError("The request body must be a JSON object.", code="invalid_json")
    return body


def parse_chat_request(body: dict[str, Any], *, max_tokens_limit: int) -> ChatCompletionRequest:
    """Validates a chat completion request; raises `OpenAIError` naming the bad param."""
    if "messages" in body and body["messages"] == []:
        raise OpenAIError("'messages' must contain at least one message.", param="messages", code="empty_array")
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        # A union (str | list of parts) reports one error per branch; name the field only.
        loc = tuple(part for part in first["loc"] if not (isinstance(part, str) and ("[" in part or part == "str")))
        param = _param(loc)
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            raise OpenAIError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter") from None
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
