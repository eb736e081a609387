"""Traffic for the drill: N concurrent chat clients plus one sequential client that sends
one request at a time like KubeRay's HA query.py. Every request is recorded; loops are
bounded in count and time and stop by themselves."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx

SEQUENTIAL = "sequential"


@dataclass(frozen=True)
class Sample:
    started: float  # seconds since the drill's clock started
    latency: float
    ok: bool
    client: str
    error: str = ""


@dataclass(frozen=True)
class LoadSpec:
    base_url: str  # e.g. http://10.213.7.11:8000
    model: str
    clients: int = 8
    max_tokens: int = 8
    timeout_s: float = 30.0
    # Safety bounds: a client stops after this many requests or this long, whichever first.
    max_requests_per_client: int = 200_000
    max_seconds: float = 900.0


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
            try:
                response = await http.post("/v1/chat/completions", json=body)
                ok = response.status_code == 200 and bool(response.json()["choices"][0]["message"]["content"] is not None)
                error = "" if ok else f"HTTP {response.status_code}"
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                ok, error = False, type(exc).__name__
            self.samples.append(Sample(started, self.now() - started, ok, name, error))
            if not ok:
                # A failed request is counted once; back off a little so a dead endpoint is
                # not hammered with thousands of instant connection errors.
                await asyncio.sleep(0.05)

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.spec.clients + 1)
        async with httpx.AsyncClient(base_url=self.spec.base_url, timeout=self.spec.timeout_s, limits=limits) as http:
            names = [f"client-{i + 1}" for i in range(self.spec.clients)] + [SEQUENTIAL]
            await asyncio.gather(*(self._client(name, http) for name in names))
