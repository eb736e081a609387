"""The API's keys and rate limits (images/ray-serve/ray_serve_llm/guard.py), in-process.

The guard's middleware runs on a small ASGI app with the real routes' paths; the rate
limiter counts in a real redis-server, shared by two guards as by two replicas. Keys are
read from a real file that the tests rewrite (rotation) and break (bad JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.requests import Request as StarletteRequest

from local.redis_client import RedisClient
from tests import serve_backend  # noqa: F401  (puts images/ray-serve on sys.path)

from ray_serve_llm import api_keys, guard  # isort: skip
from ray_serve_llm.args import AppArgs  # isort: skip
from ray_serve_llm.guard import GuardMiddleware  # isort: skip

# Ray Serve's own models trip a pydantic deprecation warning on import: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")

ALICE, BOB = "alice-" + "a" * 26, "bob-" + "b" * 28
KEYS = {"alice": ALICE, "bob": BOB}


@pytest.fixture
def redis_port(redis_server):
    return redis_server[1]


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "api-keys.json"
    path.write_text(json.dumps(KEYS))
    return path


def configure(monkeypatch, key_file, redis_port=None, **limits) -> guard.ApiGuard:
    if redis_port is not None:
        monkeypatch.setenv(guard.REDIS_ADDRESS_ENV, f"redis://127.0.0.1:{redis_port}")
        monkeypatch.setenv(guard.REDIS_PASSWORD_ENV, "pw")
    args = AppArgs.parse({"model_id": "m", "engine": "transformers", "api_keys_file": str(key_file), **limits})
    configured = guard.ApiGuard.from_args(args)
    monkeypatch.setattr(guard, "GUARD", configured)  # as guard.configure does, undone after the test
    return configured


def app() -> FastAPI:
    api = FastAPI()
    api.add_middleware(GuardMiddleware)

    @api.get("/v1/models")
    async def models(request: Request):
        return {"key": request.state.api_key_name}

    @api.get("/infer")
    async def infer():
        return "ok"

    @api.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return api


def call(path: str, headers: dict[str, str] | list[tuple[str, str]] | None = None) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app())
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(run())


# --- 401: every way a key can be missing or wrong ---------------------------------------------

UNAUTHORIZED = [
    ("no header", None, "missing_api_key", "didn't provide an API key"),
    ("empty header", [("Authorization", "")], "invalid_api_key", "is empty"),
    ("scheme only", {"Authorization": "Bearer"}, "invalid_api_key", "is empty"),
    ("empty key", {"Authorization": "Bearer   "}, "invalid_api_key", "is empty"),
    ("basic auth", {"Authorization": "Basic YWxpY2U6cHc="}, "invalid_api_key", "Bearer scheme"),
    ("bare key", {"Authorization": ALICE}, "invalid_api_key", "Bearer scheme"),
    ("key with a space", {"Authorization": f"Bearer {ALICE} x"}, "invalid_api_key", "must not contain spaces"),
    ("wrong key", {"Authorization": "Bearer sk-" + "x" * 30}, "invalid_api_key", "Incorrect API key"),
    ("a key's prefix", {"Authorization": f"Bearer {ALICE[:-1]}"}, "invalid_api_key", "Incorrect API key"),
    ("two headers", [("Authorization", f"Bearer {ALICE}"), ("Authorization", f"Bearer {BOB}")],
     "invalid_api_key", "More than one"),
]


@pytest.mark.parametrize(("case", "headers", "code", "says"), UNAUTHORIZED, ids=[c[0] for c in UNAUTHORIZED])
@pytest.mark.parametrize("path", ["/v1/models", "/infer"])
def test_a_missing_or_bad_key_is_a_401_in_openai_shape(monkeypatch, key_file, path, case, headers, code, says):
    configure(monkeypatch, key_file)
    response = call(path, headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code and says in error["message"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert ALICE not in response.text and BOB not in response.text  # a key is never echoed


@pytest.mark.parametrize(("scheme", "key", "name"), [("Bearer", ALICE, "alice"), ("bearer", BOB, "bob")])
def test_each_key_is_known_by_its_name(monkeypatch, key_file, scheme, key, name):
    configure(monkeypatch, key_file)
    response = call("/v1/models", {"Authorization": f"{scheme} {key}"})
    assert response.status_code == 200 and response.json() == {"key": name}


def test_health_stays_open_and_without_a_key_file_the_api_is_open(monkeypatch, key_file):
    configure(monkeypatch, key_file)
    assert call("/healthz").status_code == 200
    monkeypatch.setattr(guard, "GUARD", guard.ApiGuard())
    assert call("/v1/models").json() == {"key": None}


def test_keys_are_compared_with_every_key_in_constant_time(monkeypatch):
    compared = []
    real = api_keys.hmac.compare_digest
    monkeypatch.setattr(api_keys.hmac, "compare_digest", lambda a, b: compared.append(b) or real(a, b))
    assert api_keys.match(ALICE, KEYS) == "alice"
    assert compared == [ALICE.encode(), BOB.encode()]  # no early exit on the first match


# --- Key rotation and a broken key file -----------------------------------------------------


def test_keys_added_and_revoked_are_picked_up_without_a_restart(tmp_path, caplog):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"alice": ALICE}))
    now = [0.0]
    ring = api_keys.KeyRing(str(path), clock=lambda: now[0])
    assert ring.name_of(ALICE) == "alice" and ring.name_of(BOB) is None
    path.write_text(json.dumps({"bob": BOB}))  # alice revoked, bob added
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert ring.name_of(BOB) is None  # not looked at again yet
    now[0] += api_keys.RELOAD_INTERVAL_S
    assert ring.name_of(BOB) == "bob" and ring.name_of(ALICE) is None
    # A half-written secret: the last good keys stay, one line says why.
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        for broken in ('{"bob": "' + BOB, '["' + BOB + '"]', json.dumps({"bob": "short"})):
            path.write_text(broken)
            os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9 + len(broken)))
            now[0] += api_keys.RELOAD_INTERVAL_S
            assert ring.name_of(BOB) == "bob"
            now[0] += api_keys.RELOAD_INTERVAL_S
            assert ring.name_of(BOB) == "bob"  # the same broken version is not logged again
    lines = [r.getMessage() for r in caplog.records if "invalid" in r.getMessage()]
    assert len(lines) == 3 and "not valid JSON" in lines[0] and "JSON object" in lines[1]
    assert all(BOB not in line for line in lines)


def test_a_missing_key_file_at_start_accepts_no_key(tmp_path):
    ring = api_keys.KeyRing(str(tmp_path / "absent.json"))
    assert ring.name_of(ALICE) is None and ring.names == ()


@pytest.mark.parametrize(("text", "says"), [
    ("", "not valid JSON"),
    ("null", "JSON object"),
    ('{"": "' + ALICE + '"}', "name is empty"),
    ('{"a": 12345678901234567890}', "must be a string"),
    ('{"a": " ' + ALICE + '"}', "whitespace"),
    ('{"a": "' + ALICE + '", "b": "' + ALICE + '"}', "share one key"),
])
def test_bad_key_files_are_named(text, says):
    with pytest.raises(api_keys.KeyFileError, match=says):
        api_keys.parse_keys(text)


# --- 429: per-key limits across replicas, in Redis ------------------------------------------


def test_the_request_limit_holds_across_replicas_per_key(monkeypatch, key_file, redis_port):
    first = configure(monkeypatch, key_file, redis_port, api_rate_limit_per_minute=3)
    second = guard.ApiGuard.from_args(first_args := AppArgs.parse(  # another replica, same Redis
        {"model_id": "m", "engine": "transformers", "api_keys_file": str(key_file), "api_rate_limit_per_minute": 3}))
    assert first_args.api_rate_limit_per_minute == 3

    async def admitted(which: guard.ApiGuard, key: str) -> int:
        _, refusal = await which.respond_or_admit("/v1/models", [f"Bearer {key}"])
        return 200 if refusal is None else refusal.status_code

    async def run() -> list[int]:
        return [await admitted(g, ALICE) for g in (first, second, first)] + [
            await admitted(second, ALICE), await admitted(first, BOB)]

    assert asyncio.run(run()) == [200, 200, 200, 429, 200]
    response = call("/v1/models", {"Authorization": f"Bearer {ALICE}"})
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests" and "3 requests per minute" in error[
        "message"]
    keys = RedisClient("127.0.0.1", redis_port, password="pw").command("KEYS", "*")
    assert keys and all(key.startswith(b"ray-serve-ha:api-limit:") for key in keys)  # type: ignore[union-attr]


def test_the_token_limit_refuses_once_a_minute_s_tokens_are_spent(monkeypatch, key_file, redis_port):
    configured = configure(monkeypatch, key_file, redis_port, api_token_limit_per_minute=100)
    assert call("/v1/models", {"Authorization": f"Bearer {ALICE}"}).status_code == 200
    asyncio.run(configured.charge_tokens("alice", 100))
    response = call("/v1/models", {"Authorization": f"Bearer {ALICE}"})
    assert response.status_code == 429 and response.json()["error"]["type"] == "tokens"
    assert call("/v1/models", {"Authorization": f"Bearer {BOB}"}).status_code == 200


def test_an_unreachable_redis_fails_open_and_says_so_once(monkeypatch, key_file):
    from ray_serve_llm import rate_limit

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configure(monkeypatch, key_file, port, api_rate_limit_per_minute=1)
    said: list[str] = []
    monkeypatch.setattr(rate_limit.logger, "warning", lambda message, *args: said.append(message % args))
    monkeypatch.setattr(rate_limit, "RETRY_CONNECT_S", 0.0)  # every request tries Redis again
    statuses = [call("/v1/models", {"Authorization": f"Bearer {ALICE}"}).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert len(said) == 1 and "unreachable" in said[0]


def test_limits_need_a_key_file():
    with pytest.raises(ValueError, match="set api_keys_file"):
        AppArgs.parse({"model_id": "m", "engine": "transformers", "api_rate_limit_per_minute": 5})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        AppArgs.parse(
            {"model_id": "m", "engine": "transformers", "api_keys_file": "/k", "api_rate_limit_per_minute": 0})


# --- The router (spot replicas): the same door, and a full queue is a 429 -------------------


def _router_call(handle_error: Exception | None, headers: list[tuple[bytes, bytes]]):
    from ray_serve_llm.router import Router

    class Handle:
        def options(self, stream):
            return self

        @property
        def forward(self):
            return self

        def remote(self, message):
            async def messages():
                if handle_error is not None:
                    raise handle_error
                yield {"type": "http.response.start", "status": 200, "headers": []}
                yield {"type": "http.response.body", "body": json.dumps(message["api_key_name"]).encode()}

            return messages()

    router = object.__new__(Router.func_or_class)  # its __init__ needs a Serve replica
    router.handles = {"LLMServer": Handle(), "LLMServerSpot": Handle()}
    router.floor, router.running = "LLMServer", {"LLMServer": 1, "LLMServerSpot": 1}

    async def run():
        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
                 "headers": headers, "server": ("10.0.0.1", 8000), "client": ("10.0.0.2", 5000)}
        response = await router(StarletteRequest(scope, receive))
        body = response.body if hasattr(response, "body") else b"".join(
            [chunk async for chunk in response.body_iterator])
        return response.status_code, dict(response.headers), body

    return asyncio.run(run())


def test_the_router_checks_keys_and_forwards_the_name(monkeypatch, key_file):
    configure(monkeypatch, key_file)
    assert _router_call(None, [])[0] == 401
    status, _, body = _router_call(None, [(b"authorization", f"Bearer {BOB}".encode())])
    assert status == 200 and json.loads(body) == "bob"


def test_the_router_sheds_a_full_queue_with_a_429(monkeypatch, key_file):
    from ray.serve.exceptions import BackPressureError

    configure(monkeypatch, key_file)
    status, headers, body = _router_call(
        BackPressureError(num_queued_requests=16, max_queued_requests=16),
        [(b"authorization", f"Bearer {BOB}".encode())],
    )
    assert status == 429 and headers["retry-after"] == str(guard.SHED_RETRY_AFTER_S)
    assert json.loads(body)["error"]["code"] == "queue_full"


def test_the_charts_and_the_app_agree_on_the_contract():
    """The environment the workers get (ray_serve_ha/charts/rayservice.py, local/supervisor.py)
    is what the app reads; the shed answer's Retry-After is the same from Serve and the router."""
    from ray_serve_ha.charts import serve_config

    assert guard.REDIS_ADDRESS_ENV == serve_config.API_LIMITS_REDIS_ADDRESS_ENV
    assert guard.REDIS_PASSWORD_ENV == serve_config.API_LIMITS_REDIS_PASSWORD_ENV
    assert guard.SHED_RETRY_AFTER_S == serve_config.SHED_RETRY_AFTER_S
    assert AppArgs.parse({"model_id": "m", "engine": "transformers", **_guard_args()}).api_keys_file == "/k.json"


def _guard_args() -> dict:
    from ray_serve_ha.charts.serve_config import LlmServing, serve_config

    serving = LlmServing(model_id="m", engine="transformers", api_keys_file="/k.json")
    (app,) = serve_config(serving)["applications"]
    return {k: v for k, v in app["args"].items() if k.startswith("api_")}
