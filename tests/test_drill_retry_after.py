"""The drill's load clients (local/drill/load.py) as an API client: they send their key, and a
shed request (429, or 503, with Retry-After) is retried after the server's delay, as the
OpenAI SDKs do, not sooner."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from local.drill import load
from local.drill.load import LoadGenerator, LoadSpec, auth_headers

OK = {"choices": [{"message": {"content": "hi"}}]}


def run(answers: list[httpx.Response], monkeypatch) -> tuple[tuple[bool, str, int], list[float], list[str | None]]:
    slept: list[float] = []
    seen: list[str | None] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return answers.pop(0)

    monkeypatch.setattr(load.asyncio, "sleep", sleep)
    spec = LoadSpec(base_url="http://api", model="m", api_key="sk-drill")
    generator = LoadGenerator(spec, 0.0)

    async def one() -> tuple[bool, str, int]:
        async with httpx.AsyncClient(base_url=spec.base_url, headers=auth_headers(spec.api_key),
                                     transport=httpx.MockTransport(handle)) as http:
            return await generator._request(http, {})

    return asyncio.run(one()), slept, seen


def test_a_shed_request_waits_the_servers_retry_after(monkeypatch):
    result, slept, seen = run([httpx.Response(429, headers={"Retry-After": "3"}),
                               httpx.Response(503), httpx.Response(200, json=OK)], monkeypatch)
    assert result == (True, "", 2)
    assert slept == [3.0, 1.0]  # the server's 3 s, then the SDK's back-off (0.5 s doubling)
    assert seen == ["Bearer sk-drill"] * 3


@pytest.mark.parametrize(("header", "wait"), [("0", 0.0), ("600", load.MAX_RETRY_AFTER_S), ("soon", 0.5)])
def test_retry_after_is_bounded_and_a_bad_one_ignored(monkeypatch, header, wait):
    _, slept, _ = run([httpx.Response(429, headers={"Retry-After": header}), httpx.Response(200, json=OK)],
                      monkeypatch)
    assert slept == [wait]


def test_a_wrong_key_is_not_retried(monkeypatch):
    result, slept, _ = run([httpx.Response(401)], monkeypatch)
    assert result == (False, "HTTP 401", 0) and slept == []


def test_the_key_comes_from_the_environment_first(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert LoadSpec(base_url="http://api", model="m").api_key == "sk-from-env"
    assert "sk-from-env" not in repr(LoadSpec(base_url="http://api", model="m"))
