"""What the local stack's tests read and do to the running stack: drills, Ray's state API,
the Serve controller and replicas, the GCS node table in Redis, traffic during an action,
the demo's Prometheus, and the UI's and status command's answers. Used by the tests of the
running local stack (tests/test_local_*.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from local import cgroups, netns, processes
from local.drill.__main__ import _served_model, run_drill
from local.drill.backends import LocalBackend
from local.drill.load import LoadGenerator, LoadSpec
from local.drill.plot import plot_timeline
from local.redis_client import RedisClient
from local.stack import STATE_DIR, LocalStack, running_state
from local.topology import API_URL, BRIDGE_IP, NODES, PROMETHEUS_URL, REDIS_PORT
from tests.conftest import ROOT

ARTIFACTS = ROOT / "test-artifacts"


def quiet(*_, **__) -> None:
    pass


def drill(stack: LocalStack, fault: str, **overrides):
    options = dict(fault=fault, clients=4, before_s=5, outage_s=10, grace_s=5, after_s=5, recovery_timeout_s=120)
    options.update(overrides)
    report, samples = asyncio.run(run_drill(LocalBackend(stack), progress=quiet, **options))
    ARTIFACTS.mkdir(exist_ok=True)
    stem = f"drill-{fault}{'' if report.fault_tolerance else '-no-ft'}"
    (ARTIFACTS / f"{stem}.json").write_text(json.dumps(report.to_json(), indent=2))
    plot_timeline(samples, report, ARTIFACTS / f"{stem}.png")
    return report


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket() as probe:
        probe.settimeout(timeout)
        return probe.connect_ex((host, port)) == 0


def assert_nothing_left(pids: list[int]) -> None:
    assert [p for p in pids if processes.alive(p)] == []
    assert netns.leftovers() == []
    assert cgroups.leftovers([node.name for node in NODES]) == []
    assert not listening("127.0.0.1", 8000) and not listening("127.0.0.1", 7860)
    leftover = subprocess.run(["pgrep", "-f", str(STATE_DIR)], capture_output=True, text=True).stdout.split()
    assert [p for p in map(int, leftover) if processes.alive(p)] == []
    assert running_state() is None


def state_api(stack: LocalStack, path: str) -> list[dict]:
    return stack.dashboard("GET", path, timeout=15)["data"]["result"]["result"]


def controller_actor(stack: LocalStack) -> dict:
    query = "/api/v0/actors?filter_keys=name&filter_predicates=%3D&filter_values=SERVE_CONTROLLER_ACTOR&detail=1"
    (actor,) = [a for a in state_api(stack, query) if a["state"] != "DEAD"]
    return actor


def replica_ids(stack: LocalStack) -> set[str]:
    status = stack.serve_status()
    assert status is not None
    return {r["replica_id"] for d in status["deployments"].values() for r in d["replicas"]}


def mark_node_dead_in_redis(stack: LocalStack, node_id_hex: str) -> None:
    """Writes the node's DEAD record as the GCS writes it when it declares a node dead
    (gcs_node_manager.cc: state, end time, death reason): the first of the two writes."""
    from ray.core.generated import gcs_pb2

    key = f"RAY{stack.state.storage_namespace}@NODE"
    node_id = bytes.fromhex(node_id_hex)
    with RedisClient(BRIDGE_IP, REDIS_PORT, password=stack.state.redis_password) as redis:
        node = gcs_pb2.GcsNodeInfo.FromString(redis.command("HGET", key, node_id))
        node.state = gcs_pb2.GcsNodeInfo.DEAD
        node.end_time_ms = int(time.time() * 1000)
        node.death_info.reason = node.death_info.UNEXPECTED_TERMINATION
        node.death_info.reason_message = "health check failed due to missing too many heartbeats"
        assert redis.command("HSET", key, node_id, node.SerializeToString()) == 0  # an update, not a new node


def with_traffic(action):
    """Runs `action` (blocking) while the drill's clients send traffic through the API port;
    returns its result and the samples."""

    async def run():
        model = await _served_model(API_URL)
        load = LoadGenerator(LoadSpec(base_url=API_URL, model=model, clients=2), time.monotonic())
        traffic = asyncio.create_task(load.run())
        try:
            await asyncio.sleep(2)
            result = await asyncio.to_thread(action)
            await asyncio.sleep(2)
        finally:
            load.stop()
            await traffic
        return result, load.samples

    return asyncio.run(run())


def get(url: str, *, api_key: str | None = "user") -> tuple[int, bytes]:
    """GET with the local stack's API key of that name on /v1 routes (None: no header)."""
    from local.api_keys import key_of

    headers = {"Authorization": f"Bearer {key_of(api_key)}"} if api_key and "/v1/" in url else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def status() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "local", "status"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def prometheus_query(query: str) -> list[dict]:
    """An instant query to the demo's Prometheus: its result vector."""
    params = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{PROMETHEUS_URL}/api/v1/query?{params}", timeout=10) as response:
        return json.load(response)["data"]["result"]
