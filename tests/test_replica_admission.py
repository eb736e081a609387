"""Each replica's own bounded queue (images/ray-serve/ray_serve_llm/admission.py), in-process.

The queue on its own (slots, order, cancellation), then behind the real guard middleware on
a small ASGI app whose generating route waits until the test lets it finish, with keys from a
real file and limits counted in a real redis-server; the router's fallback when a model
replica sheds; and the serve config's bounds around the replica's own.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.requests import Request as StarletteRequest

from ray_serve_ha.charts import serve_config
from ray_serve_ha.charts.serve_config import LlmServing
from tests import serve_backend  # noqa: F401  (puts images/ray-serve on sys.path)

from ray_serve_llm import admission, guard  # isort: skip
from ray_serve_llm.admission import Admission, Full  # isort: skip
from ray_serve_llm.args import AppArgs  # isort: skip
from ray_serve_llm.guard import GuardMiddleware  # isort: skip

# Ray Serve's own models trip a pydantic deprecation warning on import: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")

ALICE = "alice-" + "a" * 26


# --- The queue itself ------------------------------------------------------------------------


async def _hold(gate: Admission, name: str, release: asyncio.Event, log: list[str]) -> str:
    try:
        async with gate.slot():
            log.append(f"{name} starts")
            await release.wait()
            log.append(f"{name} ends")
            return "served"
    except Full:
        return "shed"


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_slots_then_a_queue_in_arrival_order_then_shed():
    async def run():
        gate, log = Admission(max_ongoing=2, max_queued=2), []
        releases = [asyncio.Event() for _ in range(5)]
        tasks = []
        for i, release in enumerate(releases):
            tasks.append(asyncio.create_task(_hold(gate, f"r{i}", release, log)))
            await _settle()
        assert (gate.running, gate.waiting) == (2, 2)
        assert log == ["r0 starts", "r1 starts"] and tasks[4].done() and tasks[4].result() == "shed"
        releases[1].set()  # a slot frees: the first in the queue takes it, not the last
        await _settle()
        assert log[-2:] == ["r1 ends", "r2 starts"] and (gate.running, gate.waiting) == (2, 1)
        for release in releases:
            release.set()
        assert await asyncio.gather(*tasks) == ["served"] * 4 + ["shed"]
        assert log.index("r3 starts") > log.index("r2 starts")
        assert (gate.running, gate.waiting) == (0, 0)

    asyncio.run(run())


def test_with_no_queue_whatever_cannot_start_now_is_shed():
    async def run():
        gate, log, release = Admission(max_ongoing=1, max_queued=0), [], asyncio.Event()
        first = asyncio.create_task(_hold(gate, "a", release, log))
        await _settle()
        assert await _hold(gate, "b", release, log) == "shed"
        release.set()
        assert await first == "served" and await _hold(gate, "c", release, log) == "served"

    asyncio.run(run())


def test_a_client_that_leaves_while_queued_gives_up_its_place():
    async def run():
        gate, log = Admission(max_ongoing=1, max_queued=1), []
        hold, leaver_release = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(_hold(gate, "a", hold, log))
        await _settle()
        leaver = asyncio.create_task(_hold(gate, "leaver", leaver_release, log))
        await _settle()
        assert gate.waiting == 1
        leaver.cancel()  # Serve cancels a request whose client disconnected
        await _settle()
        assert gate.waiting == 0 and leaver.cancelled()
        # Its place is free again: the next request queues instead of being shed.
        queued = asyncio.create_task(_hold(gate, "b", hold, log))
        await _settle()
        assert gate.waiting == 1
        hold.set()
        assert await asyncio.gather(first, queued) == ["served", "served"]
        assert "leaver starts" not in log and (gate.running, gate.waiting) == (0, 0)

    asyncio.run(run())


def test_a_slot_handed_to_a_client_that_just_left_passes_to_the_next():
    async def run():
        gate, log, release = Admission(max_ongoing=1, max_queued=2), [], asyncio.Event()
        await gate._enter()  # a request being served
        leaver = asyncio.create_task(_hold(gate, "leaver", release, log))
        nxt = asyncio.create_task(_hold(gate, "next", release, log))
        await _settle()
        assert gate.waiting == 2
        gate._leave()  # the request ends and hands its slot to the leaver's ticket...
        leaver.cancel()  # ...whose client leaves before it runs again
        await _settle()
        assert log == ["next starts"] and leaver.cancelled()
        release.set()
        assert await asyncio.wait_for(nxt, 5) == "served" and (gate.running, gate.waiting) == (0, 0)

    asyncio.run(run())


def test_a_request_that_waits_too_long_is_shed_and_leaves_the_queue():
    async def run():
        gate, log, hold = Admission(max_ongoing=1, max_queued=1, max_wait_s=0.2), [], asyncio.Event()
        first = asyncio.create_task(_hold(gate, "a", hold, log))
        await _settle()
        assert await _hold(gate, "b", hold, log) == "shed"  # after 0.2 s, not when "a" ends
        assert gate.waiting == 0 and not first.done()
        hold.set()
        assert await first == "served" and (gate.running, gate.waiting) == (0, 0)

    asyncio.run(run())


def test_a_request_that_fails_frees_its_slot():
    async def run():
        gate = Admission(max_ongoing=1, max_queued=0)
        with pytest.raises(RuntimeError):
            async with gate.slot():
                raise RuntimeError("generation failed")
        assert gate.running == 0
        async with gate.slot():
            assert gate.running == 1

    asyncio.run(run())


# --- Behind the guard: key first, then the queue, then the key's limits ----------------------


def _app(release: asyncio.Event) -> FastAPI:
    api = FastAPI()
    api.add_middleware(GuardMiddleware)

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        await release.wait()
        return {"key": request.state.api_key_name}

    @api.get("/v1/models")
    async def models():
        return {"data": []}

    return api


@pytest.fixture
def guarded(monkeypatch, tmp_path, redis_server):
    """The guard with one key and 3 requests per minute in a real Redis; one slot, one queued."""
    key_file = tmp_path / "api-keys.json"
    key_file.write_text(json.dumps({"alice": ALICE}))
    monkeypatch.setenv(guard.REDIS_ADDRESS_ENV, f"redis://127.0.0.1:{redis_server[1]}")
    monkeypatch.setenv(guard.REDIS_PASSWORD_ENV, "pw")
    args = AppArgs.parse({"model_id": "m", "engine": "transformers", "api_keys_file": str(key_file),
                          "api_rate_limit_per_minute": 3, "max_ongoing_requests": 1, "max_queued_requests": 1})
    monkeypatch.setattr(guard, "GUARD", guard.ApiGuard.from_args(args))
    monkeypatch.setattr(admission, "ADMISSION", Admission(args.max_ongoing_requests, args.max_queued_requests))


def _burst(requests: list[tuple[str, str, str]]) -> list[httpx.Response]:
    """Sends (method, path, key) requests one after another while the generating route is
    held, then lets it finish; the answers in the order sent."""

    async def run():
        release = asyncio.Event()
        transport = httpx.ASGITransport(app=_app(release))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            tasks = []
            for method, path, key in requests:
                headers = {"Authorization": f"Bearer {key}"}
                tasks.append(asyncio.create_task(client.request(method, path, headers=headers, json={})))
                await asyncio.sleep(0.05)
            release.set()
            return await asyncio.gather(*tasks)

    return asyncio.run(run())


CHAT = ("POST", "/v1/chat/completions")


def test_a_full_replica_sheds_with_429_queue_full_and_retry_after(guarded):
    answers = _burst([(*CHAT, ALICE)] * 3)
    assert [a.status_code for a in answers] == [200, 200, 429]
    shed = answers[2]
    assert shed.headers["retry-after"] == str(guard.SHED_RETRY_AFTER_S)
    assert shed.json()["error"]["code"] == "queue_full" and shed.json()["error"]["type"] == "server_overloaded"


def test_a_bad_key_is_a_401_even_when_the_replica_is_full(guarded):
    answers = _burst([(*CHAT, ALICE), (*CHAT, ALICE), (*CHAT, "sk-wrong-" + "x" * 24)])
    assert [a.status_code for a in answers] == [200, 200, 401]


def test_a_shed_request_is_not_counted_against_its_key(guarded):
    # 3 requests a minute: two served, two shed, then the third served request still fits.
    answers = _burst([(*CHAT, ALICE)] * 4)
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    (third,) = _burst([(*CHAT, ALICE)])
    assert third.status_code == 200
    (fourth,) = _burst([(*CHAT, ALICE)])
    assert fourth.status_code == 429 and fourth.json()["error"]["code"] == "rate_limit_exceeded"


def test_routes_that_do_not_generate_are_not_bounded(guarded):
    answers = _burst([(*CHAT, ALICE), (*CHAT, ALICE), ("GET", "/v1/models", ALICE)])
    assert [a.status_code for a in answers] == [200, 200, 200]


# --- The router (spot replicas): a shedding replica's deployment is passed over --------------


def _route(statuses: dict[str, int]) -> tuple[int, dict[str, str], bytes]:
    """A request through the router whose two deployments answer with these statuses."""
    from ray_serve_llm.router import Router

    class Handle:
        def __init__(self, name: str):
            self.name = name

        def options(self, stream):
            return self

        @property
        def forward(self):
            return self

        def remote(self, message):
            name = self.name

            class Messages:
                def __aiter__(self):
                    return self

                async def __anext__(self):
                    return {"type": "http.response.start", "status": statuses[name], "headers": []}

                def cancel(self):
                    pass

            return Messages()

    router = object.__new__(Router.func_or_class)  # its __init__ needs a Serve replica
    router.handles = {name: Handle(name) for name in statuses}
    router.floor, router.running = "LLMServer", {"LLMServer": 1, "LLMServerSpot": 1}

    async def run():
        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
                 "headers": [], "server": ("10.0.0.1", 8000), "client": ("10.0.0.2", 5000)}
        response = await router(StarletteRequest(scope, receive))
        return response.status_code, dict(response.headers), getattr(response, "body", b"")

    return asyncio.run(run())


@pytest.mark.parametrize("full", ["LLMServer", "LLMServerSpot"])
def test_the_router_passes_over_a_deployment_whose_replica_sheds(monkeypatch, full):
    monkeypatch.setattr(guard, "GUARD", guard.ApiGuard())  # an open API: the router's own check is elsewhere
    other = "LLMServerSpot" if full == "LLMServer" else "LLMServer"
    for _ in range(10):  # whichever deployment the router draws first
        status, headers, _ = _route({full: 429, other: 200})
        assert status == 200 and headers["x-served-by"] == other


def test_the_router_sheds_when_both_deployments_shed(monkeypatch):
    monkeypatch.setattr(guard, "GUARD", guard.ApiGuard())
    status, headers, body = _route({"LLMServer": 429, "LLMServerSpot": 429})
    assert status == 429 and headers["retry-after"] == str(guard.SHED_RETRY_AFTER_S)
    assert json.loads(body)["error"]["code"] == "queue_full"


# --- The serve config: Serve's bounds around the replica's own -------------------------------


def _model_deployment(**bounds) -> tuple[dict, dict]:
    serving = LlmServing(model_id="m", engine="transformers", **bounds)
    (app,) = serve_config.serve_config(serving)["applications"]
    return app["args"], app["deployments"][0]


def test_serve_hands_each_replica_its_slots_its_queue_and_the_requests_it_refuses():
    args, deployment = _model_deployment(max_ongoing_requests=16, max_queued_requests=16)
    assert (args["max_ongoing_requests"], args["max_queued_requests"]) == (16, 16)
    assert deployment["max_ongoing_requests"] == 16 + 16 + serve_config.SHED_HEADROOM
    # Serve's own queue stays as the backstop, with its 429 and Retry-After.
    assert deployment["max_queued_requests"] == 16
    assert deployment["backpressure_config"] == {"status_code": 429, "retry_after_s": guard.SHED_RETRY_AFTER_S}


def test_a_replica_with_no_queue_keeps_serve_s_smallest_backstop():
    args, deployment = _model_deployment(max_ongoing_requests=1, max_queued_requests=0)
    assert args["max_queued_requests"] == 0 and AppArgs.parse({"model_id": "m", "engine": "transformers", **args})
    assert deployment["max_ongoing_requests"] == 1 + serve_config.SHED_HEADROOM
    assert deployment["max_queued_requests"] == 1  # Serve takes no 0


def test_the_router_takes_what_every_model_replica_can_hold():
    serving = LlmServing(model_id="m", engine="transformers", min_replicas=3, max_replicas=4, on_demand_replicas=1)
    (app,) = serve_config.serve_config(serving)["applications"]
    router = next(d for d in app["deployments"] if d["name"] == "Router")
    assert router["max_ongoing_requests"] == 4 * (16 + 16 + serve_config.SHED_HEADROOM)


@pytest.mark.parametrize("max_tokens", [64, 512, 1024])
def test_a_drained_replica_ends_what_it_queued_within_its_grace(max_tokens):
    # Drained (scale-down, upgrade, node drain), a replica gets no new requests but serves its
    # queue: the longest wait plus the longest answer at the slowest rate fit the grace.
    serving = LlmServing(model_id="m", engine="transformers", max_tokens=max_tokens)
    args, _ = _model_deployment(max_tokens=max_tokens)
    assert args["max_queue_wait_s"] == serving.max_queue_wait_s > 0
    longest_answer_s = max_tokens / serve_config.SLOWEST_STREAM_TOKENS_PER_S
    assert serving.max_queue_wait_s + longest_answer_s <= serve_config.GRACEFUL_SHUTDOWN_TIMEOUT_S


def test_a_negative_queue_is_refused_by_the_config_and_the_app():
    with pytest.raises(ValueError, match="max_queued_requests=-1 must be 0 or more"):
        LlmServing(model_id="m", engine="transformers", max_queued_requests=-1)
    with pytest.raises(ValueError, match="max_queued_requests"):
        AppArgs.parse({"model_id": "m", "engine": "transformers", "max_queued_requests": -1})


def test_the_charts_and_the_app_agree_on_the_bounds():
    assert serve_config.SHED_HEADROOM == admission.SHED_HEADROOM
    assert serve_config.DEFAULT_MAX_ONGOING_REQUESTS == admission.DEFAULT_MAX_ONGOING_REQUESTS
    assert serve_config.DEFAULT_MAX_QUEUED_REQUESTS == admission.DEFAULT_MAX_QUEUED_REQUESTS


def test_the_queue_gauge_is_set_again_while_the_queue_holds_still(monkeypatch):
    # Ray drops a gauge's series that is not set again within two export intervals: the
    # replica must keep publishing an unchanged queue length, not only its changes.
    class Gauge:
        def __init__(self, name: str, description: str) -> None:
            self.name, self.values = name, []

        def set(self, value: int) -> None:
            self.values.append(value)

    gauges: list[Gauge] = []

    def make_gauge(name: str, description: str) -> Gauge:
        gauges.append(Gauge(name, description))
        return gauges[-1]

    monkeypatch.setattr(admission, "QUEUE_METRIC_PERIOD_S", 0.01)

    async def run():
        gate, log, release = Admission(max_ongoing=1, max_queued=2), [], asyncio.Event()
        publisher = asyncio.create_task(admission.publish_waiting(gate, make_gauge))
        held = [asyncio.create_task(_hold(gate, f"r{i}", release, log)) for i in range(3)]
        await asyncio.sleep(0.1)  # one answering, two queued, for about ten periods
        release.set()
        await asyncio.gather(*held)
        await asyncio.sleep(0.05)
        publisher.cancel()

    asyncio.run(run())
    (gauge,) = gauges
    assert gauge.name == "serve_llm_queued_requests"  # exported as REPLICA_QUEUED_REQUESTS
    assert gauge.values[0] == 0 and gauge.values[-1] == 0
    assert gauge.values.count(2) >= 5, gauge.values
