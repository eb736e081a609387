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

import contextlib
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
from typing import Any

from local import cgroups, netns, processes, prometheus
from local.redis_client import ping
from local.state import (
    HOLD_DIR,
    LOG_DIR,
    NODE_DIR,
    REDIS_CONFIG,
    REDIS_DIR,
    REDIS_UNIT,
    SERVE_CONFIG_FILE,
    STATE_FILE,
    WATCHDOG_UNIT,
    NodeRecord,
    StackState,
    StateDirError,
    hold,
    private_state_dir,
    release,
    unit_names,
)
from local.topology import (
    API_PORT,
    BRIDGE_IP,
    DASHBOARD_PORT,
    GRADIO_PORT,
    GRADIO_URL,
    HEAD,
    NODES,
    PROMETHEUS_URL,
    REDIS_PORT,
    SERVE_PORT,
    STATE_DIR,
    WORKERS,
    RayNode,
)
from ray_serve_ha.charts import ray_env, worker_readiness
from ray_serve_ha.charts.constants import SERVE_PROXY_HEALTH_PATH
from ray_serve_ha.charts.serve_config import APP_NAME, LlmServing, serve_config, tiny_model_serving

ROOT = Path(__file__).resolve().parent.parent
SERVE_APP_DIR = ROOT / "images" / "ray-serve"
GRADIO_APP_DIR = ROOT / "images" / "gradio"
# The dashboard as seen from inside the head's namespace (its port is closed to the rest).
HEAD_DASHBOARD = f"http://127.0.0.1:{DASHBOARD_PORT}"


class StackError(RuntimeError):
    """The local stack cannot do what was asked; the message says why and what to do."""


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


