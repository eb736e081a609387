"""The Ray Serve LLM application (images/ray-serve): its args, engines and API.

The API tests run the real application in-process (`serve.run` of `build_app(...)`, the
transformers engine on a tiny Mistral-architecture model made at test time) and talk to it
with the official `openai` client over 127.0.0.1. The accelerator engines (vLLM, Neuron)
cannot run here; their pure parts (engine arguments, environment, the compiled-artifacts
cache) are tested without them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.serve_backend import (
    MAX_MODEL_LEN,
    MAX_TOKENS_LIMIT,
    SERVED_MODEL,
    Backend,
    proxy_pid,
    replica_pid,
    rss_bytes,
    shared_backend,
)

# isort: split
from ray_serve_llm.args import AppArgs, ArgsError
from ray_serve_llm.compiled_artifacts import MARKER, ArtifactCache, CompileKey, split_s3_uri
from ray_serve_llm.engines import ChatTemplateError, Prompt, SamplingParams, load_engine
from ray_serve_llm.engines.neuron_engine import NEURON_MAX_NUM_SEQS, NeuronEngine
from ray_serve_llm.engines.vllm_engine import VllmEngine
from ray_serve_llm.hf_token import ModelLoadError, read_token
from ray_serve_llm.protocol import UNSUPPORTED_PARAMETERS, OpenAIError, parse_chat_request, parse_json_body

# Ray Serve's own models trip a pydantic deprecation warning on import: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")

USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def backend(request) -> Backend:
    return shared_backend(request)


@pytest.fixture(scope="module")
def client(backend) -> openai.OpenAI:
    return openai.OpenAI(base_url=backend.openai_url, api_key="not-needed", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tokenizer(backend):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(backend.model_dir)


# --- The API, through the official openai client -----------------------------------------


def test_chat_completion(client, tokenizer):
    response = client.chat.completions.create(model=SERVED_MODEL, messages=USER, max_tokens=12, temperature=0)
    choice = response.choices[0]
    assert response.model == SERVED_MODEL
    assert response.object == "chat.completion"
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= response.usage.completion_tokens <= 12
    # The prompt is the tokenizer's own chat template, BOS written once.
    expected = tokenizer.apply_chat_template(USER, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert response.usage.prompt_tokens == len(expected)
    assert list(expected).count(tokenizer.bos_token_id) == 1


def test_greedy_answers_are_deterministic(client):
    def answer() -> str:
        response = client.chat.completions.create(model=SERVED_MODEL, messages=USER, max_tokens=8, temperature=0)
        return response.choices[0].message.content

    assert answer() == answer()


def test_chat_completion_streams(client):
    stream = client.chat.completions.create(
        model=SERVED_MODEL,
        messages=USER,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 2, "the answer arrives in pieces"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals in (["length"], ["stop"])
    assert chunks[-1].usage.completion_tokens <= 16


def test_stream_is_server_sent_events_ending_with_done(backend):
    body = {"model": SERVED_MODEL, "messages": USER, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{backend.openai_url}/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2].removeprefix("data: "))["choices"][0]["finish_reason"] in ("stop", "length")


def test_conversation_with_system_message_and_history(client):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": [{"type": "text", "text": "Tell me a short story."}]},
    ]
    response = client.chat.completions.create(model=SERVED_MODEL, messages=messages, max_tokens=8)
    assert response.choices[0].message.content.strip()


def test_model_may_be_omitted(backend):
    response = httpx.post(f"{backend.openai_url}/chat/completions", json={"messages": USER, "max_tokens": 2})
    assert response.status_code == 200
    assert response.json()["model"] == SERVED_MODEL


def test_models_lists_the_served_model(client):
    models = client.models.list()
    assert [model.id for model in models.data] == [SERVED_MODEL]


def test_infer_returns_generated_text(backend):
    response = httpx.get(f"{backend.url}/infer", params={"sentence": "What is Ray Serve?", "max_tokens": 8})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.strip()


def test_healthz(backend):
    response = httpx.get(f"{backend.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": SERVED_MODEL, "engine": "transformers"}


def test_one_deployment_named_llmserver_is_healthy(backend):
    from ray import serve

    app = serve.status().applications["llm"]
    assert list(app.deployments) == ["LLMServer"]
    assert app.deployments["LLMServer"].status == "HEALTHY"


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


def _raw_with_content(content_json: str) -> bytes:
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
        _raw_with_content('"' + "x" * 10_000_000 + '"'),
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
    "lone surrogate": Bad(ENCODING, _raw_with_content('"\\ud800"'), 400, None, "invalid_json", "valid Unicode"),
    "lone trailing surrogate": Bad(
        ENCODING, _raw_with_content('"a\\udc00b"'), 400, None, "invalid_json", "lone leading surrogate"
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


def _post(backend: Backend, body: dict | bytes, **kwargs) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{backend.openai_url}/chat/completions",
        content=raw,
        headers={"content-type": "application/json"},
        timeout=60,
        **kwargs,
    )


def test_every_class_of_bad_request_is_covered():
    assert {case.kind for case in BAD_REQUESTS.values()} == set(CLASSES)


@pytest.mark.parametrize("case", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_request_is_an_openai_error(backend, case):
    response = _post(backend, case.body)
    assert (response.status_code, response.headers["content-type"]) == (case.status, "application/json")
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", case.param, case.code)
    assert case.message_part in error["message"]


def test_bad_requests_leave_no_traceback_and_no_5xx_in_the_replica_logs(backend):
    # The replica's own log (one access line per request) and its process's stderr.
    (access_log,) = (backend.logs / "serve").glob("replica_*.log")
    (stderr,) = backend.logs.glob(f"worker-*-{replica_pid()}.err")
    logs = [access_log, stderr]
    offsets = {log: log.stat().st_size for log in logs}
    for case in BAD_REQUESTS.values():
        _post(backend, case.body)
    time.sleep(1)  # the replica's log lines are written after its answer

    def written(log: Path) -> str:
        with log.open("rb") as stream:
            stream.seek(offsets[log])
            return stream.read().decode(errors="replace")

    statuses = re.findall(r"POST /v1/chat/completions (\d{3}) ", written(access_log))
    assert sorted(statuses) == sorted(str(case.status) for case in BAD_REQUESTS.values())
    for log in logs:
        assert "Traceback" not in written(log) and "ERROR" not in written(log)


def test_unknown_model_is_a_404_naming_the_served_one(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-5", messages=USER)
    assert raised.value.body == {
        "message": f"The model 'gpt-5' does not exist. This server serves '{SERVED_MODEL}'.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


@pytest.mark.parametrize(
    "extra",
    [{"logprobs": True}, {"presence_penalty": 1.0}, {"response_format": {"type": "json_object"}}],
    ids=["logprobs", "presence_penalty", "response_format"],
)
def test_the_openai_client_is_told_which_parameter_is_unsupported(client, extra):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=SERVED_MODEL, messages=USER, max_tokens=4, **extra)
    (name,) = extra
    assert (raised.value.body["param"], raised.value.body["code"]) == (name, "unsupported_parameter")


def test_parameters_that_ask_for_nothing_are_accepted_and_change_nothing(client):
    """The neutral values of the unsupported parameters (what OpenAI clients and replayed
    answers send) are what the server does anyway: the greedy answer is the same."""
    plain = client.chat.completions.create(model=SERVED_MODEL, messages=USER, max_tokens=8, temperature=0)
    replayed = plain.choices[0].message.model_dump()  # refusal, tool_calls, ... all None
    neutral = client.chat.completions.create(
        model=SERVED_MODEL,
        messages=[*USER, replayed, *USER],
        max_tokens=8,
        temperature=0,
        stop=[],
        tool_choice="none",
        logprobs=False,
        logit_bias={},
        presence_penalty=0,
        frequency_penalty=0.0,
        response_format={"type": "text"},
        n=1,
        seed=2**63 - 1,
        user="someone",
    )
    assert neutral.choices[0].message.content
    again = client.chat.completions.create(
        model=SERVED_MODEL, messages=USER, max_tokens=8, temperature=0, logprobs=False
    )
    assert again.choices[0].message.content == plain.choices[0].message.content


def test_any_int64_seed_is_accepted(client):
    for seed in (-(2**63), 2**63 - 1):
        response = client.chat.completions.create(model=SERVED_MODEL, messages=USER, max_tokens=2, seed=seed)
        assert response.choices[0].message.content is not None


def test_prompt_plus_max_tokens_must_fit_the_context(client, tokenizer):
    def prompt_tokens(n: int) -> int:
        messages = [{"role": "user", "content": "word " * n}]
        return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])

    n = next(n for n in range(1, MAX_MODEL_LEN) if prompt_tokens(n) >= MAX_MODEL_LEN - 40)
    body = {"messages": [{"role": "user", "content": "word " * n}]}
    fits = client.post("/chat/completions", cast_to=object, body={**body, "max_tokens": 8})
    assert fits["usage"]["prompt_tokens"] == prompt_tokens(n)
    with pytest.raises(openai.BadRequestError) as raised:
        client.post("/chat/completions", cast_to=object, body={**body, "max_tokens": MAX_TOKENS_LIMIT})
    assert raised.value.body["code"] == "context_length_exceeded"
    assert raised.value.body["param"] == "max_tokens"


def test_the_body_limit_follows_the_model(backend, tokenizer):
    assert max(len(piece) for piece in tokenizer.get_vocab()) == CHARS_PER_TOKEN
    # The largest body the server reads is still a 400 for its content, not a 413.
    filler = MAX_BODY_BYTES - len(_raw_with_content('""'))
    response = _post(backend, _raw_with_content('"' + " " * filler + '"'))
    assert (response.status_code, response.json()["error"]["code"]) == (400, "context_length_exceeded")
    response = _post(backend, _raw_with_content('"' + " " * (filler + 1) + '"'))
    assert (response.status_code, response.json()["error"]["code"]) == (413, "request_too_large")


def test_a_chunked_body_is_cut_off_at_the_limit(backend):
    def chunks():
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b" " * 4096

    # A generator body goes out chunked: no Content-Length to refuse it by.
    response = httpx.post(
        f"{backend.openai_url}/chat/completions",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["message"].startswith(f"The request body is more than {MAX_BODY_BYTES} bytes")


def test_an_oversized_body_leaves_the_replica_memory_as_it_was(backend):
    """A 10 MB body used to be tokenized for tens of seconds and leave the replica 1.3 GiB
    larger. Now it is refused before it is read: the replica's RSS stays within 10 %."""
    replica, proxy = replica_pid(), proxy_pid()
    before = {pid: rss_bytes(pid) for pid in (replica, proxy)}
    started = time.monotonic()
    for _ in range(3):
        response = _post(backend, BAD_REQUESTS["10 MB prompt"].body)
        assert response.status_code == 413
    elapsed = time.monotonic() - started
    after = {pid: rss_bytes(pid) for pid in (replica, proxy)}
    for name, pid in (("replica", replica), ("proxy", proxy)):
        mib = before[pid] / 2**20, after[pid] / 2**20
        print(f"\n{name} {pid} RSS: {mib[0]:.1f} MiB before, {mib[1]:.1f} MiB after three 10 MB bodies")
    print(f"three 413s in {elapsed:.2f} s")
    assert abs(after[replica] - before[replica]) <= before[replica] * 0.10


