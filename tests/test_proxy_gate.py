"""The Serve proxies' share of the replicas' bound (images/ray-serve/ray_serve_llm/proxy_gate.py).

The share from the controller's details (replicas, proxies, the application's bounds), then
the gate in front of a small ASGI app whose generating route waits until the test lets it
finish, with keys from a real file: what it lets through, what it answers itself, and in
which order (401 before 429, as at a replica). Last, the chart puts it in every worker's
proxies, and the local stack's nodes get the chart's environment.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI

from ray_serve_ha.charts import ray_env, serve_metrics
from tests import serve_backend  # noqa: F401  (puts images/ray-serve/ on sys.path)

from ray_serve_llm import guard, proxy_gate  # isort: skip
from ray_serve_llm.proxy_gate import SATURATED_S, ProxyGate, Share, share_of  # isort: skip
from ray_serve_llm.rate_limit import Refusal  # isort: skip

pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")

ALICE = "alice-" + "a" * 26
ARGS = {"model_id": "/models/m", "engine": "transformers"}


def _details(replicas=2, proxies=("head", "w1", "w2"), unhealthy=(), deployments=None, **args) -> dict:
    return {
        "controller_info": {"node_id": "head"},
        "proxies": {
            node: {"node_id": node, "status": "UNHEALTHY" if node in unhealthy else "HEALTHY"} for node in proxies
        },
        "applications": {
            "llm": {
                "deployed_app_config": {"args": {**ARGS, **args}},
                "deployments": deployments
                or {"LLMServer": {"replicas": [{"state": "RUNNING"}] * replicas + [{"state": "STARTING"}]}},
            }
        },
    }


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        # two replicas of one slot, two worker proxies: one each (the head's takes no traffic)
        (_details(max_ongoing_requests=1, max_queued_requests=0), 1),
        # the defaults, 16 + 16 per replica
        (_details(), 32),
        # an odd split rounds up: the replicas' own bound is the exact one
        (_details(replicas=3, max_ongoing_requests=1, max_queued_requests=1), 3),
        # an unhealthy proxy takes no traffic
        (_details(unhealthy=("w2",), max_ongoing_requests=2, max_queued_requests=1), 6),
        # everything on the head (one node): its proxy takes it all
        (_details(proxies=("head",), max_ongoing_requests=1, max_queued_requests=0), 2),
        # spot: the router forwards, the floor and spot replicas generate
        (
            _details(
                deployments={
                    "Router": {"replicas": [{"state": "RUNNING"}] * 2},
                    "LLMServer": {"replicas": [{"state": "RUNNING"}]},
                    "LLMServerSpot": {"replicas": [{"state": "RUNNING"}] * 3},
                },
                max_ongoing_requests=4,
                max_queued_requests=0,
            ),
            8,
        ),
    ],
)
def test_a_proxys_share_is_the_replicas_bound_split_over_the_proxies_that_take_traffic(details, expected):
    assert share_of(details).max_in_flight == expected


def test_no_share_while_no_replica_runs_or_no_application_has_the_models_args():
    assert share_of(_details(replicas=0)) is None
    assert share_of({"applications": {"other": {"deployed_app_config": {"args": {}}, "deployments": {}}}}) is None
    assert share_of({}) is None


def test_the_share_names_the_applications_keys_file():
    assert share_of(_details(api_keys_file="/etc/keys/api-keys.json")).api_keys_file == "/etc/keys/api-keys.json"


# --- The gate in front of an app --------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self) -> None:
        self.count += 1


class _Replicas:
    """A small app in the gate's place: chats wait for `release`; with `full` set, a chat that
    finds another in progress is shed as a model replica sheds it (or refused as over its
    key's limit, with `limited`)."""

    def __init__(self, full: bool = False) -> None:
        self.release = asyncio.Event()
        self.reached: list[str] = []
        self.running = 0
        self.full = full
        self.limited = False
        self.api = FastAPI()

        @self.api.post("/v1/chat/completions")
        async def chat():
            self.reached.append("chat")
            if self.limited:
                return guard.error_response(guard.refused(Refusal("requests", 1, 60), "alice"))
            if self.full and self.running:
                return guard.error_response(guard.overloaded())
            self.running += 1
            try:
                await self.release.wait()
            finally:
                self.running -= 1
            return {"ok": True}

        @self.api.get("/v1/models")
        async def models() -> dict:
            self.reached.append("models")
            return {"data": []}


async def _gate(tmp_path, replicas, details=None, **args):
    keys = tmp_path / "api-keys.json"
    keys.write_text(json.dumps({"alice": ALICE}))
    counter, now = _Counter(), [1000.0]
    bounds = {"max_ongoing_requests": 1, "max_queued_requests": 0, **args}
    fetched = details or _details(api_keys_file=str(keys), **bounds)
    gate = ProxyGate(replicas.api, details=lambda: fetched, shed_counter=counter, clock=lambda: now[0])
    await gate.refresh()
    return gate, counter, now


def _client(gate) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gate), base_url="http://proxy")


def _chat(client, key=ALICE):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return client.post("/v1/chat/completions", json={}, headers=headers)


async def _one_in_flight(client, gate) -> asyncio.Task:
    first = asyncio.create_task(_chat(client))
    while gate.in_flight < 1:
        await asyncio.sleep(0.01)
    return first


async def _saturated(client, gate) -> asyncio.Task:
    """One request in flight (the share) and one beyond it that the replicas shed."""
    first = await _one_in_flight(client, gate)
    await _chat(client)
    return first


