"""`python -m local.supervisor`: keeps the local stack's Ray nodes running, as the kubelet
keeps a RayService's pods running.

Each node (the head, each worker) runs as `ray start --block` inside its network namespace,
a child of this process. The supervisor restarts a node, with a fresh temp dir as a new
pod would have, when its process exits (a crash, a failed start) or when its liveness
probe fails: the probe KubeRay puts on the pods (the raylet's health on every node, the
GCS's health on the head), asked from inside the node's namespace as the kubelet asks from
the node. A node that keeps failing is restarted after a growing back-off.

A node with a hold (a file `holds/<node>` that the drill writes while it keeps a node down
for an outage) is left down until the hold is gone, then started at once: the drill owns
its outage, the supervisor only takes over after it.

Each node's record (`nodes/<node>.json`: PID, generation, starts, state, last probe, why it
last restarted) is what `python -m local status` and the drill read. SIGTERM stops every
node and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from local import netns, processes
from local.topology import (
    DASHBOARD_PORT,
    GCS_ADDRESS,
    GCS_PORT,
    NODES,
    REDIS_ADDRESS,
    STATE_DIR,
    RayNode,
)
from ray_serve_ha.charts import ray_env

NODE_DIR = STATE_DIR / "nodes"
HOLD_DIR = STATE_DIR / "holds"
LOG_DIR = STATE_DIR / "logs"
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
SERVE_APP_DIR = ROOT / "images" / "ray-serve"
# CPUs each worker offers Ray: one replica (1 CPU) plus room for a batch job's tasks.
WORKER_CPUS = 2
# The kubelet's crash-loop back-off, shortened (kubelet: 10 s doubling to 5 min): the
# local nodes start in seconds, and a head restarted during a Redis outage should come
# back soon after Redis does.
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 8.0
# A node that stayed live this long has recovered: its next failure starts a new back-off.
STABLE_AFTER_S = 60.0
TICK_S = 0.25
HEAD_NICENESS = -10
AGENT_NICENESS = -20
AGENT_SCRIPTS = (b"dashboard/agent.py", b"runtime_env/agent/main.py", b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")
# The dashboard agent's HTTP port, fixed as KubeRay fixes it (the probes ask it). The other
# agent ports stay Ray's choice: the raylet waits up to 15 s (fixed in Ray 2.60) for each port
# file in turn, and each port left to Ray gives a slow-starting agent another window.
AGENT_PORTS = ("--dashboard-agent-listen-port", str(ray_env.DASHBOARD_AGENT_PORT))


def backoff_s(consecutive_failures: int) -> float:
    """Wait before restart number `consecutive_failures` (1-based) of a failing node."""
    if consecutive_failures <= 0:
        return 0.0
    return min(BACKOFF_INITIAL_S * 2.0 ** (consecutive_failures - 1), BACKOFF_MAX_S)


@dataclass
class NodeRecord:
    """What the supervisor knows of one node; written to nodes/<name>.json on each change."""

    name: str
    pid: int | None = None
    generation: int = 0  # how many times the node was started; names its temp dir
    started_at: float | None = None  # time.monotonic() of the last start (same clock machine-wide)
    live_since: float | None = None  # first passing probe of this generation
    state: str = "waiting"  # waiting | starting | live | held | backoff | stopped
    probe_ok: bool | None = None
    probe_detail: str = ""
    probe_failures: int = 0  # consecutive failed probes of this generation
    consecutive_failures: int = 0  # failed generations in a row (back-off)
    next_start_at: float = 0.0
    last_exit: str = ""  # why the previous generation ended
    restarts: list[dict[str, Any]] = field(default_factory=list)  # {"at", "generation", "why"}, newest last

    def save(self) -> None:
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        path = NODE_DIR / f"{self.name}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temporary, path)

    @staticmethod
    def load(name: str) -> NodeRecord | None:
        try:
            return NodeRecord(**json.loads((NODE_DIR / f"{name}.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def hold_path(node: RayNode) -> Path:
    return HOLD_DIR / node.name


def held(node: RayNode) -> bool:
    return hold_path(node).exists()


def temp_dir(node: RayNode, generation: int) -> Path:
    return STATE_DIR / "ray" / f"{node.name}-{generation}"


# ---- what each node runs ---------------------------------------------------------------


@dataclass(frozen=True)
class NodeSettings:
    """What the stack decided at `up`, read from its state file."""

    fault_tolerance: bool
    redis_password: str
    storage_namespace: str
    auth_token_path: str


def pod_env(node: RayNode, settings: NodeSettings) -> dict[str, str]:
    """The environment of one node: what KubeRay sets, what the chart sets (the same
    `charts.ray_env`), token authentication, and the local process's own needs."""
    env = {
        **ray_env.KUBERAY_SET_ENV,
        **(ray_env.head_env() if node.head else ray_env.worker_env()),
        # KubeRay's authOptions mode token: the same token on every node, from a file only
        # root can read (not the environment, which `ps e` shows its owner).
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": settings.auth_token_path,
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(SERVE_APP_DIR),
        # Job entrypoints (`python …`) run with the project's Python, as in the image.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # Every namespace resolves the machine's host name to 127.0.0.1; collective
        # libraries (Gloo for Ray Train's PyTorch workers) must use the node's interface.
        "GLOO_SOCKET_IFNAME": node.interface,
    }
    if node.head and settings.fault_tolerance:
        env["RAY_REDIS_ADDRESS"] = REDIS_ADDRESS
        # Identical across head restarts, as KubeRay uses the RayCluster's UID.
        env["RAY_external_storage_namespace"] = settings.storage_namespace
    return env


