"""Bad requests to the OpenAI API get OpenAI-style 4xx answers, never a 500 or a traceback.

The cases (tests/bad_requests.py) are sent to the real application in-process (the shared
Serve backend of tests/serve_backend.py).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.bad_requests import (
    BAD_REQUESTS,
    CHARS_PER_TOKEN,
    CLASSES,
    MAX_BODY_BYTES,
    MAX_PROMPT_CHARS,
    raw_with_content,
)
from tests.serve_backend import (
    MAX_MODEL_LEN,
    MAX_TOKENS_LIMIT,
    SERVED_MODEL,
    USER,
    Backend,
    proxy_pid,
    replica_pid,
    rss_bytes,
)

# isort: split
from ray_serve_llm.protocol import OpenAIError, parse_json_body

# Ray Serve's own models trip a pydantic deprecation warning on import: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")


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
    filler = MAX_BODY_BYTES - len(raw_with_content('""'))
    response = _post(backend, raw_with_content('"' + " " * filler + '"'))
    assert (response.status_code, response.json()["error"]["code"]) == (400, "context_length_exceeded")
    response = _post(backend, raw_with_content('"' + " " * (filler + 1) + '"'))
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