class LocalStack:
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

    @staticmethod
    def proxy_health(node: RayNode) -> tuple[bool, str]:
        """A worker's Serve proxy as the serve Service's readiness probe and a load balancer's
        health check see it: its health route answers 200. Serve can count a restarted
        worker's replica RUNNING before the proxy on that node listens (or while Serve restarts
        a proxy it found unhealthy); no request reaches that node until it answers."""
        url = f"{node.proxy_url}{SERVE_PROXY_HEALTH_PATH}"
        try:
            with urllib.request.urlopen(url, timeout=worker_readiness.HTTP_TIMEOUT_SECONDS) as response:
                return response.status == 200, f"{SERVE_PROXY_HEALTH_PATH} {response.status}"
        except urllib.error.HTTPError as error:
            return False, f"{SERVE_PROXY_HEALTH_PATH} {error.code}"
        except OSError as error:
            return False, f"{SERVE_PROXY_HEALTH_PATH} no answer ({getattr(error, 'reason', error)})"

    def proxies_down(self) -> list[str]:
        """The workers whose Serve proxy does not answer its health route."""
        return [worker.name for worker in WORKERS if not self.proxy_health(worker)[0]]

    def serve_healthy(self) -> bool:
        """The application healthy with every replica it targets, and every worker's proxy
        answering (what makes each worker a ready endpoint of the serve Service)."""
        return serve_status_healthy(self.serve_status()) and not self.proxies_down()

    def wait_serve_healthy(self, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            status = self.serve_status()
            if serve_status_healthy(status) and not self.proxies_down():
                return time.monotonic() - started
            if status is not None and status.get("status") == "DEPLOY_FAILED":
                raise StackError(f"the Serve application failed to deploy: {status.get('message', '')[-2000:]}")
            time.sleep(0.5)
        down = self.proxies_down()
        why = f" (the Serve proxy of {', '.join(down)} does not answer)" if down else ""
        raise StackError(f"Serve did not become healthy within {timeout:.0f} s{why}; see {LOG_DIR}")

    # ---- what the drill uses: the supervisor's records, holds, faults ----------------------

    @staticmethod
    def node_record(node: RayNode) -> NodeRecord | None:
        return NodeRecord.load(node.name)

    @staticmethod
    def record(unit: str) -> NodeRecord | None:
        """The supervisor's record of a unit: a node's name, "redis" or "serve-watchdog"."""
        return NodeRecord.load(unit)

    @staticmethod
    def hold(unit: str) -> None:
        """Keeps the supervisor from restarting `unit` until `release` (a drill's outage)."""
        hold(unit)

    @staticmethod
    def release(unit: str) -> None:
        release(unit)

    def kill_node(self, node: RayNode) -> None:
        """SIGKILL every process of the node (a crashed pod); it stays down while held."""
        self.hold(node.name)
        processes.kill_namespace(node.namespace)

    def terminate_node(self, node: RayNode, grace: float) -> None:
        """SIGTERM every process, SIGKILL after `grace`; it stays down while held."""
        self.hold(node.name)
        processes.terminate_namespace(node.namespace, grace)

    def drain_node(self, node: RayNode, grace: float) -> float:
        """A deleted pod with a grace period, as node expiry, consolidation and a spot
        interruption delete one: SIGTERM to the pod's main process only (`ray start --block`,
        which marks its node draining in the GCS and waits for it to drain), SIGKILL of
        whatever is left after `grace`. The node stays down while held (no endpoint of the
        API port meanwhile, as a terminating pod leaves the Service's endpoints). Returns how
        long the node took to exit."""
        record = self.node_record(node)
        if record is None or not record.pid or not processes.alive(record.pid):
            raise StackError(f"{node.name} is not running: nothing to drain")
        self.hold(node.name)
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
        processes.wait_gone([record.pid], grace)
        took = time.monotonic() - started
        processes.kill_namespace(node.namespace)
        return took

    def wait_restarted(self, node: RayNode | str, after_generation: int, timeout: float = 30) -> NodeRecord:
        """Waits until the supervisor has started the unit again; returns its record."""
        name = node if isinstance(node, str) else node.name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.record(name)
            if record and record.generation > after_generation and record.started_at is not None:
                return record
            time.sleep(0.1)
        raise StackError(f"the supervisor did not restart {name} within {timeout:.0f} s; see {LOG_DIR}")

    def _redis_pid(self) -> int:
        if not self.state.fault_tolerance:
            raise StackError("this stack runs without Redis (--no-ft): there is no Redis to fault")
        record = self.record(REDIS_UNIT)
        if record is None or not record.pid or not processes.alive(record.pid):
            raise StackError(f"Redis is not running (supervisor record: {record.state if record else 'none'})")
        return record.pid

    def stop_redis(self) -> None:
        """Stops Redis cleanly and keeps it down (held) until `release("redis")`."""
        pid = self._redis_pid()
        self.hold(REDIS_UNIT)
        processes.terminate(pid, grace=10)

    def kill_redis(self) -> None:
        """SIGKILL (a crash): nothing holds it, the supervisor restarts it from its AOF."""
        pid = self._redis_pid()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def freeze_redis(self) -> int:
        """SIGSTOP: Redis keeps its port and connections and answers nothing. Returns the PID
        to `thaw` (the supervisor may have replaced a frozen Redis by then)."""
        pid = self._redis_pid()
        os.kill(pid, signal.SIGSTOP)
        return pid

    @staticmethod
    def thaw(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    @staticmethod
    def ray_processes(node: RayNode, title: str) -> list[int]:
        """PIDs in the node's namespace whose process title (Ray sets it per actor) starts
        with `title`."""
        found = []
        for pid in processes.namespace_pids(node.namespace):
            try:
                name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if name.startswith(title):
                found.append(pid)
        return found

    def kill_ray_process(self, node: RayNode, title: str) -> int:
        """SIGKILL one Ray actor's worker process (Serve's controller, a replica)."""
        pids = self.ray_processes(node, title)
        if not pids:
            raise StackError(f"no process titled {title!r} in {node.name}")
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def pause_watchdog(self) -> None:
        """Stops the Serve watchdog and keeps it stopped until `resume_watchdog`."""
        self.hold(WATCHDOG_UNIT)
        record = self.record(WATCHDOG_UNIT)
        if record and record.pid:
            processes.terminate(record.pid, grace=5)

    def resume_watchdog(self) -> None:
        self.release(WATCHDOG_UNIT)

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