def node_command(node: RayNode, settings: NodeSettings, generation: int) -> list[str]:
    common = ["--block", "--node-ip-address", node.ip, "--temp-dir", str(temp_dir(node, generation)),
              "--disable-usage-stats", *AGENT_PORTS]
    if node.head:
        command = [
            # The head pod has its CPUs reserved (requests = limits); on this shared machine a
            # higher CPU priority stands in for that, or a restart under load can starve the
            # head's dashboard agent past the raylet's wait for it.
            "nice", "-n", str(HEAD_NICENESS),
            str(BIN / "ray"), "start", "--head", *common, "--port", str(GCS_PORT),
            # No replicas on the head: it can crash without taking one down.
            "--num-cpus", "0",
            "--include-dashboard", "true", "--dashboard-host", "0.0.0.0",
        ]
        if settings.fault_tolerance:
            # Ray 2.60 passes the Redis password to gcs_server only as a command-line flag
            # (KubeRay does the same from its REDIS_PASSWORD variable): see README.
            command += ["--redis-password", settings.redis_password]
        return command
    return [
        str(BIN / "ray"), "start", *common, "--address", GCS_ADDRESS, "--num-cpus", str(WORKER_CPUS),
    ]


# ---- liveness probes, from inside each namespace ---------------------------------------------


def probe_once(probe: ray_env.Probe) -> tuple[bool, str]:
    """One run of a KubeRay liveness probe (from inside the node's namespace)."""
    for port, path in probe.paths:
        url = f"http://127.0.0.1:{port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=probe.timeout_s) as response:
                body = response.read(4096).decode(errors="replace")
        except urllib.error.HTTPError as error:
            return False, f"{path}: HTTP {error.code}"
        except (OSError, ValueError) as error:
            return False, f"{path}: {type(error).__name__}"
        if "success" not in body:
            return False, f"{path}: {body[:80]!r}"
    return True, "success"


class Prober(threading.Thread):
    """Runs one node's liveness probe every period, from inside the node's namespace.
    `results` counts up with each probe; the supervisor reads the newest."""

    def __init__(self, node: RayNode, probe: ray_env.Probe):
        super().__init__(name=f"probe-{node.name}", daemon=True)
        self.node, self.probe = node, probe
        self.lock = threading.Lock()
        self.sequence = 0
        self.ok: bool | None = None
        self.detail = ""
        self.stop = threading.Event()

    def run(self) -> None:
        netns.enter(self.node.namespace)
        while not self.stop.wait(self.probe.period_s):
            ok, detail = probe_once(self.probe)
            with self.lock:
                self.sequence += 1
                self.ok, self.detail = ok, detail

    def latest(self) -> tuple[int, bool | None, str]:
        with self.lock:
            return self.sequence, self.ok, self.detail


# ---- the supervisor ----------------------------------------------------------------------


