"""The chat UI against a server that sheds load or refuses its key: a 429 is retried after the
server's Retry-After, a 401 is shown at once and never retried, and the key is sent as a
bearer token (in-memory HTTP; the UI in Chromium with a key against the real local stack is
tests/test_local_stack.py's chat test)."""

from __future__ import annotations

import httpx
import openai

from tests.test_gradio_ui import LOOPBACK, ChatBackend, Settings, _backend, _sse, _stream


def test_a_shed_request_is_retried_after_the_servers_retry_after():
    shed = httpx.Response(429, headers={"Retry-After": "3"}, json={"error": {"message": "queue full"}})
    backend, calls, sleeps = _backend([shed, httpx.Response(503), _stream(_sse("ok"))])
    assert list(backend.respond("hi", []))[-1] == "ok"
    assert sleeps == [3.0, 2.0]  # the server's 3 s, then our own back-off (no Retry-After)
    assert len(calls) == 3


def test_the_ui_sends_its_key_and_says_when_it_is_refused():
    seen: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        refusal = {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}}
        return httpx.Response(401, json=refusal)

    settings = Settings(openai_base_url=f"http://{LOOPBACK}:9/v1", model_name="m", openai_api_key="sk-ui-key")
    backend = ChatBackend(settings, client=openai.OpenAI(
        base_url=settings.openai_base_url, api_key=settings.openai_api_key, max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handle))))
    assert list(backend.respond("hi", [])) == [
        "⚠️ The model service refused the request: HTTP 401: Incorrect API key provided."]
    assert seen == ["Bearer sk-ui-key"]  # once: a wrong key is not retried
    assert "sk-ui-key" not in repr(settings)
