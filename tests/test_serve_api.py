"""The OpenAI-compatible API of the Ray Serve LLM application, through the official openai client.

The application runs in-process (`serve.run` of `build_app(...)`, the transformers engine on
a tiny Mistral-architecture model made at test time; tests/serve_backend.py) and is called
over 127.0.0.1.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.serve_backend import (
    SERVED_MODEL,
    USER,
)

# Ray Serve's own models trip a pydantic deprecation warning on import: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")


# isort: split


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
