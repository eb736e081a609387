"""Traffic for the drill: N concurrent chat clients plus one sequential client that sends
one request at a time like KubeRay's HA query.py. Every request is recorded; loops are
bounded in count and time and stop by themselves.

Each client retries as the official OpenAI SDKs do by default (2 retries, 0.5 s doubling
back-off, on a connection error, a timeout, 408, 409, 429 or a 5xx): a request whose replica
died under it is sent again and lands on a live replica. A request counts as failed only
when its last try fails; retried requests are counted apart, so the report shows both.
These are plain (non-streaming) requests: a stream that already sent tokens cannot be
retried without the client seeing the answer start over. Streaming clients (`streams`) send
streamed requests and retry only before the first token: a stream that broke after it had
started counts as failed, which is what a drained node must never cause.

Every request carries the drill's API key (`Authorization: Bearer`): OPENAI_API_KEY, else the
local stack's `ha-drill` key. A 429 or 503 with Retry-After is retried after that long (as the
SDK does), not sooner: a shed request waits its turn instead of adding to the overload."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

SEQUENTIAL = "sequential"
STREAM_PREFIX = "stream-"


@dataclass(frozen=True)
class Sample:
    started: float  # seconds since the drill's clock started
    latency: float
    ok: bool
    client: str
    error: str = ""
    retries: int = 0  # tries after the first (client retries, as the OpenAI SDK does)

    @property
    def stream(self) -> bool:
        return self.client.startswith(STREAM_PREFIX)

    @property
    def ended(self) -> float:
        return self.started + self.latency


def default_api_key() -> str | None:
    """OPENAI_API_KEY, else the local stack's key for the drill (local/api_keys.py), else none."""
    if os.environ.get("OPENAI_API_KEY"):
        return os.environ["OPENAI_API_KEY"]
    from local.api_keys import HA_DRILL, ApiKeyError, key_of

    try:
        return key_of(HA_DRILL)
    except (ApiKeyError, OSError):
        return None


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


# The longest Retry-After a client waits (the OpenAI SDK's bound is 60 s).
MAX_RETRY_AFTER_S = 60.0


def retry_after_s(response: httpx.Response) -> float | None:
    """The server's Retry-After in seconds (a number; an HTTP date is not sent here)."""
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER_S)


@dataclass(frozen=True)
class LoadSpec:
    base_url: str  # e.g. http://10.213.7.11:8000
    model: str
    clients: int = 8
    max_tokens: int = 8
    # Streaming clients, one streamed answer at a time each, of `stream_tokens` tokens.
    streams: int = 0
    stream_tokens: int = 64
    timeout_s: float = 30.0
    # Safety bounds: a client stops after this many requests or this long, whichever first.
    max_requests_per_client: int = 200_000
    max_seconds: float = 900.0
    # The OpenAI SDK's defaults (openai-python `DEFAULT_MAX_RETRIES`, `INITIAL_RETRY_DELAY`).
    max_retries: int = 2
    retry_initial_delay_s: float = 0.5
    api_key: str | None = field(default_factory=default_api_key, repr=False)


RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class LoadGenerator:
    def __init__(self, spec: LoadSpec, clock_zero: float):
        self.spec = spec
        self.clock_zero = clock_zero
        self.samples: list[Sample] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def now(self) -> float:
        return time.monotonic() - self.clock_zero

    async def _client(self, name: str, http: httpx.AsyncClient) -> None:
        body = {
            "model": self.spec.model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": self.spec.max_tokens,
        }
        deadline = self.now() + self.spec.max_seconds
        for _ in range(self.spec.max_requests_per_client):
            if self._stop.is_set() or self.now() > deadline:
                return
            started = self.now()
            ok, error, retries = await self._request(http, body)
            self.samples.append(Sample(started, self.now() - started, ok, name, error, retries))
            if not ok:
                # A failed request is counted once; back off a little so a dead endpoint is
                # not hammered with thousands of instant connection errors.
                await asyncio.sleep(0.05)

    async def _stream_client(self, name: str, http: httpx.AsyncClient) -> None:
        body = {
            "model": self.spec.model,
            "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": self.spec.stream_tokens,
            "stream": True,
        }
        deadline = self.now() + self.spec.max_seconds
        for _ in range(self.spec.max_requests_per_client):
            if self._stop.is_set() or self.now() > deadline:
                return
            started = self.now()
            ok, error, retries = await self._stream(http, body)
            self.samples.append(Sample(started, self.now() - started, ok, name, error, retries))
            if not ok:
                await asyncio.sleep(0.05)

    async def _stream(self, http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[bool, str, int]:
        """One streamed request: retried (as the SDK retries) only until the first chunk;
        ok only when it ends with `data: [DONE]` after at least one chunk."""
        error, wait_s = "", None
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt, wait_s))
            chunks = 0
            try:
                async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        error, wait_s = f"HTTP {response.status_code}", retry_after_s(response)
                        if response.status_code not in RETRYABLE_STATUS:
                            return False, error, attempt
                        continue
                    async for line in response.aiter_lines():
                        if line == "data: [DONE]":
                            return (True, "", attempt) if chunks else (False, "empty stream", attempt)
                        if line.startswith("data: "):
                            chunks += 1
                    error = "stream ended without [DONE]"
            except (httpx.HTTPError, ValueError) as exc:
                error = type(exc).__name__
            if chunks:
                # Tokens were already shown: a retry would start the answer over.
                return False, f"{error} after {chunks} chunks", attempt
        return False, error, self.spec.max_retries

    async def _request(self, http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[bool, str, int]:
        """One request as the OpenAI SDK sends it: tries until one succeeds, a refusal that
        no retry can fix, or the retries are spent. Returns (ok, last error, retries)."""
        error, wait_s = "", None
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt, wait_s))
            try:
                response = await http.post("/v1/chat/completions", json=body)
                if response.status_code == 200 and response.json()["choices"][0]["message"]["content"] is not None:
                    return True, "", attempt
                error, wait_s = f"HTTP {response.status_code}", retry_after_s(response)
                if response.status_code not in RETRYABLE_STATUS:
                    return False, error, attempt
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                error = type(exc).__name__
        return False, error, self.spec.max_retries

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """The wait before try `attempt` + 1: the server's Retry-After when it gave one,
        else the SDK's doubling back-off."""
        backoff = self.spec.retry_initial_delay_s * 2 ** (attempt - 1)
        return retry_after if retry_after is not None else backoff

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.spec.clients + self.spec.streams + 1)
        async with httpx.AsyncClient(base_url=self.spec.base_url, timeout=self.spec.timeout_s, limits=limits,
                                     headers=auth_headers(self.spec.api_key)) as http:
            names = [f"client-{i + 1}" for i in range(self.spec.clients)] + [SEQUENTIAL]
            streams = [f"{STREAM_PREFIX}{i + 1}" for i in range(self.spec.streams)]
            await asyncio.gather(*(self._client(name, http) for name in names),
                                 *(self._stream_client(name, http) for name in streams))
