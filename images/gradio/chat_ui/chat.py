"""The chat logic, apart from Gradio: turn the conversation into an OpenAI request, stream
the answer, and ride out a backend restart.

During a Ray head restart the workers' Serve proxies keep answering, but a replica or a
proxy that restarts (or a Service with no ready endpoint) shows up as connection errors
and 502/503/504. Those are retried with exponential backoff, also when they break a stream
half-way (the answer then starts again). When every try fails the user gets a clear
message instead of a stack trace.

The API key is read from its file at every try (`api_key.py`): after a rotation the next
chat sends the new key; a missing or broken key file is said in the chat, never retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai

from .api_key import ApiKeyError
from .settings import Settings

logger = logging.getLogger(__name__)

# 429: the server shed the request (its queue is full) or the UI's key is over its rate limit.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
# The longest Retry-After the UI waits (the OpenAI SDK's own bound).
MAX_RETRY_AFTER_S = 60.0
UNAVAILABLE = "The model service is unavailable right now"


def unavailable_message(attempts: int, reason: str) -> str:
    return (
        f"⚠️ {UNAVAILABLE}: retrying failed after {attempts} attempts ({reason}). "
        "Please try again in a minute."
    )


def key_problem_message(problem: ApiKeyError) -> str:
    return (
        f"⚠️ The chat UI has no usable API key: {problem}. "
        "Whoever runs this UI should check the key file that OPENAI_API_KEY_FILE names "
        "(on Kubernetes, the UI's key Secret mounted there)."
    )


def retrying_message(attempt: int, attempts: int) -> str:
    return f"⏳ The model service is restarting; retrying (attempt {attempt} of {attempts})…"


def retry_after_s(error: BaseException) -> float | None:
    """The server's Retry-After (seconds) on a refused request, if it said one."""
    response = getattr(error, "response", None)
    try:
        return min(max(float(response.headers["retry-after"]), 0.0), MAX_RETRY_AFTER_S)  # type: ignore[union-attr]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _text(content: Any) -> str:
    """Gradio 6 message content (a string, a block, or a list of blocks) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "") if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(_text(part) for part in content)
    return str(getattr(content, "text", "") or "")


def to_openai_messages(message: Any, history: list[Any]) -> list[dict[str, str]]:
    """Gradio's history (messages format) plus the new message, in OpenAI's format.
    Status lines this UI showed (retries, outages) are not part of the conversation."""
    messages = []
    for item in history:
        role = item.get("role") if isinstance(item, dict) else getattr(item, "role", None)
        content = item.get("content") if isinstance(item, dict) else getattr(item, "content", None)
        text = _text(content)
        if role not in ("user", "assistant", "system") or not text:
            continue
        if role == "assistant" and (text.startswith("⚠️") or text.startswith("⏳")):
            # A failed turn: drop it, and the user message that led to it, so the
            # conversation stays strictly user/assistant alternating.
            if messages and messages[-1]["role"] == "user":
                messages.pop()
            continue
        messages.append({"role": role, "content": text})
    # Keep strict alternation (what Mistral's chat template requires): merge runs.
    merged: list[dict[str, str]] = []
    for entry in [*messages, {"role": "user", "content": _text(message)}]:
        if merged and merged[-1]["role"] == entry["role"]:
            merged[-1] = {"role": entry["role"], "content": merged[-1]["content"] + "\n\n" + entry["content"]}
        else:
            merged.append(entry)
    return merged


def _retryable(error: BaseException) -> str | None:
    """A short reason when `error` means "the backend is (re)starting", else None."""
    if isinstance(error, openai.APIConnectionError):  # includes timeouts
        return "cannot connect" if not isinstance(error, openai.APITimeoutError) else "timed out"
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}" if error.status_code in RETRYABLE_STATUS else None
    if isinstance(error, httpx.TransportError):  # a stream cut half-way
        return "connection lost"
    if isinstance(error, openai.APIError) and getattr(error, "status_code", None) is None:
        return "stream interrupted"  # an error event inside the stream
    return None


class ChatBackend:
    """Streams answers from the OpenAI-compatible endpoint, with retries."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: openai.OpenAI | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.key_file = settings.api_key()
        self.client = client or openai.OpenAI(
            base_url=settings.openai_base_url,
            # Replaced at each request by the key file's key; sent as-is to an open API.
            api_key="not-needed",
            # Retries are ours (they cover broken streams too, and tell the user).
            max_retries=0,
            timeout=httpx.Timeout(settings.request_timeout_s, connect=5.0),
        )
        self._sleep = sleep
        self._model = settings.model_name

    def _client(self) -> openai.OpenAI:
        """The client with the key the key file holds now (ApiKeyError when it holds none).
        The copy shares the connection pool."""
        if self.key_file is None:
            return self.client
        return self.client.with_options(api_key=self.key_file.read())

    def model(self) -> str:
        """MODEL_NAME, or the served model as /v1/models names it."""
        if self._model is None:
            self._model = self._client().models.list().data[0].id
        return self._model

    def title(self) -> str:
        """UI_TITLE, or the served model's name (asked from the API when MODEL_NAME is unset;
        a generic title while the API does not answer yet)."""
        if self.settings.title:
            return self.settings.title
        try:
            model = self.model()
        except (openai.OpenAIError, ApiKeyError):
            return "LLM chat on Ray Serve"
        # A Hugging Face id ("org/name") or a local folder: the name is the last part.
        served_on = f"Ray Serve ({self.settings.device})" if self.settings.device else "Ray Serve"
        return f"{model.rstrip('/').rsplit('/', 1)[-1]} on {served_on}"

    def _stream_once(self, messages: list[dict[str, str]]) -> Iterator[str]:
        # No max_tokens unless configured: the server answers up to its own limit.
        limit = {} if self.settings.max_tokens is None else {"max_tokens": self.settings.max_tokens}
        stream = self._client().chat.completions.create(
            model=self.model(),
            messages=messages,  # type: ignore[arg-type]
            temperature=self.settings.temperature,
            stream=True,
            **limit,
        )
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

    def respond(self, message: Any, history: list[Any]) -> Iterator[str]:
        """Gradio's chat function: yields the answer so far, as it grows."""
        if not _text(message).strip():
            yield "Please type a message."
            return
        messages = to_openai_messages(message, history)
        attempts = self.settings.retry_attempts
        reason, wait_s = "unknown error", None
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                yield retrying_message(attempt, attempts)
                # The server's Retry-After when it gave one (a shed or rate-limited request), else ours.
                self._sleep(wait_s if wait_s is not None else self.settings.retry_delay_s(attempt - 1))
            answer = ""
            try:
                for piece in self._stream_once(messages):
                    answer += piece
                    yield answer
                if not answer:
                    yield "(the model returned an empty answer)"
                return
            except ApiKeyError as problem:
                logger.warning("no usable API key: %s", problem)
                yield key_problem_message(problem)
                return
            except Exception as error:  # sorted below
                reason = _retryable(error)
                if reason is None:
                    logger.warning("request refused: %s", error)
                    yield f"⚠️ The model service refused the request: {_describe(error)}{self._hint(error)}"
                    return
                wait_s = retry_after_s(error)
                logger.warning("try %d of %d failed (%s): %s", attempt, attempts, reason, error)
        yield unavailable_message(attempts, reason)

    def _hint(self, error: BaseException) -> str:
        """What to check when the API refuses the UI's key."""
        if not (isinstance(error, openai.APIStatusError) and error.status_code == 401):
            return ""
        if self.key_file is None:
            return " (the API wants a key: set OPENAI_API_KEY_FILE)"
        return f" (the key in {self.key_file.path} is not one the API accepts)"


def _describe(error: BaseException) -> str:
    if isinstance(error, openai.APIStatusError):
        try:
            return f"HTTP {error.status_code}: {error.body['message']}"  # type: ignore[index]
        except (TypeError, KeyError):
            return f"HTTP {error.status_code}"
    return type(error).__name__
