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
from pathlib import Path

from local import cgroups, netns, processes, prometheus
from local.api_keys import API_KEYS_FILE, CHAT_UI, ensure_keys
from local.cluster_view import ClusterView
from local.fault_actions import FaultActions
from local.redis_client import ping
from local.state import (
    HOLD_DIR,
    LOG_DIR,
    NODE_DIR,
    REDIS_CONFIG,
    REDIS_DIR,
    SERVE_CONFIG_FILE,
    STATE_FILE,
    NodeRecord,
    StackError,
    StackState,
    StateDirError,
    private_state_dir,
    unit_names,
)
from local.topology import (
    API_PORT,
    BRIDGE_IP,
    GRADIO_PORT,
    GRADIO_URL,
    NODES,
    PROMETHEUS_URL,
    REDIS_PORT,
    SERVE_PORT,
    STATE_DIR,
    WORKERS,
)
from ray_serve_ha.charts.serve_config import serve_config

ROOT = Path(__file__).resolve().parent.parent
SERVE_APP_DIR = ROOT / "images" / "ray-serve"
GRADIO_APP_DIR = ROOT / "images" / "gradio"
# The dashboard as seen from inside the head's namespace (its port is closed to the rest).


Progress = Callable[[str], None]


def _private_state_dir() -> None:
    try:
        private_state_dir()
    except StateDirError as error:
        raise StackError(str(error)) from None


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


