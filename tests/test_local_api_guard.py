"""The API's keys and load shedding on the real local stack (two workers' proxies, two
replicas, the stack's Redis): a burst far beyond what the replicas take is answered, every
request, with 200 or 429 + Retry-After, never a 5xx or a time-out; a key added to or revoked
from the key file works, or stops working, with no restart."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter

import httpx
import pytest

from local.api_keys import API_KEYS_FILE, read_keys
from local.stack import LocalStack, running_state
from local.topology import API_URL
from ray_serve_ha.charts.serve_config import DEFAULT_MAX_ONGOING_REQUESTS, DEFAULT_MAX_QUEUED_REQUESTS
from ray_serve_ha.charts.serve_metrics import PROXY_SHED_REQUESTS
from tests import serve_backend  # noqa: F401  (puts images/ray-serve/ on sys.path)
from tests.local_stack_probes import prometheus_query

from ray_serve_llm.guard import SHED_HEADER, SHED_REASON  # isort: skip

BODY = {"model": "tiny-mistral", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
# Far beyond what the replicas take at once and queue (2 x (16 + 16)) plus both proxies' queues.
BURST = 400
# Sent once a replica has shed one, over 1.5 s: beyond their share, the proxies answer these
# themselves.
AFTERSHOCK = 300
AFTERSHOCK_GAP_S = 0.005
# Longer than the slowest admitted answer can take: a request still open then is a time-out.
TIMEOUT_S = 60.0


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def stack():
    assert running_state() is None, "a local stack is already running: stop it with `make demo-down`"
    stack = LocalStack.up(fault_tolerance=True, ui=False, progress=quiet)
    yield stack
    stack.down()


def write_keys(keys: dict[str, str]) -> None:
    temporary = API_KEYS_FILE.with_suffix(".test")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(keys, file)
    os.replace(temporary, API_KEYS_FILE)


def models(key: str) -> int:
    return httpx.get(f"{API_URL}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code


def until(status: int, key: str, timeout_s: float = 30.0) -> float:
    started = time.monotonic()
    while models(key) != status:
        assert time.monotonic() - started < timeout_s, f"still not {status} after {timeout_s} s"
        time.sleep(0.5)
    return time.monotonic() - started


def proxy_sheds() -> float:
    result = prometheus_query(f"sum({PROXY_SHED_REQUESTS})")
    return float(result[0]["value"][1]) if result else 0.0


def until_true(condition, timeout_s: float = 30.0) -> bool:
    """Ray exports metrics every few seconds and Prometheus scrapes every few more."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


@pytest.mark.local_stack
def test_a_burst_far_over_capacity_is_shed_with_429_never_5xx(stack):
    user = read_keys()["user"]

    async def burst() -> list[tuple[int | str, dict[str, str], str]]:
        limits = httpx.Limits(max_connections=BURST + AFTERSHOCK + 10)
        replicas_shed = asyncio.Event()
        async with httpx.AsyncClient(base_url=API_URL, timeout=TIMEOUT_S, limits=limits,
                                     headers={"Authorization": f"Bearer {user}"}) as http:
            async def one():
                try:
                    response = await http.post("/v1/chat/completions", json=BODY)
                except httpx.TimeoutException:
                    return "timeout", {}, ""
                if response.headers.get(SHED_HEADER) == SHED_REASON:
                    replicas_shed.set()
                return response.status_code, dict(response.headers), response.text

            async def aftershock():
                # More requests, one every few milliseconds, while the first are still in
                # flight: once a replica has shed one of a proxy's requests, that proxy answers
                # those beyond its share itself for a second.
                await asyncio.wait_for(replicas_shed.wait(), TIMEOUT_S)
                sent = []
                for _ in range(AFTERSHOCK):
                    sent.append(asyncio.create_task(one()))
                    await asyncio.sleep(AFTERSHOCK_GAP_S)
                return await asyncio.gather(*sent)

            first, second = await asyncio.gather(asyncio.gather(*(one() for _ in range(BURST))), aftershock())
            return [*first, *second]

    answers = asyncio.run(burst())
    counts = Counter(status for status, _, _ in answers)
    assert set(counts) <= {200, 429}, counts  # no 5xx, no time-out
    # Each replica serves what its slots and its own queue hold; the rest is shed.
    assert counts[200] >= 2 * (DEFAULT_MAX_ONGOING_REQUESTS + DEFAULT_MAX_QUEUED_REQUESTS) and counts[429] > 0, counts
    shed_by_replicas = 0
    for status, headers, text in answers:
        if status == 429:
            assert int(headers["retry-after"]) >= 1
            shed_by_replicas += text.startswith("{") and json.loads(text)["error"]["code"] == "queue_full"
    # Shed with OpenAI's body (by the replicas or the proxies' gates), not only by Serve's
    # backstop queue in the proxies (plain text).
    assert shed_by_replicas > 0, counts
    # Once the replicas shed, the workers' proxies answered what was beyond their share
    # themselves (ray_serve_llm/proxy_gate.py), as their counter in the demo's Prometheus says.
    assert until_true(lambda: proxy_sheds() > 0), "no proxy shed a request itself"
    # The stack serves on at once.
    assert models(user) == 200


@pytest.mark.local_stack
def test_keys_are_added_and_revoked_without_a_restart(stack):
    keys = read_keys()
    added = "sk-added-" + os.urandom(16).hex()
    try:
        assert models(added) == 401
        write_keys({**keys, "added": added})
        took = until(200, added)
        write_keys(keys)
        took = max(took, until(401, added))
        # A broken key file keeps the last good keys (and the replicas log why).
        API_KEYS_FILE.write_text('{"user": ')
        time.sleep(6)
        assert models(keys["user"]) == 200
    finally:
        write_keys(keys)
    assert took < 15  # the replicas look at the file every 5 s
