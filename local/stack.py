"""The local stack: a real Redis standing in for ElastiCache, a Ray head (`num-cpus 0`, GCS
fault tolerance on that Redis) and two Ray workers in their own network namespaces, the
serve config the RayService chart uses (CPU engine, tiny model), an API port on loopback
that forwards to the workers' proxies (as the serve Service does, head excluded), and the
Gradio UI.

Everything started is recorded in a state file with its PID, so `down` (and the drill's
faults) act on exactly those processes.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from charts.serve_config import APP_NAME, LlmServing, serve_config
from local import netns, processes
from local.topology import (
    API_PORT,
    BRIDGE_IP,
    DASHBOARD_URL,
    GCS_ADDRESS,
    GCS_PORT,
    GRADIO_PORT,
    GRADIO_URL,
    HEAD,
    REDIS_ADDRESS,
    REDIS_PORT,
    STATE_DIR,
    WORKERS,
    RayNode,
)

ROOT = Path(__file__).resolve().parent.parent
SERVE_APP_DIR = ROOT / "images" / "ray-serve"
GRADIO_APP_DIR = ROOT / "images" / "gradio"
BIN = Path(sys.executable).parent
STATE_FILE = STATE_DIR / "state.json"
MODEL_NAME = "tiny-mistral"
WORKER_CPUS = 2

# What KubeRay sets on every Ray container of a RayService (field notes): fail fast on a
# dead GCS instead of hanging, so requests keep flowing through the workers.
RAY_POD_ENV = {
    "RAY_timeout_ms_task_wait_for_death_info": "0",
    "RAY_gcs_server_request_timeout_seconds": "5",
    "RAY_SERVE_KV_TIMEOUT_S": "5",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Token authentication is the cluster's (KubeRay authOptions); the namespaces here are
    # reachable from this machine only.
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": str(SERVE_APP_DIR),
    # Job entrypoints (`python …`) run with the project's Python, as in the image.
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
}
# KubeRay's worker setting: workers wait this long for a restarted head (and so survive an
# outage shorter than it).
WORKER_RECONNECT_TIMEOUT_S = "600"
# KubeRay's HA e2e test sets the head's own GCS reconnect timeout to 20 s.
HEAD_RECONNECT_TIMEOUT_S = "20"


class StackError(RuntimeError):
    """The local stack cannot do what was asked; the message says why and what to do."""


@dataclass
class StackState:
    fault_tolerance: bool
    redis_password: str = ""
    redis_pid: int | None = None
    head_pid: int | None = None
    head_generation: int = 0
    worker_pids: dict[str, int] = field(default_factory=dict)
    forwarder_pid: int | None = None
    gradio_pid: int | None = None
    # Identical across head restarts, as KubeRay uses the RayCluster's UID.
    storage_namespace: str = field(default_factory=lambda: f"local-{secrets.token_hex(4)}")

    def pids(self) -> list[int]:
        found = [self.redis_pid, self.head_pid, self.forwarder_pid, self.gradio_pid, *self.worker_pids.values()]
        return [p for p in found if p]

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(json.dumps(asdict(self), indent=2))
        STATE_FILE.chmod(0o600)

    @staticmethod
    def load() -> "StackState | None":
        if not STATE_FILE.exists():
            return None
        return StackState(**json.loads(STATE_FILE.read_text()))


Progress = Callable[[str], None]


def check_platform() -> None:
    if platform.system() != "Linux":
        raise StackError(
            "The local stack runs on Linux only: it gives each Ray node its own network "
            "namespace. Elsewhere, run the same topology on kind: "
            "`python -m charts --profile kind --out k8s/` then `kubectl apply -f k8s/`."
        )
    if os.geteuid() != 0:
        raise StackError(
            "The local stack needs root: it creates network namespaces and a bridge "
            "(CAP_NET_ADMIN). Run `sudo make demo`, or use the kind manifests: "
            "`python -m charts --profile kind --out k8s/` then `kubectl apply -f k8s/`."
        )
    for tool in ("ip", "redis-server"):
        if not shutil.which(tool):
            raise StackError(
                f"`{tool}` is missing: install iproute2 and redis-server (`sudo make system-packages`)."
            )


def running_state() -> StackState | None:
    """The state of a running stack, or None (a stale state file of a dead stack is ignored)."""
    state = StackState.load()
    if state and state.head_pid and any(processes.alive(p) for p in state.pids()):
        return state
    return None


class LocalStack:
    def __init__(self, state: StackState):
        self.state = state

    # ---- bring-up -------------------------------------------------------------------

    @staticmethod
    def up(*, fault_tolerance: bool = True, ui: bool = True, progress: Progress = print) -> "LocalStack":
        check_platform()
        if running_state():
            raise StackError(
                "The local stack is already running "
                f"(state in {STATE_FILE}); stop it first with `make demo-down`."
            )
        LocalStack.clean_leftovers()
        stack = LocalStack(StackState(fault_tolerance=fault_tolerance, redis_password=secrets.token_urlsafe(24)))
        steps: list[tuple[str, Callable[[], None]]] = [
            ("network namespaces and bridge", netns.create),
            ("tiny model", stack._build_model),
        ]
        if fault_tolerance:
            steps.append(("Redis (GCS fault tolerance store)", stack._start_redis))
        steps += [
            ("Ray head (num-cpus 0)", stack.start_head),
            ("Ray workers", stack._start_workers),
            ("Serve application (2 replicas)", stack._deploy),
            ("API on loopback", stack._start_forwarder),
        ]
        if ui:
            steps.append(("Gradio UI", stack._start_gradio))
        try:
            for index, (title, step) in enumerate(steps, 1):
                started = time.monotonic()
                progress(f"[{index}/{len(steps)}] {title} ...")
                step()
                stack.state.save()
                progress(f"[{index}/{len(steps)}] {title}: ready in {time.monotonic() - started:.1f} s")
        except BaseException:
            stack.down()
            raise
        return stack

    def _build_model(self) -> None:
        if (self.model_dir / "config.json").exists():
            return
        result = _run_python(["-m", "ray_serve_llm.tiny_model", str(self.model_dir)], cwd=SERVE_APP_DIR)
        if result.returncode != 0:
            raise StackError(f"building the tiny model failed:\n{result.stdout}{result.stderr}")

    def _start_redis(self) -> None:
        data = STATE_DIR / "redis"
        data.mkdir(parents=True, exist_ok=True)
        config = data / "redis.conf"
        # The password goes in a 0600 config file, not on the command line (ps would show it).
        # AOF keeps the GCS data across a Redis restart, as ElastiCache keeps it across a failover.
        config.write_text(
            f"bind {BRIDGE_IP}\nport {REDIS_PORT}\nrequirepass {self.state.redis_password}\n"
            f"dir {data}\nappendonly yes\nappendfsync everysec\nsave \"\"\nprotected-mode yes\n"
        )
        config.chmod(0o600)
        self.state.redis_pid = processes.spawn(["redis-server", str(config)], log=STATE_DIR / "logs" / "redis.log")
        _wait_for_port(BRIDGE_IP, REDIS_PORT, timeout=15, what="Redis")

    def start_head(self) -> None:
        """Starts (or restarts) the head with a fresh temp dir, as a new pod would have."""
        self.state.head_generation += 1
        generation = self.state.head_generation
        env = {
            **RAY_POD_ENV,
            **_node_network_env(HEAD),
            "RAY_gcs_rpc_server_reconnect_timeout_s": HEAD_RECONNECT_TIMEOUT_S,
        }
        command = [
            str(BIN / "ray"), "start", "--head", "--block",
            "--node-ip-address", HEAD.ip, "--port", str(GCS_PORT),
            # No replicas on the head: it can crash without taking one down.
            "--num-cpus", "0",
            "--include-dashboard", "true", "--dashboard-host", "0.0.0.0",
            "--temp-dir", str(self.temp_dir(HEAD, generation)),
            "--disable-usage-stats",
        ]
        if self.state.fault_tolerance:
            env["RAY_REDIS_ADDRESS"] = REDIS_ADDRESS
            env["RAY_external_storage_namespace"] = self.state.storage_namespace
            command += ["--redis-password", self.state.redis_password]
        self.state.head_pid = processes.spawn(
            command, env=env, namespace=HEAD.namespace, log=STATE_DIR / "logs" / f"head-{generation}.log"
        )
        self.state.save()
        _wait_for_http(f"{DASHBOARD_URL}/api/version", timeout=90, what="the Ray head's dashboard")

    def _start_workers(self) -> None:
        env = {**RAY_POD_ENV, "RAY_gcs_rpc_server_reconnect_timeout_s": WORKER_RECONNECT_TIMEOUT_S}
        for worker in WORKERS:
            node_env = {**env, **_node_network_env(worker)}
            self.state.worker_pids[worker.name] = processes.spawn(
                [
                    str(BIN / "ray"), "start", "--block",
                    "--address", GCS_ADDRESS, "--node-ip-address", worker.ip,
                    "--num-cpus", str(WORKER_CPUS),
                    "--temp-dir", str(self.temp_dir(worker, 1)),
                    "--disable-usage-stats",
                ],
                env=node_env,
                namespace=worker.namespace,
                log=STATE_DIR / "logs" / f"{worker.name}.log",
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.alive_worker_count() == len(WORKERS):
                return
            time.sleep(0.5)
        raise StackError(f"the Ray workers did not join the head within 60 s; see {STATE_DIR / 'logs'}")

    def _deploy(self) -> None:
        body = json.dumps(serve_config(self.serving)).encode()
        request = urllib.request.Request(
            f"{DASHBOARD_URL}/api/serve/applications/", data=body, method="PUT",
            headers={"Content-Type": "application/json"},
        )
        _retry(lambda: urllib.request.urlopen(request, timeout=30).read(), timeout=60, what="serve deploy")
        self.wait_serve_healthy(timeout=180)

    def _start_forwarder(self) -> None:
        backends = [f"{w.ip}:{8000}" for w in WORKERS]
        self.state.forwarder_pid = processes.spawn(
            [sys.executable, "-m", "local.forwarder", "--listen", f"127.0.0.1:{API_PORT}",
             *(arg for b in backends for arg in ("--backend", b))],
            env={"PYTHONPATH": str(ROOT)},
            log=STATE_DIR / "logs" / "forwarder.log",
        )
        _wait_for_port("127.0.0.1", API_PORT, timeout=15, what="the API forwarder")

    def _start_gradio(self) -> None:
        self.state.gradio_pid = processes.spawn(
            [sys.executable, "-m", "chat_ui"],
            env={
                "PYTHONPATH": str(GRADIO_APP_DIR),
                "OPENAI_BASE_URL": f"http://127.0.0.1:{API_PORT}/v1",
                "MODEL_NAME": MODEL_NAME,
                "GRADIO_SERVER_NAME": "127.0.0.1",
                "GRADIO_SERVER_PORT": str(GRADIO_PORT),
                "GRADIO_ANALYTICS_ENABLED": "False",
            },
            log=STATE_DIR / "logs" / "gradio.log",
        )
        _wait_for_http(GRADIO_URL, timeout=60, what="the Gradio UI")

    # ---- what the drill uses ----------------------------------------------------------

    @property
    def model_dir(self) -> Path:
        return STATE_DIR / "model"

    @property
    def serving(self) -> LlmServing:
        return LlmServing(
            model_id=str(self.model_dir), served_model_name=MODEL_NAME, engine="transformers",
            max_tokens=64, cpus_per_replica=1,
        )

    @staticmethod
    def temp_dir(node: RayNode, generation: int) -> Path:
        return STATE_DIR / "ray" / f"{node.name}-{generation}"

    def alive_worker_count(self) -> int:
        try:
            with urllib.request.urlopen(f"{DASHBOARD_URL}/nodes?view=summary", timeout=5) as response:
                summary = json.load(response)["data"]["summary"]
        except (OSError, ValueError, KeyError):
            return 0
        return sum(
            1 for node in summary
            if node.get("raylet", {}).get("state") == "ALIVE" and not node.get("raylet", {}).get("isHeadNode")
        )

    def serve_status(self) -> dict | None:
        """The Serve application's status from the head's dashboard, None while unreachable."""
        try:
            with urllib.request.urlopen(f"{DASHBOARD_URL}/api/serve/applications/", timeout=3) as response:
                return json.load(response)["applications"].get(APP_NAME)
        except (OSError, ValueError, KeyError):
            return None

    def serve_healthy(self) -> bool:
        status = self.serve_status()
        if not status or status.get("status") != "RUNNING":
            return False
        return all(d.get("status") == "HEALTHY" for d in status.get("deployments", {}).values())

    def wait_serve_healthy(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.serve_healthy():
                return time.monotonic() - started
            status = self.serve_status() or {}
            if status.get("status") == "DEPLOY_FAILED":
                raise StackError(f"the Serve application failed to deploy: {status.get('message', '')[-2000:]}")
            time.sleep(0.5)
        raise StackError(f"Serve did not become healthy within {timeout:.0f} s; see {STATE_DIR / 'logs'}")

    def kill_head(self) -> None:
        """SIGKILL every process of the head (a crashed head pod)."""
        processes.kill_namespace(HEAD.namespace)
        self.state.head_pid = None
        self.state.save()

    def terminate_head(self, grace: float) -> None:
        processes.terminate_namespace(HEAD.namespace, grace)
        self.state.head_pid = None
        self.state.save()

    def stop_redis(self) -> None:
        if not self.state.redis_pid:
            raise StackError("this stack runs without Redis (--no-ft): there is no Redis to stop")
        processes.terminate(self.state.redis_pid)
        self.state.redis_pid = None
        self.state.save()

    def start_redis(self) -> None:
        self._start_redis()
        self.state.save()

    # ---- teardown ---------------------------------------------------------------------

    def down(self) -> None:
        for pid in (self.state.gradio_pid, self.state.forwarder_pid):
            if pid:
                processes.terminate(pid)
        for node in (HEAD, *WORKERS):
            if node.namespace in netns.existing_namespaces():
                processes.terminate_namespace(node.namespace, grace=5)
        if self.state.redis_pid:
            processes.terminate(self.state.redis_pid)
        netns.destroy()
        STATE_FILE.unlink(missing_ok=True)

    @staticmethod
    def clean_leftovers() -> None:
        """Removes what a crashed earlier run left behind (namespaces, Ray temp dirs)."""
        state = StackState.load()
        if state:
            LocalStack(state).down()
        netns.destroy()
        shutil.rmtree(STATE_DIR / "ray", ignore_errors=True)


def _node_network_env(node: RayNode) -> dict[str, str]:
    # Every namespace resolves the machine's host name to 127.0.0.1; collective libraries
    # (Gloo for Ray Train's PyTorch workers) must advertise the node's own interface instead.
    return {"GLOO_SOCKET_IFNAME": node.interface}


def _run_python(args: list[str], cwd: Path):
    import subprocess

    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(cwd), "HF_HUB_OFFLINE": "1"},
    )


def _wait_for_port(host: str, port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise StackError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s; see {STATE_DIR / 'logs'}")


def _wait_for_http(url: str, timeout: float, what: str) -> None:
    _retry(lambda: urllib.request.urlopen(url, timeout=3).read(), timeout=timeout, what=what)


def _retry(call: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            call()
            return
        except (OSError, urllib.error.URLError) as error:
            last = error
            time.sleep(0.5)
    raise StackError(f"{what} did not answer within {timeout:.0f} s ({last}); see {STATE_DIR / 'logs'}")