class LocalStack(ClusterView, FaultActions):
    def __init__(self, state: StackState):
        self.state = state

    # ---- bring-up -------------------------------------------------------------------

    @staticmethod
    def up(*, fault_tolerance: bool = True, ui: bool = True, progress: Progress = print,
           owner_pid: int | None = None, cpu_weights: bool = True) -> LocalStack:
        check_platform()
        if running_state():
            raise StackError(
                "The local stack is already running "
                f"(state in {STATE_FILE}); stop it first with `make demo-down`."
            )
        LocalStack.clean_leftovers()
        stack = LocalStack(StackState(
            fault_tolerance=fault_tolerance, redis_password=secrets.token_urlsafe(24), owner_pid=owner_pid,
            cpu_weights=cpu_weights,
        ))
        steps: list[tuple[str, Callable[[], None]]] = [
            ("state directory, Ray token, network namespaces and bridge", stack._create_network),
            ("tiny model", stack._build_model),
        ]
        if fault_tolerance:
            steps.append(("Redis (GCS fault tolerance store), supervised as a managed service", stack._start_redis))
        steps += [
            ("Ray head (num-cpus 0) and workers, supervised", stack._start_nodes),
            ("Serve application (2 replicas)", stack._deploy),
            ("API on loopback", stack._start_forwarder),
            (f"Prometheus on {PROMETHEUS_URL}, scraping every Ray node", stack._start_prometheus),
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
        ensure_keys()  # the API keys (kept across runs), as External Secrets keeps the Secret
        self.state.save()
        netns.create()

    def _build_model(self) -> None:
        if (self.model_dir / "config.json").exists():
            return
        result = _run_python(["-m", "ray_serve_llm.tiny_model", str(self.model_dir)], cwd=SERVE_APP_DIR)
        if result.returncode != 0:
            raise StackError(f"building the tiny model failed:\n{result.stdout}{result.stderr}")

    def _start_supervisor(self) -> None:
        if self.state.supervisor_pid and processes.alive(self.state.supervisor_pid):
            return
        self.state.supervisor_pid = processes.spawn(
            [sys.executable, "-m", "local.supervisor"], env={"PYTHONPATH": str(ROOT)}, log=LOG_DIR / "supervisor.log",
        )
        self.state.save()

    def _start_redis(self) -> None:
        # A new stack gets a new, empty store (as a new ElastiCache group would): an earlier
        # stack's append-only file holds only other clusters' keys.
        shutil.rmtree(REDIS_DIR, ignore_errors=True)
        REDIS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The password goes in a 0600 config file, not on the command line (ps would show it).
        # AOF keeps the GCS data across a Redis restart, as ElastiCache keeps it across a failover.
        REDIS_CONFIG.write_text(
            f"bind {BRIDGE_IP}\nport {REDIS_PORT}\nrequirepass {self.state.redis_password}\n"
            f"dir {REDIS_DIR}\nappendonly yes\nappendfsync everysec\nsave \"\"\nprotected-mode yes\n"
        )
        REDIS_CONFIG.chmod(0o600)
        # The supervisor runs Redis (and restarts it from its AOF), then the Ray nodes.
        self._start_supervisor()
        deadline = time.monotonic() + 30
        while not ping(BRIDGE_IP, REDIS_PORT, self.state.redis_password, timeout_s=1)[0]:
            if not processes.alive(self.state.supervisor_pid or 0):
                raise StackError(f"the supervisor exited; see {LOG_DIR / 'supervisor.log'}")
            if time.monotonic() > deadline:
                raise StackError(f"Redis did not answer on {BRIDGE_IP}:{REDIS_PORT} within 30 s; see {LOG_DIR}")
            time.sleep(0.2)

    def _start_nodes(self) -> None:
        self._start_supervisor()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if not processes.alive(self.state.supervisor_pid or 0):
                raise StackError(f"the supervisor exited; see {LOG_DIR / 'supervisor.log'}")
            if self.alive_worker_count() == len(WORKERS):
                return
            time.sleep(0.5)
        raise StackError(f"the Ray head and workers were not up within 180 s; see {LOG_DIR}")

    def _deploy(self) -> None:
        config = serve_config(self.serving)
        # Kept as KubeRay keeps serveConfigV2: the watchdog submits it again after a remedy.
        SERVE_CONFIG_FILE.write_text(json.dumps(config))
        SERVE_CONFIG_FILE.chmod(0o600)
        self.dashboard("PUT", "/api/serve/applications/", config, retry_s=60)
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

    def _start_prometheus(self) -> None:
        try:
            self.state.prometheus_pid = prometheus.start()
        except prometheus.PrometheusError as error:
            raise StackError(str(error)) from None

    def _start_gradio(self) -> None:
        self.state.gradio_pid = processes.spawn(
            [sys.executable, "-m", "chat_ui"],
            env=chat_ui_env(self.serving.served_model_name or self.serving.model_id),
            log=LOG_DIR / "gradio.log",
        )
        _wait_for_http(GRADIO_URL, timeout=90, what="the Gradio UI")

    # ---- teardown ---------------------------------------------------------------------

    def down(self) -> None:
        owner = self.state.owner_pid
        if owner and owner != os.getpid() and processes.alive(owner):
            # A foreground `up` (make demo) owns the stack: it stops everything and exits.
            os.kill(owner, signal.SIGTERM)
            if processes.wait_gone([owner], 90):
                return
        # The supervisor stops the units it runs (Redis last); then whatever it left.
        for pid in (self.state.gradio_pid, self.state.prometheus_pid, self.state.forwarder_pid,
                    self.state.supervisor_pid):
            if pid:
                processes.terminate(pid, grace=60)
        for node in NODES:
            if node.namespace in netns.existing_namespaces():
                processes.terminate_namespace(node.namespace, grace=5)
        for name in unit_names():
            record = NodeRecord.load(name)
            if record and record.pid and processes.alive(record.pid):
                processes.terminate(record.pid, grace=10)
        netns.destroy()
        hierarchy, _ = cgroups.available()
        if hierarchy is not None:
            cgroups.remove(hierarchy, [node.name for node in NODES])
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


def chat_ui_env(model: str) -> dict[str, str]:
    """The chat UI's settings (images/gradio/chat_ui/settings.py) on the local stack."""
    return {
        "PYTHONPATH": str(GRADIO_APP_DIR),
        "OPENAI_BASE_URL": f"http://127.0.0.1:{API_PORT}/v1",
        "MODEL_NAME": model,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(GRADIO_PORT),
        "GRADIO_ANALYTICS_ENABLED": "False",
        # Its own entry of the keys file, read at each request: editing the file rotates the
        # UI's key too, with no restart (as the mounted Secret on EKS).
        "OPENAI_API_KEY_FILE": str(API_KEYS_FILE),
        "OPENAI_API_KEY_NAME": CHAT_UI,
    }


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
