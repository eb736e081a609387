"""The local stack: a real Redis standing in for ElastiCache, a Ray head (`num-cpus 0`, GCS
fault tolerance on that Redis) and two Ray workers in their own network namespaces, kept
running by a supervisor as the kubelet keeps pods running, the serve config the RayService
chart uses (CPU engine, tiny model), an API port on loopback that forwards to the workers'
proxies (as the serve Service does, head excluded), and the Gradio UI.

Everything started is recorded in a state file with its PID, so `down` (and the drill's
faults) act on exactly those processes. The state directory is root's alone (0700): it holds
the Redis password, the Ray token, Redis's AOF and the Ray session directories.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from local import netns, processes
from local.supervisor import HOLD_DIR, NODE_DIR, NodeRecord, hold_path
from local.topology import (
    API_PORT,
    BRIDGE_IP,
    DASHBOARD_PORT,
    GRADIO_PORT,
    GRADIO_URL,
    HEAD,
    NODES,
    REDIS_PORT,
    SERVE_PORT,
    STATE_DIR,
    WORKERS,
    RayNode,
)
from ray_serve_ha.charts import ray_env
from ray_serve_ha.charts.serve_config import APP_NAME, LlmServing, serve_config, tiny_model_serving

ROOT = Path(__file__).resolve().parent.parent
SERVE_APP_DIR = ROOT / "images" / "ray-serve"
GRADIO_APP_DIR = ROOT / "images" / "gradio"
STATE_FILE = STATE_DIR / "state.json"
LOG_DIR = STATE_DIR / "logs"
# The dashboard as seen from inside the head's namespace (its port is closed to the rest).
HEAD_DASHBOARD = f"http://127.0.0.1:{DASHBOARD_PORT}"


class StackError(RuntimeError):
    """The local stack cannot do what was asked; the message says why and what to do."""


@dataclass
class StackState:
    fault_tolerance: bool
    redis_password: str = ""
    redis_pid: int | None = None
    supervisor_pid: int | None = None
    forwarder_pid: int | None = None
    gradio_pid: int | None = None
    # The foreground `up` process: `down` from another terminal ends it too.
    owner_pid: int | None = None
    # Identical across head restarts, as KubeRay uses the RayCluster's UID.
    storage_namespace: str = field(default_factory=lambda: f"local-{secrets.token_hex(4)}")

    @property
    def auth_token_path(self) -> Path:
        return STATE_DIR / "ray-auth-token"

    def pids(self) -> list[int]:
        found = [self.redis_pid, self.supervisor_pid, self.forwarder_pid, self.gradio_pid]
        for node in NODES:
            record = NodeRecord.load(node.name)
            if record and record.pid:
                found.append(record.pid)
        return [p for p in found if p]

    def save(self) -> None:
        _private_state_dir()
        temporary = STATE_FILE.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2))
        temporary.chmod(0o600)
        os.replace(temporary, STATE_FILE)

    @staticmethod
    def load() -> StackState | None:
        try:
            return StackState(**json.loads(STATE_FILE.read_text()))
        except (OSError, ValueError, TypeError):
            return None


Progress = Callable[[str], None]


def _private_state_dir() -> None:
    """The state directory, root's alone (it may exist from an earlier run, or be a
    world-writable /tmp path someone else created: then it is refused)."""
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = STATE_DIR.stat()
    if info.st_uid != os.geteuid():
        raise StackError(f"{STATE_DIR} belongs to another user (uid {info.st_uid}): "
                         "remove it or set RAY_SERVE_HA_LOCAL_DIR")
    STATE_DIR.chmod(0o700)


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
            "(CAP_NET_ADMIN). As root run `make demo` (or `sudo make demo`), or use the kind "
            "manifests: `python -m charts --profile kind --out k8s/` then `kubectl apply -f k8s/`."
        )
    for tool, package in (("ip", "iproute2"), ("redis-server", "redis-server"), ("nft", "nftables")):
        if not shutil.which(tool):
            raise StackError(f"`{tool}` is missing: install {package} (`make system-packages` does, as root).")


def running_state() -> StackState | None:
    """The state of a running stack, or None (a stale state file of a dead stack is ignored)."""
    state = StackState.load()
    if state and any(processes.alive(p) for p in state.pids()):
        return state
    return None


class LocalStack:
    def __init__(self, state: StackState):
        self.state = state

    # ---- bring-up -------------------------------------------------------------------

    @staticmethod
    def up(*, fault_tolerance: bool = True, ui: bool = True, progress: Progress = print,
           owner_pid: int | None = None) -> LocalStack:
        check_platform()
        if running_state():
            raise StackError(
                "The local stack is already running "
                f"(state in {STATE_FILE}); stop it first with `make demo-down`."
            )
        LocalStack.clean_leftovers()
        stack = LocalStack(StackState(
            fault_tolerance=fault_tolerance, redis_password=secrets.token_urlsafe(24), owner_pid=owner_pid,
        ))
        steps: list[tuple[str, Callable[[], None]]] = [
            ("state directory, Ray token, network namespaces and bridge", stack._create_network),
            ("tiny model", stack._build_model),
        ]
        if fault_tolerance:
            steps.append(("Redis (GCS fault tolerance store)", stack._start_redis))
        steps += [
            ("Ray head (num-cpus 0) and workers, supervised", stack._start_nodes),
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

    def _create_network(self) -> None:
        _private_state_dir()
        for folder in (NODE_DIR, HOLD_DIR, LOG_DIR):
            folder.mkdir(mode=0o700, exist_ok=True)
        token = self.state.auth_token_path
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.state.save()
        netns.create()

    def _build_model(self) -> None:
        if (self.model_dir / "config.json").exists():
            return
        result = _run_python(["-m", "ray_serve_llm.tiny_model", str(self.model_dir)], cwd=SERVE_APP_DIR)
        if result.returncode != 0:
            raise StackError(f"building the tiny model failed:\n{result.stdout}{result.stderr}")

    def _start_redis(self) -> None:
        data = STATE_DIR / "redis"
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = data / "redis.conf"
        # The password goes in a 0600 config file, not on the command line (ps would show it).
        # AOF keeps the GCS data across a Redis restart, as ElastiCache keeps it across a failover.
        config.write_text(
            f"bind {BRIDGE_IP}\nport {REDIS_PORT}\nrequirepass {self.state.redis_password}\n"
            f"dir {data}\nappendonly yes\nappendfsync everysec\nsave \"\"\nprotected-mode yes\n"
        )
        config.chmod(0o600)
        self.state.redis_pid = processes.spawn(["redis-server", str(config)], log=LOG_DIR / "redis.log")
        self.state.save()
        _wait_for_port(BRIDGE_IP, REDIS_PORT, timeout=15, what="Redis")

    def _start_nodes(self) -> None:
        self.state.supervisor_pid = processes.spawn(
            [sys.executable, "-m", "local.supervisor"], env={"PYTHONPATH": str(ROOT)}, log=LOG_DIR / "supervisor.log",
        )
        self.state.save()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if not processes.alive(self.state.supervisor_pid):
                raise StackError(f"the supervisor exited; see {LOG_DIR / 'supervisor.log'}")
            if self.alive_worker_count() == len(WORKERS):
                return
            time.sleep(0.5)
        raise StackError(f"the Ray head and workers were not up within 180 s; see {LOG_DIR}")

    def _deploy(self) -> None:
        self.dashboard("PUT", "/api/serve/applications/", serve_config(self.serving), retry_s=60)
        self.wait_serve_healthy(timeout=180)

    def _start_forwarder(self) -> None:
        backends = [f"{w.ip}:{SERVE_PORT}" for w in WORKERS]
        self.state.forwarder_pid = processes.spawn(
            [sys.executable, "-m", "local.forwarder", "--listen", f"127.0.0.1:{API_PORT}",
             *(arg for b in backends for arg in ("--backend", b))],
            env={"PYTHONPATH": str(ROOT)},
            log=LOG_DIR / "forwarder.log",
        )
        _wait_for_port("127.0.0.1", API_PORT, timeout=15, what="the API forwarder")

    def _start_gradio(self) -> None:
        self.state.gradio_pid = processes.spawn(
            [sys.executable, "-m", "chat_ui"],
            env={
                "PYTHONPATH": str(GRADIO_APP_DIR),
                "OPENAI_BASE_URL": f"http://127.0.0.1:{API_PORT}/v1",
                "MODEL_NAME": self.serving.served_model_name or self.serving.model_id,
                "GRADIO_SERVER_NAME": "127.0.0.1",
                "GRADIO_SERVER_PORT": str(GRADIO_PORT),
                "GRADIO_ANALYTICS_ENABLED": "False",
            },
            log=LOG_DIR / "gradio.log",
        )
        _wait_for_http(GRADIO_URL, timeout=90, what="the Gradio UI")

    # ---- talking to the cluster (from inside the head's namespace, with the token) -------

    @property
    def model_dir(self) -> Path:
        return STATE_DIR / "model"

    @property
    def serving(self) -> LlmServing:
        return tiny_model_serving(str(self.model_dir))

    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.state.auth_token_path.read_text().strip()}"}

    def dashboard(self, method: str, path: str, body: Any = None, *, timeout: float = 5, retry_s: float = 0) -> Any:
        """A call to the head's dashboard API, made from inside the head's namespace (its
        ports are closed to the main namespace) with the cluster's token."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{HEAD_DASHBOARD}{path}", data=data, method=method,
            headers={"Content-Type": "application/json", **self.auth_header()},
        )

        def call() -> Any:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
            return json.loads(raw) if raw.strip() else None

        deadline = time.monotonic() + retry_s
        while True:
            try:
                return netns.run_in(HEAD.namespace, call, timeout=timeout + 5)
            except (OSError, ValueError, TimeoutError) as error:
                if time.monotonic() >= deadline:
                    raise StackError(f"the Ray dashboard did not answer {method} {path}: {error}") from None
                time.sleep(0.5)

    def in_head(self, call: Callable[[], Any], timeout: float = 60) -> Any:
        """Runs `call` inside the head's namespace (e.g. a Ray job submission client)."""
        return netns.run_in(HEAD.namespace, call, timeout=timeout)

    def alive_worker_count(self) -> int:
        try:
            summary = self.dashboard("GET", "/nodes?view=summary")["data"]["summary"]
        except (StackError, KeyError, TypeError):
            return 0
        return sum(
            1 for node in summary
            if node.get("raylet", {}).get("state") == "ALIVE" and not node.get("raylet", {}).get("isHeadNode")
        )

    def gcs_reachable(self) -> bool:
        def call() -> bool:
            url = f"{HEAD_DASHBOARD}{ray_env.GCS_HEALTH_PATH}"
            with urllib.request.urlopen(url, timeout=3) as response:
                return b"success" in response.read()

        try:
            return bool(netns.run_in(HEAD.namespace, call, timeout=8))
        except (OSError, TimeoutError):
            return False

    def serve_status(self) -> dict[str, Any] | None:
        """The Serve application's status from the head's dashboard, None while unreachable."""
        try:
            status: dict[str, Any] | None = self.dashboard(
                "GET", "/api/serve/applications/", timeout=3)["applications"].get(APP_NAME)
            return status
        except (StackError, KeyError, TypeError, AttributeError):
            return None

    def serve_healthy(self) -> bool:
        return serve_status_healthy(self.serve_status())

    def wait_serve_healthy(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            status = self.serve_status()
            if serve_status_healthy(status):
                return time.monotonic() - started
            if status is not None and status.get("status") == "DEPLOY_FAILED":
                raise StackError(f"the Serve application failed to deploy: {status.get('message', '')[-2000:]}")
            time.sleep(0.5)
        raise StackError(f"Serve did not become healthy within {timeout:.0f} s; see {LOG_DIR}")

    # ---- what the drill uses: the supervisor's records, holds, faults ----------------------

    @staticmethod
    def node_record(node: RayNode) -> NodeRecord | None:
        return NodeRecord.load(node.name)

    @staticmethod
    def hold(node: RayNode) -> None:
        """Keeps the supervisor from restarting `node` until `release` (a drill's outage)."""
        HOLD_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        hold_path(node).write_text(str(os.getpid()))

    @staticmethod
    def release(node: RayNode) -> None:
        hold_path(node).unlink(missing_ok=True)

    def kill_node(self, node: RayNode) -> None:
        """SIGKILL every process of the node (a crashed pod); it stays down while held."""
        self.hold(node)
        processes.kill_namespace(node.namespace)

    def terminate_node(self, node: RayNode, grace: float) -> None:
        """SIGTERM, SIGKILL after `grace` (a deleted pod); it stays down while held."""
        self.hold(node)
        processes.terminate_namespace(node.namespace, grace)

    def wait_restarted(self, node: RayNode, after_generation: int, timeout: float = 30) -> NodeRecord:
        """Waits until the supervisor has started `node` again; returns its record."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.node_record(node)
            if record and record.generation > after_generation and record.started_at is not None:
                return record
            time.sleep(0.1)
        raise StackError(f"the supervisor did not restart {node.name} within {timeout:.0f} s; see {LOG_DIR}")

    def stop_redis(self) -> None:
        if not self.state.redis_pid:
            raise StackError("this stack runs without Redis (--no-ft): there is no Redis to stop")
        processes.terminate(self.state.redis_pid)
        self.state.redis_pid = None
        self.state.save()

    def start_redis(self) -> None:
        self._start_redis()

    @staticmethod
    def partition(node: RayNode) -> None:
        """Cuts the node off the bridge (its link down on the bridge side): its processes
        run on, nothing reaches them and they reach nothing."""
        netns.set_link(node, up=False)

    @staticmethod
    def heal(node: RayNode) -> None:
        netns.set_link(node, up=True)

    # ---- teardown ---------------------------------------------------------------------

    def down(self) -> None:
        owner = self.state.owner_pid
        if owner and owner != os.getpid() and processes.alive(owner):
            # A foreground `up` (make demo) owns the stack: it stops everything and exits.
            os.kill(owner, signal.SIGTERM)
            if processes.wait_gone([owner], 90):
                return
        for pid in (self.state.gradio_pid, self.state.forwarder_pid, self.state.supervisor_pid):
            if pid:
                processes.terminate(pid, grace=30)
        for node in NODES:
            if node.namespace in netns.existing_namespaces():
                processes.terminate_namespace(node.namespace, grace=5)
        if self.state.redis_pid:
            processes.terminate(self.state.redis_pid)
        netns.destroy()
        STATE_FILE.unlink(missing_ok=True)
        for folder in (HOLD_DIR, NODE_DIR):
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def clean_leftovers() -> None:
        """Removes what a crashed earlier run left behind (namespaces, Ray temp dirs)."""
        state = StackState.load()
        if state:
            LocalStack(state).down()
        netns.destroy()
        for folder in (STATE_DIR / "ray", HOLD_DIR, NODE_DIR):
            shutil.rmtree(folder, ignore_errors=True)


def serve_status_healthy(status: dict[str, Any] | None) -> bool:
    """RUNNING, every deployment HEALTHY with as many RUNNING replicas as it targets (a
    lost replica not yet replaced is not healthy, whatever the status word says)."""
    if not status or status.get("status") != "RUNNING":
        return False
    deployments = list(status.get("deployments", {}).values())

    def full(deployment: dict[str, Any]) -> bool:
        running = sum(1 for r in deployment.get("replicas", []) if r.get("state") == "RUNNING")
        return deployment.get("status") == "HEALTHY" and running >= deployment.get("target_num_replicas", 1)

    return bool(deployments) and all(full(d) for d in deployments)


def _run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
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
    raise StackError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s; see {LOG_DIR}")


def _wait_for_http(url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=3).read()
            return
        except (OSError, urllib.error.URLError) as error:
            last = error
            time.sleep(0.5)
    raise StackError(f"{what} did not answer within {timeout:.0f} s ({last}); see {LOG_DIR}")
