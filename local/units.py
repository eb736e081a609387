"""What each supervised unit of the local stack runs, and how its liveness is probed: a Ray
node's `ray start` with the environment its pod gets (the chart's `ray_env`), the head pod's
Serve watchdog container, Redis from its config; KubeRay's liveness probes and Redis's PING.
`local.supervisor` starts, probes and restarts them."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from local import cgroups
from local.redis_client import ping
from local.state import REDIS_CONFIG, SERVE_CONFIG_FILE, WATCHDOG_STATUS_FILE
from local.topology import (
    BRIDGE_IP,
    DASHBOARD_PORT,
    GCS_ADDRESS,
    GCS_PORT,
    METRICS_PORT,
    REDIS_ADDRESS,
    REDIS_PORT,
    STATE_DIR,
    RayNode,
)
from ray_serve_ha.charts import ray_env
from ray_serve_ha.charts.ray_pods import KIND_HEAD_RESOURCES, KIND_WORKER_RESOURCES, SERVE_WATCHDOG_RESOURCES
from ray_serve_ha.charts.serve_config import API_LIMITS_REDIS_ADDRESS_ENV, API_LIMITS_REDIS_PASSWORD_ENV

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
SERVE_APP_DIR = ROOT / "images" / "ray-serve"
# CPUs each worker offers Ray: one replica (1 CPU) plus room for a batch job's tasks.
WORKER_CPUS = 2
# The dashboard agent's HTTP port, fixed as KubeRay fixes it (the probes ask it). The other
# agent ports stay Ray's choice: the raylet waits up to 15 s (fixed in Ray 2.60) for each port
# file in turn, and each port left to Ray gives a slow-starting agent another window.
AGENT_PORTS = ("--dashboard-agent-listen-port", str(ray_env.DASHBOARD_AGENT_PORT))

@dataclass(frozen=True)
class Liveness:
    """A liveness probe: `check` answers (ok, detail); counted as KubeRay's probes are."""

    check: Callable[[], tuple[bool, str]]
    initial_delay_s: float
    period_s: float
    failure_threshold: int
    namespace: str | None = None  # asked from inside this network namespace


# Redis stands in for ElastiCache, which replaces a primary that stops answering. A PING every
# 2 s; 10 unanswered in a row (20 s) and it is killed and restarted from its AOF. A Redis
# loading a large AOF gets 10 s before its probe counts.
REDIS_PROBE_PERIOD_S = 2.0
REDIS_PROBE_TIMEOUT_S = 2.0
REDIS_PROBE_FAILURES = 10


def temp_dir(node: RayNode, generation: int) -> Path:
    return STATE_DIR / "ray" / f"{node.name}-{generation}"


# ---- what each unit runs ------------------------------------------------------------------


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
    if not node.head and settings.fault_tolerance:
        # The API's per-key rate limits count in the same Redis, as the chart gives the workers.
        env[API_LIMITS_REDIS_ADDRESS_ENV] = REDIS_ADDRESS
        env[API_LIMITS_REDIS_PASSWORD_ENV] = settings.redis_password
    if node.head and settings.fault_tolerance:
        env["RAY_REDIS_ADDRESS"] = REDIS_ADDRESS
        # Identical across head restarts, as KubeRay uses the RayCluster's UID.
        env["RAY_external_storage_namespace"] = settings.storage_namespace
    return env


def node_command(node: RayNode, settings: NodeSettings, generation: int) -> list[str]:
    common = ["--block", "--node-ip-address", node.ip, "--temp-dir", str(temp_dir(node, generation)),
              "--disable-usage-stats", *AGENT_PORTS, "--metrics-export-port", str(METRICS_PORT)]
    if node.head:
        command = [
            str(BIN / "ray"), "start", "--head", *common, "--port", str(GCS_PORT),
            # No replicas on the head: it can crash without taking one down.
            "--num-cpus", "0",
            "--include-dashboard", "true", "--dashboard-host", "0.0.0.0",
        ]
        if settings.fault_tolerance:
            # Ray 2.60 passes the Redis password to gcs_server only as a command-line flag
            # (KubeRay does the same from its REDIS_PASSWORD variable): see docs/operating.md.
            command += ["--redis-password", settings.redis_password]
        return command
    return [
        str(BIN / "ray"), "start", *common, "--address", GCS_ADDRESS, "--num-cpus", str(WORKER_CPUS),
    ]


def watchdog_command() -> list[str]:
    """The head pod's watchdog container, as a process: it asks the head's dashboard on the
    namespace's loopback, and submits the stack's serve config again after a remedy (the
    local stack has no KubeRay to do it)."""
    return [
        sys.executable, "-m", "ray_serve_llm.serve_watchdog", "watch",
        "--dashboard", f"http://127.0.0.1:{DASHBOARD_PORT}",
        "--serve-config", str(SERVE_CONFIG_FILE), "--status-file", str(WATCHDOG_STATUS_FILE),
    ]


def redis_command() -> list[str]:
    # The config (written by `up`, 0600) holds the password and `appendonly yes`: a restart
    # loads the AOF, as a replaced ElastiCache node syncs from its replica.
    return ["redis-server", str(REDIS_CONFIG)]


def pod_cpu_request_milli(node: RayNode) -> int:
    """What the node's pod requests in the kind profile (the chart's CPU pods, the same
    workload): the head container plus its watchdog container; a worker container."""
    if node.head:
        return cgroups.milli_cpu(KIND_HEAD_RESOURCES.cpu) + cgroups.milli_cpu(SERVE_WATCHDOG_RESOURCES.cpu)
    return cgroups.milli_cpu(KIND_WORKER_RESOURCES.cpu)


def node_command_for(node: RayNode, settings: NodeSettings) -> Callable[[int], list[str]]:
    return lambda generation: node_command(node, settings, generation)


# ---- liveness probes ----------------------------------------------------------------------


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


def node_liveness(node: RayNode) -> Liveness:
    probe = ray_env.kuberay_liveness(node.head, DASHBOARD_PORT)
    return Liveness(lambda: probe_once(probe), probe.initial_delay_s, probe.period_s, probe.failure_threshold,
                    namespace=node.namespace)


def redis_liveness(password: str) -> Liveness:
    return Liveness(lambda: ping(BRIDGE_IP, REDIS_PORT, password, REDIS_PROBE_TIMEOUT_S),
                    initial_delay_s=10, period_s=REDIS_PROBE_PERIOD_S, failure_threshold=REDIS_PROBE_FAILURES)