def test_beyond_its_share_while_the_replicas_shed_the_proxy_answers_429_queue_full_itself(tmp_path):
    async def run():
        replicas = _Replicas(full=True)
        gate, counter, now = await _gate(tmp_path, replicas)
        async with _client(gate) as client:
            first = await _one_in_flight(client, gate)
            by_replica = await _chat(client)  # beyond the share, but the replicas were not known full
            by_proxy = await _chat(client)
            reached_while_full = list(replicas.reached)
            now[0] += SATURATED_S  # a second later the next one asks the replicas again
            again = await _chat(client)
            replicas.release.set()
            assert (await first).status_code == 200
        return by_replica, by_proxy, reached_while_full, replicas.reached, again, counter, gate

    by_replica, by_proxy, reached_while_full, reached, again, counter, gate = asyncio.run(run())
    assert by_replica.status_code == by_proxy.status_code == 429
    for shed in (by_replica, by_proxy):
        assert shed.headers["retry-after"] == "1"
        assert shed.json()["error"]["code"] == "queue_full"
    assert reached_while_full == ["chat", "chat"]  # the proxy's own 429 never reached a replica
    assert counter.count == 1
    assert again.status_code == 429 and reached == ["chat", "chat", "chat"]
    assert gate.in_flight == 0


def test_beyond_its_share_while_the_replicas_have_room_requests_pass(tmp_path):
    """Connections, not requests, are balanced over the proxies: one may hold more than its share."""

    async def run():
        replicas = _Replicas()
        gate, counter, _ = await _gate(tmp_path, replicas)
        async with _client(gate) as client:
            chats = [asyncio.create_task(_chat(client)) for _ in range(3)]
            while gate.in_flight < 3:
                await asyncio.sleep(0.01)
            replicas.release.set()
            return [(await chat).status_code for chat in chats], counter.count, gate.saturated()

    assert asyncio.run(run()) == ([200, 200, 200], 0, False)


def test_a_keys_rate_limit_is_no_sign_of_full_replicas(tmp_path):
    async def run():
        replicas = _Replicas()
        gate, counter, _ = await _gate(tmp_path, replicas)
        async with _client(gate) as client:
            first = await _one_in_flight(client, gate)
            replicas.limited = True
            limited = await _chat(client)
            replicas.limited = False
            passed = asyncio.create_task(_chat(client))
            await asyncio.sleep(0.05)
            replicas.release.set()
            statuses = (await first).status_code, (await passed).status_code
            return limited.json()["error"]["code"], statuses, counter.count, gate.saturated()

    assert asyncio.run(run()) == ("rate_limit_exceeded", (200, 200), 0, False)


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        (None, 401, "missing_api_key"),
        ("wrong-" + "b" * 26, 401, "invalid_api_key"),
        (ALICE, 429, "queue_full"),
    ],
)
def test_a_request_the_proxy_refuses_without_a_valid_key_is_401_not_429(tmp_path, key, status, code):
    async def run():
        replicas = _Replicas(full=True)
        gate, counter, _ = await _gate(tmp_path, replicas)
        async with _client(gate) as client:
            first = await _saturated(client, gate)
            answer = await _chat(client, key)
            replicas.release.set()
            await first
        return answer, counter, replicas.reached

    answer, counter, reached = asyncio.run(run())
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert counter.count == (1 if status == 429 else 0)
    assert reached == ["chat", "chat"]


def test_other_routes_pass_whatever_the_load(tmp_path):
    async def run():
        replicas = _Replicas(full=True)
        gate, _, _ = await _gate(tmp_path, replicas)
        async with _client(gate) as client:
            first = await _saturated(client, gate)
            models = await client.get("/v1/models", headers={"Authorization": f"Bearer {ALICE}"})
            replicas.release.set()
            await first
        return gate.saturated(), models.status_code

    assert asyncio.run(run()) == (True, 200)


def test_while_the_share_is_not_known_the_gate_lets_everything_through(tmp_path):
    async def run():
        replicas = _Replicas(full=True)
        gate, counter, _ = await _gate(tmp_path, replicas, details=_details(replicas=0))
        async with _client(gate) as client:
            first = await _one_in_flight(client, gate)
            shed = [(await _chat(client)).status_code for _ in range(3)]
            replicas.release.set()
            await first
        return shed, counter.count, replicas.reached

    assert asyncio.run(run()) == ([429, 429, 429], 0, ["chat"] * 4)


def test_the_last_share_holds_while_the_controller_does_not_answer(tmp_path):
    async def run():
        gate, _, _ = await _gate(tmp_path, _Replicas())

        def away():
            raise ConnectionError("the Serve controller is restarting")

        gate._details = away
        await gate.refresh()
        return gate.share

    assert asyncio.run(run()) == Share(1, str(tmp_path / "api-keys.json"))


def test_a_request_that_fails_frees_its_place(tmp_path):
    async def run():
        async def failing(scope, receive, send):
            raise RuntimeError("the replica died")

        gate = ProxyGate(failing, details=lambda: _details(max_ongoing_requests=1, max_queued_requests=0))
        await gate.refresh()
        async with _client(gate) as client:
            with pytest.raises(RuntimeError):
                await client.post("/v1/chat/completions", json={})
        return gate.in_flight

    assert asyncio.run(run()) == 0


def test_the_dashboards_read_the_gates_counter_by_the_name_ray_exports():
    assert f"ray_{proxy_gate.SHED_METRIC}_total" == serve_metrics.PROXY_SHED_REQUESTS


def test_every_workers_proxy_runs_the_gate_and_the_head_does_not():
    assert ray_env.worker_env()["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == ray_env.PROXY_GATE_IMPORT_PATH
    assert "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH" not in ray_env.head_env()
    module, _, name = ray_env.PROXY_GATE_IMPORT_PATH.rpartition(".")
    assert module == proxy_gate.__name__ and callable(getattr(proxy_gate, name))