def test_json_nested_100_000_deep_is_a_400_not_a_recursion_error():
    with pytest.raises(OpenAIError) as raised:
        parse_json_body(b"[" * 100_000 + b"]" * 100_000)
    assert (raised.value.status_code, raised.value.code) == (400, "invalid_json")


def test_bad_stream_request_fails_before_the_stream_starts(backend):
    body = {"messages": USER, "max_tokens": 10_000, "stream": True}
    response = httpx.post(f"{backend.openai_url}/chat/completions", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["param"] == "max_tokens"


@pytest.mark.parametrize(
    "params,status,param,code",
    [
        ({}, 400, "sentence", "missing_required_parameter"),
        ({"sentence": "  "}, 400, "sentence", "invalid_value"),
        ({"sentence": "hi", "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
        ({"sentence": "hi", "max_tokens": "true"}, 400, "max_tokens", "invalid_value"),
        ({"sentence": "x" * (MAX_PROMPT_CHARS + 1)}, 400, "sentence", "context_length_exceeded"),
        ({"sentence": "word " * (MAX_MODEL_LEN + 10)}, 400, "sentence", "context_length_exceeded"),
    ],
    ids=["missing", "blank", "max_tokens", "max_tokens true", "too many characters", "too many tokens"],
)
def test_bad_infer_request_is_a_400(backend, params, status, param, code):
    response = httpx.get(f"{backend.url}/infer", params=params)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_a_server_failure_is_a_json_500_not_text():
    """A bug in the app (no client mistake can reach this) still answers in OpenAI's shape."""
    from fastapi.testclient import TestClient

    from ray_serve_llm.app import api

    async def fail() -> None:
        raise RuntimeError("a bug")

    api.add_api_route("/test-failure", fail)
    try:
        response = TestClient(api, raise_server_exceptions=False).get("/test-failure")
    finally:
        api.router.routes.pop()
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def test_unknown_route_is_an_openai_404(backend):
    response = httpx.get(f"{backend.url}/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_models_retrieve_by_id(client, backend):
    model = client.models.retrieve(SERVED_MODEL)
    assert (model.id, model.object, model.owned_by) == (SERVED_MODEL, "model", "ray-serve-llm")
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("mistralai/Mistral-7B-Instruct-v0.2")  # sent as mistralai%2FMistral-...
    assert (raised.value.body["code"], raised.value.body["param"]) == ("model_not_found", None)
    assert "'mistralai/Mistral-7B-Instruct-v0.2' does not exist" in raised.value.body["message"]


# --- Args: typed, validated, with clear errors -------------------------------------------


def test_args_defaults():
    args = AppArgs.parse({"model_id": "mistralai/Mistral-7B-Instruct-v0.2", "engine": "neuron"})
    assert args.model_name == "mistralai/Mistral-7B-Instruct-v0.2"
    assert (args.tensor_parallel_degree, args.max_model_len, args.max_tokens_limit) == (1, 4096, 1024)
    assert args.hf_token_env == "HF_TOKEN"
    assert args.neuron_compiled_artifacts is None


def test_args_accept_the_neuron_production_shape():
    args = AppArgs.parse(
        {
            "model_id": "mistralai/Mistral-7B-Instruct-v0.2",
            "served_model_name": "mistral-7b-instruct",
            "engine": "neuron",
            "tensor_parallel_degree": 2,
            "max_model_len": 4096,
            "max_tokens_limit": 1024,
            "neuron_compiled_artifacts": "s3://my-bucket/neuron-artifacts/",
            "hf_token_env": "HUGGING_FACE_HUB_TOKEN",
        }
    )
    assert args.model_name == "mistral-7b-instruct"
    assert args.neuron_compiled_artifacts == "s3://my-bucket/neuron-artifacts"


@pytest.mark.parametrize(
    "args,message",
    [
        ({"engine": "neuron"}, "  - model_id: required"),
        ({"model_id": "m", "engine": "tpu"}, "  - engine='tpu': must be one of neuron, vllm, transformers"),
        (
            {"model_id": "m", "engine": "vllm", "tensor_parallel_degree": 0},
            "  - tensor_parallel_degree=0: Input should be greater than or equal to 1",
        ),
        (
            {"model_id": "m", "engine": "vllm", "max_tokens_limit": 4096},
            "  - max_tokens_limit=4096 must be below max_model_len=4096 (the prompt needs room too)",
        ),
        (
            {"model_id": "m", "engine": "transformers", "tensor_parallel_degree": 2},
            "  - tensor_parallel_degree=2: the transformers engine runs on one CPU process; only 1 is allowed",
        ),
        (
            {"model_id": "m", "engine": "vllm", "neuron_compiled_artifacts": "/cache"},
            "  - neuron_compiled_artifacts is only used by engine 'neuron' (engine is 'vllm'); remove it",
        ),
        (
            {"model_id": "m", "engine": "neuron", "neuron_compiled_artifacts": "cache"},
            "  - neuron_compiled_artifacts='cache': must be s3://BUCKET/PREFIX or an absolute path",
        ),
        (
            {"model_id": "m", "engine": "neuron", "max_tokens": 10},
            "  - unknown argument 'max_tokens': did you mean 'max_tokens_limit'?",
        ),
        ({"model_id": "m", "engine": "neuron", "replicas": 2}, "  - unknown argument 'replicas'"),
    ],
    ids=["no model", "engine", "tp", "max tokens", "cpu tp", "artifacts on gpu", "relative", "renamed", "unknown"],
)
def test_bad_args_are_refused_with_the_key_and_value(args, message):
    with pytest.raises(ArgsError) as raised:
        AppArgs.parse(args)
    assert message in str(raised.value).splitlines()


def test_build_app_validates_on_the_driver():
    from ray_serve_llm.app import build_app

    with pytest.raises(ArgsError, match="engine='tpu'"):
        build_app({"model_id": "m", "engine": "tpu"})


# --- The HF token never shows ----------------------------------------------------------


SECRET = "hf_" + "Abc123" * 6


def test_a_token_given_as_the_env_name_is_not_echoed():
    with pytest.raises(ArgsError) as raised:
        AppArgs.parse({"model_id": "m", "engine": "vllm", "hf_token_env": SECRET})
    assert SECRET not in str(raised.value)
    assert "looks like a token" in str(raised.value)


def test_token_is_masked_and_kept_out_of_load_errors(monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_HF_TOKEN", SECRET)
    token = read_token("TEST_HF_TOKEN")
    assert SECRET not in repr(token) and SECRET not in str(token)
    args = AppArgs.parse(
        {"model_id": f"{tmp_path}/{SECRET}-missing", "engine": "transformers", "hf_token_env": "TEST_HF_TOKEN"}
    )
    with pytest.raises(ModelLoadError) as raised:
        load_engine(args)
    assert SECRET not in str(raised.value)
    assert "***" in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_the_token_goes_to_the_hub_download_only(monkeypatch):
    import huggingface_hub

    from ray_serve_llm.model_source import resolve_model_path

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kw: calls.append(kw) or "/cache/m")
    assert resolve_model_path("mistralai/Mistral-7B-Instruct-v0.2", read_token("T", {"T": SECRET})) == "/cache/m"
    assert calls[0]["repo_id"] == "mistralai/Mistral-7B-Instruct-v0.2" and calls[0]["token"] == SECRET


def test_blank_token_means_no_token():
    assert read_token("HF_TOKEN", {"HF_TOKEN": "  "}) is None
    assert read_token("HF_TOKEN", {}) is None


# --- Request validation (no server) ------------------------------------------------------


def test_developer_role_and_text_parts_become_template_messages():
    request = parse_chat_request(
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
            ]
        },
        max_tokens_limit=10,
    )
    assert [m.as_template_message() for m in request.messages] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
    ]


NEUTRAL_VALUES = {
    "stop": [None, "", []],
    "tools": [None, []],
    "tool_choice": [None, "none"],
    "parallel_tool_calls": [None],
    "functions": [None, []],
    "function_call": [None, "none"],
    "logprobs": [None, False],
    "top_logprobs": [None],
    "logit_bias": [None, {}],
    "presence_penalty": [None, 0, 0.0],
    "frequency_penalty": [None, 0, 0.0],
    "response_format": [None, {"type": "text"}],
}
# What asks for something, and what only looks neutral in a language that coerces types.
ASKING_VALUES = {
    "stop": [["\n"], "END", {}],
    "tools": [[{"type": "function"}], {}],
    "tool_choice": ["auto", "required", ""],
    "parallel_tool_calls": [True, False],
    "functions": [[{"name": "f"}]],
    "function_call": ["auto", {"name": "f"}],
    "logprobs": [True, 0, "false"],
    "top_logprobs": [0, 5],
    "logit_bias": [{"1": -100}, []],
    "presence_penalty": [0.1, -2, False, "0"],
    "frequency_penalty": [2, False, "0"],
    "response_format": [{"type": "json_object"}, {"type": "json_schema", "json_schema": {}}, "text"],
}


def test_the_neutral_and_asking_tables_cover_every_unsupported_parameter():
    assert set(NEUTRAL_VALUES) == set(ASKING_VALUES) == set(UNSUPPORTED_PARAMETERS)


@pytest.mark.parametrize("name,value", [(n, v) for n, values in NEUTRAL_VALUES.items() for v in values], ids=repr)
def test_an_unsupported_parameter_asking_for_nothing_is_accepted(name, value):
    parse_chat_request({"messages": USER, name: value}, max_tokens_limit=10)


@pytest.mark.parametrize("name,value", [(n, v) for n, values in ASKING_VALUES.items() for v in values], ids=repr)
def test_an_unsupported_parameter_asking_for_something_is_refused_by_name(name, value):
    with pytest.raises(OpenAIError) as raised:
        parse_chat_request({"messages": USER, name: value}, max_tokens_limit=10)
    assert (raised.value.status_code, raised.value.param, raised.value.code) == (400, name, "unsupported_parameter")
    assert raised.value.message.startswith(f"Unsupported parameter: '{name}' is not supported by this server")


def test_max_completion_tokens_is_checked_like_max_tokens():
    with pytest.raises(OpenAIError) as raised:
        parse_chat_request({"messages": USER, "max_completion_tokens": 11}, max_tokens_limit=10)
    assert raised.value.param == "max_completion_tokens"
    assert (
        parse_chat_request({"messages": USER, "max_completion_tokens": 10}, max_tokens_limit=10).requested_max_tokens
        == 10
    )


# --- The engine interface, on the transformers engine (no server) -----------------------


@pytest.fixture(scope="module")
def engine(backend):
    args = AppArgs.parse({**backend.args, "served_model_name": None})
    return load_engine(args)


async def _collect(engine, prompt, params, limit=None):
    chunks = []
    generator = engine.generate(prompt, params)
    async for chunk in generator:
        chunks.append(chunk)
        if limit and len(chunks) >= limit:
            await generator.aclose()
            break
    return chunks


def test_engine_renders_with_the_tokenizer_chat_template(engine):
    prompt = engine.render([{"role": "system", "content": "S"}, {"role": "user", "content": "Hello"}])
    text = engine.tokenizer.decode(list(prompt.token_ids))
    assert text.startswith("<s>") and text.count("<s>") == 1
    assert "[INST]" in text and text.rstrip().endswith("[/INST]")


def test_engine_refuses_what_the_template_refuses(engine):
    with pytest.raises(ChatTemplateError, match="alternate"):
        engine.render([{"role": "assistant", "content": "first"}])


def test_engine_streams_non_empty_pieces_and_a_final_chunk(engine):
    prompt = engine.render(USER)
    chunks = asyncio.run(_collect(engine, prompt, SamplingParams(max_tokens=10, temperature=0)))
    *pieces, last = chunks
    assert pieces and all(chunk.text for chunk in pieces)
    assert last.finish_reason in ("stop", "length") and last.completion_tokens <= 10


def test_engine_stops_generating_when_the_consumer_goes_away(engine):
    async def leave_early():
        before = engine.cancelled_generations
        # Long enough that it cannot finish on its own within the wait below.
        chunks = await _collect(engine, engine.render(USER), SamplingParams(max_tokens=1500), limit=2)
        for _ in range(200):
            if engine.active_generations == 0:
                break
            await asyncio.sleep(0.01)
        return chunks, engine.cancelled_generations - before

    chunks, cancelled = asyncio.run(leave_early())
    assert len(chunks) == 2
    assert engine.active_generations == 0
    assert cancelled == 1


def test_tiny_model_cli_writes_a_mistral_folder(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from ray_serve_llm.tiny_model import main

    assert main([str(tmp_path / "tiny")]) == 0
    folder = tmp_path / "tiny"
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in folder.iterdir()
    }
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "mistral" and config.sliding_window is None
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (
        64,
        2,
        4,
        2,
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.padding_side == "left"
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token) == (
        "<s>",
        "</s>",
        "<unk>",
        "<pad>",
    )
    assert len(tokenizer.encode("[INST]", add_special_tokens=False)) == 1
    assert tokenizer.unk_token_id not in tokenizer.encode("Hello, world! 42?\n", add_special_tokens=False)


# --- Accelerator engines: their pure parts ----------------------------------------------


def test_neuron_engine_shards_over_two_cores_with_continuous_batching():
    kwargs = NeuronEngine.engine_kwargs("/models/mistral", tensor_parallel_degree=2, max_model_len=4096)
    assert kwargs["tensor_parallel_size"] == 2
    assert kwargs["max_num_seqs"] == NEURON_MAX_NUM_SEQS
    neuron = kwargs["additional_config"]["override_neuron_config"]
    assert neuron["is_continuous_batching"] is True
    assert (neuron["tp_degree"], neuron["seq_len"], neuron["batch_size"]) == (2, 4096, NEURON_MAX_NUM_SEQS)


def test_neuron_engine_points_nxdi_at_the_compiled_artifacts():
    environ: dict[str, str] = {}
    NeuronEngine.configure_environment("/tmp/neuron-compiled-artifacts/x", environ)
    assert environ == {
        "VLLM_NEURON_FRAMEWORK": "neuronx-distributed-inference",
        "NEURON_COMPILED_ARTIFACTS": "/tmp/neuron-compiled-artifacts/x",
    }


def test_vllm_engine_keeps_tensor_parallel_workers_inside_the_replica():
    kwargs = VllmEngine.engine_kwargs("/models/m", tensor_parallel_degree=4, max_model_len=8192)
    assert (kwargs["tensor_parallel_size"], kwargs["max_model_len"]) == (4, 8192)
    assert kwargs["distributed_executor_backend"] == "mp"


class FakeS3:
    """Just what ArtifactCache calls, over a dict."""

    def __init__(self):
        self.objects: dict[tuple[str, str], bytes] = {}
        self.writes: list[str] = []

    def list_objects_v2(self, Bucket, Prefix, **_):
        keys = sorted(k for b, k in self.objects if b == Bucket and k.startswith(Prefix))
        return {"Contents": [{"Key": k} for k in keys], "IsTruncated": False}

    def download_file(self, bucket, key, filename):
        with open(filename, "wb") as f:
            f.write(self.objects[(bucket, key)])

    def upload_file(self, filename, bucket, key):
        with open(filename, "rb") as f:
            self.objects[(bucket, key)] = f.read()
        self.writes.append(key)

    def put_object(self, Bucket, Key, Body):
        self.objects[(Bucket, Key)] = Body
        self.writes.append(Key)


KEY = CompileKey("mistralai/Mistral-7B-Instruct-v0.2", 2, 4096, 4, "0.9.0")


def test_compile_key_separates_configurations():
    assert KEY.slug == "mistralai--Mistral-7B-Instruct-v0.2/tp2-len4096-seqs4-nxdi0.9.0"
    other = CompileKey("mistralai/Mistral-7B-Instruct-v0.2", 2, 8192, 4, "0.9.0")
    assert other.slug != KEY.slug
    assert split_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")


def test_s3_cache_miss_then_publish_then_hit(tmp_path):
    s3 = FakeS3()
    first = ArtifactCache("s3://bucket/neuron", KEY, local_root=tmp_path / "worker1", s3=s3)
    assert first.fetch() is False
    (first.local_dir / "model.pt").write_bytes(b"compiled")  # what NxD Inference writes
    (first.local_dir / "neuron_config.json").write_text("{}")
    first.publish()
    prefix = f"neuron/{KEY.slug}"
    assert s3.writes[-1] == f"{prefix}/{MARKER}", "the marker is written last"
    assert set(s3.writes) == {f"{prefix}/model.pt", f"{prefix}/neuron_config.json", f"{prefix}/{MARKER}"}

    second = ArtifactCache("s3://bucket/neuron", KEY, local_root=tmp_path / "worker2", s3=s3)
    assert second.fetch() is True
    assert (second.local_dir / "model.pt").read_bytes() == b"compiled"
    assert not (second.local_dir / MARKER).exists()
    s3.writes.clear()
    second.publish()
    assert s3.writes == [], "artifacts that came from the cache are not uploaded again"


def test_s3_cache_ignores_a_half_uploaded_compile(tmp_path):
    s3 = FakeS3()
    s3.objects[("bucket", f"neuron/{KEY.slug}/model.pt")] = b"partial"
    cache = ArtifactCache("s3://bucket/neuron", KEY, local_root=tmp_path, s3=s3)
    assert cache.fetch() is False
    assert not (cache.local_dir / "model.pt").exists()


def test_local_cache_is_a_folder_per_configuration(tmp_path):
    cache = ArtifactCache(str(tmp_path), KEY)
    assert cache.local_dir == tmp_path / KEY.slug
    assert cache.fetch() is False
    (cache.local_dir / "model.pt").write_bytes(b"x")
    assert ArtifactCache(str(tmp_path), KEY).fetch() is True


def test_prompt_counts_tokens():
    assert Prompt(token_ids=(1, 2, 3)).num_tokens == 3
