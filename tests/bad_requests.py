"""Bad requests to the OpenAI API, one per class of mistake, with the exact error each gets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.serve_backend import (
    MAX_MODEL_LEN,
    MAX_TOKENS_LIMIT,
    SERVED_MODEL,
    USER,
)

# isort: split


# --- Bad requests: OpenAI-style 4xx, never 500 ------------------------------------------
#
# Each case: the class of mistake it stands for, the body (a dict sent as JSON, or raw
# bytes), and the exact error: status, param, code and a part of the message. The type is
# always invalid_request_error and the body always OpenAI's {"error": {...}}.

WRONG_TYPE, OUT_OF_RANGE, EMPTY, HUGE, ENCODING = "wrong type", "out of range", "empty", "huge", "malformed encoding"
UNSUPPORTED, UNKNOWN = "unsupported parameter", "unknown parameter"
CLASSES = (WRONG_TYPE, OUT_OF_RANGE, EMPTY, HUGE, ENCODING, UNSUPPORTED, UNKNOWN)


@dataclass(frozen=True)
class Bad:
    kind: str
    body: dict | bytes
    status: int
    param: str | None
    code: str
    message_part: str


def _chat(**fields) -> dict:
    return {"model": SERVED_MODEL, "messages": USER, **fields}


def raw_with_content(content_json: str) -> bytes:
    """A request whose message content is the given JSON string literal, byte for byte."""
    return b'{"messages": [{"role": "user", "content": ' + content_json.encode() + b"}]}"


OVER_INT64 = 1180591620717411303424  # 2**70
# Deep enough to overflow any recursive JSON parser, small enough to pass the body limit.
DEEP = 10_000
CHARS_PER_TOKEN = 13  # the tiny model's longest token, '▁availability'
MAX_PROMPT_CHARS = MAX_MODEL_LEN * CHARS_PER_TOKEN
MAX_BODY_BYTES = MAX_PROMPT_CHARS * 12 + 64 * 1024

BAD_REQUESTS = {
    # wrong type: no JSON-type coercion
    "max_tokens true": Bad(WRONG_TYPE, _chat(max_tokens=True), 400, "max_tokens", "invalid_value", "valid integer"),
    "max_tokens string": Bad(WRONG_TYPE, _chat(max_tokens="many"), 400, "max_tokens", "invalid_value", "valid integer"),
    "max_tokens float": Bad(WRONG_TYPE, _chat(max_tokens=8.0), 400, "max_tokens", "invalid_value", "valid integer"),
    "stream yes": Bad(WRONG_TYPE, _chat(stream="yes"), 400, "stream", "invalid_value", "valid boolean"),
    "stream 1": Bad(WRONG_TYPE, _chat(stream=1), 400, "stream", "invalid_value", "valid boolean"),
    "temperature string": Bad(
        WRONG_TYPE, _chat(temperature="0.5"), 400, "temperature", "invalid_value", "valid number"
    ),
    "seed string": Bad(WRONG_TYPE, _chat(seed="42"), 400, "seed", "invalid_value", "valid integer"),
    "seed float": Bad(WRONG_TYPE, _chat(seed=1.5), 400, "seed", "invalid_value", "valid integer"),
    "n string": Bad(WRONG_TYPE, _chat(n="1"), 400, "n", "invalid_value", "valid integer"),
    "model number": Bad(WRONG_TYPE, _chat(model=7), 400, "model", "invalid_value", "valid string"),
    "user number": Bad(WRONG_TYPE, _chat(user=7), 400, "user", "invalid_value", "valid string"),
    "messages string": Bad(WRONG_TYPE, {"messages": "hi"}, 400, "messages", "invalid_value", "valid list"),
    "message not an object": Bad(
        WRONG_TYPE, {"messages": ["hi"]}, 400, "messages[0]", "invalid_value", "valid dictionary"
    ),
    "role number": Bad(
        WRONG_TYPE,
        {"messages": [{"role": 1, "content": "hi"}]},
        400,
        "messages[0].role",
        "invalid_value",
        "Invalid value for 'messages[0].role': 1",
    ),
    "bad role": Bad(
        WRONG_TYPE,
        {"messages": [{"role": "robot", "content": "hi"}]},
        400,
        "messages[0].role",
        "invalid_value",
        "Invalid value for 'messages[0].role': 'robot'",
    ),
    "content number": Bad(
        WRONG_TYPE,
        {"messages": [{"role": "user", "content": 42}]},
        400,
        "messages[0].content",
        "invalid_value",
        "list of text parts",
    ),
    "image content": Bad(
        WRONG_TYPE,
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        400,
        "messages[0].content",
        "invalid_value",
        "list of text parts",
    ),
    "stream_options string": Bad(
        WRONG_TYPE,
        _chat(stream=True, stream_options="usage"),
        400,
        "stream_options",
        "invalid_value",
        "valid dictionary",
    ),
    "include_usage string": Bad(
        WRONG_TYPE,
        _chat(stream=True, stream_options={"include_usage": "yes"}),
        400,
        "stream_options.include_usage",
        "invalid_value",
        "valid boolean",
    ),
    "roles do not alternate": Bad(
        WRONG_TYPE,
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
        400,
        "messages",
        "invalid_value",
        "roles must alternate user/assistant",
    ),
    # out of range
    "seed over int64": Bad(
        OUT_OF_RANGE, _chat(seed=OVER_INT64), 400, "seed", "invalid_value", "less than or equal to 9223372036854775807"
    ),
    "seed under int64": Bad(
        OUT_OF_RANGE,
        _chat(seed=-(2**63) - 1),
        400,
        "seed",
        "invalid_value",
        "greater than or equal to -9223372036854775808",
    ),
    "max_tokens zero": Bad(OUT_OF_RANGE, _chat(max_tokens=0), 400, "max_tokens", "invalid_value", "between 1 and 64"),
    "max_tokens above limit": Bad(
        OUT_OF_RANGE,
        _chat(max_tokens=MAX_TOKENS_LIMIT + 1),
        400,
        "max_tokens",
        "invalid_value",
        f"Invalid 'max_tokens': {MAX_TOKENS_LIMIT + 1}",
    ),
    "max_completion_tokens above limit": Bad(
        OUT_OF_RANGE,
        _chat(max_completion_tokens=10**30),
        400,
        "max_completion_tokens",
        "invalid_value",
        f"Invalid 'max_completion_tokens': {10**30}",
    ),
    "temperature too high": Bad(
        OUT_OF_RANGE, _chat(temperature=2.5), 400, "temperature", "invalid_value", "less than or equal to 2"
    ),
    "temperature negative": Bad(
        OUT_OF_RANGE, _chat(temperature=-0.1), 400, "temperature", "invalid_value", "greater than or equal to 0"
    ),
    "top_p zero": Bad(OUT_OF_RANGE, _chat(top_p=0), 400, "top_p", "invalid_value", "greater than 0"),
    "top_p above one": Bad(OUT_OF_RANGE, _chat(top_p=1.5), 400, "top_p", "invalid_value", "less than or equal to 1"),
    "n above 1": Bad(OUT_OF_RANGE, _chat(n=2), 400, "n", "invalid_value", "less than or equal to 1"),
    # empty
    "empty object": Bad(
        EMPTY, {}, 400, "messages", "missing_required_parameter", "Missing required parameter: 'messages'"
    ),
    "empty messages": Bad(EMPTY, {"messages": []}, 400, "messages", "empty_array", "at least one message"),
    "empty model": Bad(EMPTY, _chat(model=""), 400, "model", "invalid_value", "at least 1 character"),
    "missing content": Bad(
        EMPTY,
        {"messages": [{"role": "user"}]},
        400,
        "messages[0].content",
        "missing_required_parameter",
        "messages[0].content",
    ),
    "empty body": Bad(EMPTY, b"", 400, None, "invalid_json", "EOF while parsing"),
    # huge
    "10 MB prompt": Bad(
        HUGE,
        raw_with_content('"' + "x" * 10_000_000 + '"'),
        413,
        None,
        "request_too_large",
        f"this server takes at most {MAX_BODY_BYTES} bytes",
    ),
    "100,000-deep arrays": Bad(
        HUGE,
        b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        413,
        None,
        "request_too_large",
        f"this server takes at most {MAX_BODY_BYTES} bytes",
    ),
    "10,000-deep arrays": Bad(
        HUGE, b'{"messages": ' + b"[" * DEEP + b"]" * DEEP + b"}", 400, None, "invalid_json", "recursion limit exceeded"
    ),
    "more characters than the context holds": Bad(
        HUGE,
        {"messages": [{"role": "user", "content": "x" * (MAX_PROMPT_CHARS + 1)}]},
        400,
        "messages",
        "context_length_exceeded",
        f"'messages' holds {MAX_PROMPT_CHARS + 1} characters",
    ),
    "more tokens than the context holds": Bad(
        HUGE,
        {"messages": [{"role": "user", "content": "word " * (MAX_MODEL_LEN + 10)}]},
        400,
        "messages",
        "context_length_exceeded",
        f"maximum context length is {MAX_MODEL_LEN} tokens; the prompt from 'messages' takes",
    ),
    "seed with 10,000 digits": Bad(
        HUGE, b'{"messages": [], "seed": 1' + b"0" * 10_000 + b"}", 400, None, "invalid_json", "number out of range"
    ),
    # malformed encoding
    "lone surrogate": Bad(ENCODING, raw_with_content('"\\ud800"'), 400, None, "invalid_json", "valid Unicode"),
    "lone trailing surrogate": Bad(
        ENCODING, raw_with_content('"a\\udc00b"'), 400, None, "invalid_json", "lone leading surrogate"
    ),
    "invalid UTF-8": Bad(
        ENCODING,
        b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
        400,
        None,
        "invalid_json",
        "invalid unicode code point",
    ),
    "UTF-16 body": Bad(
        ENCODING, json.dumps({"messages": USER}).encode("utf-16"), 400, None, "invalid_json", "UTF-8 JSON object"
    ),
    "broken JSON": Bad(ENCODING, b"{not json", 400, None, "invalid_json", "key must be a string"),
    "NaN": Bad(ENCODING, b'{"messages": [], "temperature": NaN}', 400, None, "invalid_json", "expected value"),
    "not an object": Bad(ENCODING, b"[1, 2]", 400, None, "invalid_json", "must be a JSON object"),
    # unsupported parameters: refused unless they ask for nothing
    "stop sequences": Bad(
        UNSUPPORTED, _chat(stop=["\n"]), 400, "stop", "unsupported_parameter", "'stop' is not supported"
    ),
    "tools": Bad(
        UNSUPPORTED,
        _chat(tools=[{"type": "function", "function": {"name": "f"}}]),
        400,
        "tools",
        "unsupported_parameter",
        "'tools' is not supported",
    ),
    "tool_choice auto": Bad(
        UNSUPPORTED,
        _chat(tool_choice="auto"),
        400,
        "tool_choice",
        "unsupported_parameter",
        "accepts only null or 'none'",
    ),
    "logprobs": Bad(
        UNSUPPORTED, _chat(logprobs=True), 400, "logprobs", "unsupported_parameter", "'logprobs' is not supported"
    ),
    "top_logprobs": Bad(
        UNSUPPORTED, _chat(top_logprobs=2), 400, "top_logprobs", "unsupported_parameter", "not supported"
    ),
    "response_format json": Bad(
        UNSUPPORTED,
        _chat(response_format={"type": "json_object"}),
        400,
        "response_format",
        "unsupported_parameter",
        'accepts only null or {"type": "text"}',
    ),
    "presence_penalty": Bad(
        UNSUPPORTED,
        _chat(presence_penalty=0.5),
        400,
        "presence_penalty",
        "unsupported_parameter",
        "accepts only null or 0",
    ),
    "frequency_penalty": Bad(
        UNSUPPORTED, _chat(frequency_penalty=1), 400, "frequency_penalty", "unsupported_parameter", "not supported"
    ),
    "frequency_penalty false": Bad(
        UNSUPPORTED, _chat(frequency_penalty=False), 400, "frequency_penalty", "unsupported_parameter", "not supported"
    ),
    "logit_bias": Bad(
        UNSUPPORTED, _chat(logit_bias={"1": 100}), 400, "logit_bias", "unsupported_parameter", "not supported"
    ),
    "parallel_tool_calls": Bad(
        UNSUPPORTED,
        _chat(parallel_tool_calls=True),
        400,
        "parallel_tool_calls",
        "unsupported_parameter",
        "not supported",
    ),
    "stream_options without stream": Bad(
        UNSUPPORTED,
        _chat(stream_options={"include_usage": True}),
        400,
        "stream_options",
        "invalid_value",
        "only allowed when 'stream' is enabled",
    ),
    "message name": Bad(
        UNSUPPORTED,
        {"messages": [{"role": "user", "content": "hi", "name": "bob"}]},
        400,
        "messages[0].name",
        "unsupported_parameter",
        "'messages[0].name' is not supported",
    ),
    "assistant tool_calls": Bad(
        UNSUPPORTED,
        {"messages": [*USER, {"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]},
        400,
        "messages[1].tool_calls",
        "unsupported_parameter",
        "not supported",
    ),
    # unknown parameters: not OpenAI's, or misspelt
    "misspelt parameter": Bad(
        UNKNOWN,
        _chat(max_token=8),
        400,
        "max_token",
        "unknown_parameter",
        "Unrecognized request argument supplied: 'max_token'",
    ),
    "unknown message field": Bad(
        UNKNOWN,
        {"messages": [{"role": "user", "content": "hi", "lang": "fr"}]},
        400,
        "messages[0].lang",
        "unknown_parameter",
        "'messages[0].lang'",
    ),
    "unknown stream option": Bad(
        UNKNOWN,
        _chat(stream=True, stream_options={"usage": True}),
        400,
        "stream_options.usage",
        "unknown_parameter",
        "'stream_options.usage'",
    ),
}
