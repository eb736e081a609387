"""A RayService worker is Ready only while its own Serve replica serves, and its raylet and
proxy answer: the probe script run for real, against a process table and HTTP endpoints of
our making, and against a real Ray Serve replica whose constructor takes a while."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ray_serve_ha.charts.serve_config import APP_NAME, DEPLOYMENT_NAME
from ray_serve_ha.charts.worker_readiness import readiness_command, replica_process_title
from tests.chart_inputs import example_eks_deployment

TITLE = replica_process_title()


class Health(BaseHTTPRequestHandler):
    """Answers 200 on the raylet's and the proxy's health paths while `healthy` is set."""

    def do_GET(self) -> None:
        ok = self.server.healthy  # type: ignore[attr-defined]
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"success" if ok else b"down")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def endpoints():
    servers = []
    for _ in range(2):
        server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
        server.healthy = True  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def probe(endpoints, proc_root: str, title: str = TITLE) -> int:
    raylet, proxy = endpoints
    command = readiness_command(
        agent_port=raylet.server_address[1], serve_port=proxy.server_address[1], replica_title=title,
        proc_root=proc_root,
    )
    assert command[:2] == ["python3", "-c"]
    return subprocess.run([sys.executable, "-c", command[2]], timeout=30).returncode


def processes(root: Path, *titles: str) -> str:
    for pid, title in enumerate(("/usr/bin/raylet", "ray::IDLE", *titles), start=100):
        (root / str(pid)).mkdir(parents=True)
        # Ray's process titles overwrite argv; the rest of the buffer is NUL-padded.
        (root / str(pid) / "cmdline").write_bytes(title.encode() + b"\0" * 8)
    (root / "self").mkdir()
    return str(root)


@pytest.mark.parametrize(
    ("titles", "ready"),
    [
        ((), False),
        ((f"{TITLE}.__init__",), False),
        ((f"{TITLE}.initialize_and_get_metadata",), False),
        ((TITLE,), True),
        ((f"{TITLE}.handle_request_streaming",), True),
        ((f"ray::ServeReplica:{APP_NAME}:OtherDeployment",), False),
        (("ray::ServeController",), False),
    ],
    ids=["no-replica", "creating", "loading-the-model", "serving", "serving-a-request", "other-deployment",
         "controller"],
)
def test_ready_only_when_the_replica_on_this_node_serves(tmp_path, endpoints, titles, ready):
    assert probe(endpoints, processes(tmp_path, *titles)) == (0 if ready else 1)


@pytest.mark.parametrize("down", [0, 1], ids=["raylet-down", "proxy-down"])
def test_not_ready_when_raylet_or_proxy_do_not_answer(tmp_path, endpoints, down):
    endpoints[down].healthy = False
    assert probe(endpoints, processes(tmp_path, TITLE)) == 1


def test_the_rayservice_workers_carry_the_probe_and_the_head_keeps_kuberays():
    import cdk8s

    from ray_serve_ha.charts.profiles import eks_charts

    charts = eks_charts(cdk8s.App(), example_eks_deployment("neuron"))
    (rayservice,) = [o for o in charts.rayservice.to_json() if o["kind"] == "RayService"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    (worker,) = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"]
    probe_spec = worker["readinessProbe"]
    assert probe_spec["exec"]["command"] == readiness_command()
    assert (probe_spec["periodSeconds"], probe_spec["failureThreshold"]) == (5, 1)
    assert f"{APP_NAME}:{DEPLOYMENT_NAME}" in probe_spec["exec"]["command"][2]
    # KubeRay's own checks for RayService workers, kept: the raylet (healthy while only the
    # head's GCS is away) and the Serve proxy.
    assert "http://localhost:52365/api/local_raylet_healthz" in probe_spec["exec"]["command"][2]
    assert "http://localhost:8000/-/healthz" in probe_spec["exec"]["command"][2]
    # The head pod: Ray's container first (KubeRay injects its probes there, where none is
    # set) and the Serve watchdog beside it; neither sets a readiness probe.
    from ray_serve_ha.charts.serve_watchdog import CONTAINER_NAME

    head_containers = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in head_containers[1:]] == [CONTAINER_NAME]
    assert all("readinessProbe" not in c for c in head_containers)


def running_titles() -> set[str]:
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        # A process may end between the listing and the read.
        with contextlib.suppress(OSError):
            found.add((Path("/proc") / pid / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").strip())
    return found


# A Ray of its own in a child process: the test process may already run the shared Serve
# backend (one Ray per process), and this Ray must not bind the machine's port 8000.
# address="local" starts a new Ray even where another one runs on the machine.
_SLOW_REPLICA = """
import sys, time
import ray
from ray import serve

@serve.deployment(name=sys.argv[2], num_replicas=1, ray_actor_options={"num_cpus": 0})
class SlowToLoad:
    def __init__(self):
        time.sleep(15)  # loading the model

    async def __call__(self, request):
        return "ok"

ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
serve.start(proxy_location="Disabled")
serve.run(SlowToLoad.bind(), name=sys.argv[1], route_prefix=None)
print("deployed", flush=True)
sys.stdin.read()  # until the test is done
serve.shutdown()
ray.shutdown()
"""


@pytest.mark.ray
def test_a_real_replica_is_not_ready_until_its_constructor_returns(endpoints):
    """Ray 2.60 itself: the process titles the probe reads, while a replica loads and after."""
    app_name = f"probe{os.getpid()}"  # a title no other Ray on this machine has
    title = replica_process_title(app_name, DEPLOYMENT_NAME)
    # A throwaway local Ray: no token file written to the home directory.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    ray = subprocess.Popen(
        [sys.executable, "-c", _SLOW_REPLICA, app_name, DEPLOYMENT_NAME],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        deployed = threading.Event()
        threading.Thread(target=lambda: ray.stdout.readline() and deployed.set(), daemon=True).start()
        seen_loading = False
        deadline = time.monotonic() + 120
        while not deployed.is_set() and ray.poll() is None and time.monotonic() < deadline:
            loading = f"{title}.initialize_and_get_metadata"
            if loading in running_titles():
                answer = probe(endpoints, "/proc", title)
                # Still loading once the probe has run (a title only goes from loading to
                # serving): the probe saw the replica loading throughout, so its answer counts.
                if loading in running_titles():
                    assert answer == 1
                    seen_loading = True
            time.sleep(1)
        assert deployed.wait(timeout=5), "the slow replica was never deployed"
        assert seen_loading
        assert probe(endpoints, "/proc", title) == 0
    finally:
        ray.communicate(input="", timeout=120)