class Supervisor:
    def __init__(self, settings: NodeSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.records = {node.name: NodeRecord(node.name) for node in NODES}
        self.children: dict[str, subprocess.Popen[bytes] | None] = {node.name: None for node in NODES}
        self.probe = {node.name: ray_env.kuberay_liveness(node.head, DASHBOARD_PORT) for node in NODES}
        self.probers = {node.name: Prober(node, self.probe[node.name]) for node in NODES}
        self.seen_probe = {node.name: 0 for node in NODES}
        self.was_held = {node.name: False for node in NODES}
        self.head_was_live = False
        self.stopping = threading.Event()

    # -- one node's life --

    def start(self, node: RayNode, why: str) -> None:
        record = self.records[node.name]
        record.generation += 1
        # A fresh temp dir, as a new pod has: a restarted head refuses the old session's.
        log = LOG_DIR / f"{node.name}-{record.generation}.log"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            child = subprocess.Popen(
                ["ip", "netns", "exec", node.namespace, *node_command(node, self.settings, record.generation)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **pod_env(node, self.settings)}, start_new_session=True,
            )
        self.children[node.name] = child
        now = self.clock()
        record.pid, record.started_at, record.live_since = child.pid, now, None
        record.state, record.probe_ok, record.probe_detail, record.probe_failures = "starting", None, "", 0
        record.restarts = [*record.restarts[-49:], {"at": now, "generation": record.generation, "why": why}]
        self.seen_probe[node.name] = self.probers[node.name].latest()[0]
        record.save()

    def _ended(self, node: RayNode, why: str) -> None:
        """The node's generation is over (exited, or killed for a failed probe)."""
        record = self.records[node.name]
        self.children[node.name] = None
        # Whatever the generation left in its namespace goes with it, as with a pod.
        processes.kill_namespace(node.namespace)
        now = self.clock()
        stable = record.live_since is not None and now - record.live_since >= STABLE_AFTER_S
        record.consecutive_failures = 1 if stable else record.consecutive_failures + 1
        record.next_start_at = now + backoff_s(record.consecutive_failures)
        record.pid, record.live_since, record.last_exit = None, None, why
        record.state = "backoff"
        record.save()

    def step(self, node: RayNode) -> None:
        record, child = self.records[node.name], self.children[node.name]
        now = self.clock()
        if child is not None and child.poll() is not None:
            self._ended(node, f"exited with code {child.returncode}")
            child = None
        if held(node):
            if not self.was_held[node.name]:
                self.was_held[node.name] = True
            if record.state != "held" and child is None:
                record.state = "held"
                record.save()
            return
        if self.was_held[node.name]:
            # The drill's outage is over: start now, as a replacement pod would be.
            self.was_held[node.name] = False
            record.consecutive_failures, record.next_start_at = 0, now
            if child is None:
                self.start(node, "the drill's outage ended")
                return
        if child is None:
            if not node.head and not self.head_was_live:
                return  # first bring-up: workers join once the head answers
            if now >= record.next_start_at:
                self.start(node, record.last_exit or "first start")
            elif record.state != "backoff":
                record.state = "backoff"
                record.save()
            return
        if record.state == "starting":
            self._hurry_agents(node)
        self._check_liveness(node, now)

    def _hurry_agents(self, node: RayNode) -> None:
        """While a node starts, its raylet waits at most 15 s (fixed in Ray 2.60) for the
        dashboard agent to write its ports, then aborts the start. On this shared 2-core
        machine the agent's imports compete with a dozen other Ray processes starting at the
        same moment (a pod has its own CPUs): give the agents the CPU first."""
        for pid in processes.namespace_pids(node.namespace):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                is_agent = any(agent in command for agent in AGENT_SCRIPTS)
                if is_agent and os.getpriority(os.PRIO_PROCESS, pid) > AGENT_NICENESS:
                    os.setpriority(os.PRIO_PROCESS, pid, AGENT_NICENESS)
            except (OSError, ProcessLookupError):
                continue

    def _check_liveness(self, node: RayNode, now: float) -> None:
        record, probe = self.records[node.name], self.probe[node.name]
        sequence, ok, detail = self.probers[node.name].latest()
        if sequence == self.seen_probe[node.name] or ok is None:
            return
        self.seen_probe[node.name] = sequence
        assert record.started_at is not None
        changed = (ok, detail) != (record.probe_ok, record.probe_detail)
        record.probe_ok, record.probe_detail = ok, detail
        if ok:
            record.probe_failures = 0
            if record.live_since is None:
                record.live_since, record.state, changed = now, "live", True
                if node.head:
                    self.head_was_live = True
        elif now - record.started_at >= probe.initial_delay_s or record.live_since is not None:
            record.probe_failures += 1
            changed = True
            if record.probe_failures >= probe.failure_threshold:
                child = self.children[node.name]
                processes.kill_namespace(node.namespace)
                if child is not None:
                    child.wait(timeout=10)
                self._ended(node, f"liveness probe failed {record.probe_failures} times ({detail})")
                return
        if changed:
            record.save()

    # -- the loop --

    def run(self) -> None:
        for prober in self.probers.values():
            prober.start()
        for record in self.records.values():
            record.save()
        while not self.stopping.is_set():
            for node in NODES:
                self.step(node)
            self.stopping.wait(TICK_S)
        self.stop_all()

    def stop_all(self) -> None:
        for node in reversed(NODES):
            processes.terminate_namespace(node.namespace, grace=5)
            child = self.children[node.name]
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=10)
            record = self.records[node.name]
            record.pid, record.state = None, "stopped"
            record.save()


def main() -> int:
    from local.stack import StackState

    state = StackState.load()
    if state is None:
        print("error: no local stack state; start the stack with `python -m local up`", file=sys.stderr)
        return 2
    supervisor = Supervisor(NodeSettings(
        fault_tolerance=state.fault_tolerance, redis_password=state.redis_password,
        storage_namespace=state.storage_namespace, auth_token_path=str(state.auth_token_path),
    ))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stopping.set())
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
