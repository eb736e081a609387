"""The environment of the Ray pods, in one place for the RayService chart and the local
stack (which runs the same Ray nodes as processes). No cdk8s: the local stack imports it.

Three groups:

- what the chart puts on the head and worker containers (`head_env`, `worker_env`):
  GCS reconnect timeouts, the GCS health-check settings that decide how fast a dead node
  (the old head after a restart) is declared dead, and how long a worker drains when its
  pod is deleted;
- what KubeRay itself sets on every Ray container of a RayService (`KUBERAY_SET_ENV`):
  the chart must not repeat it, the local stack sets it as KubeRay would;
- the probes KubeRay puts on the pods (`KUBERAY_PROBES`), which the local stack's
  supervisor runs as the kubelet would.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray_serve_ha.charts.serve_config import GRACEFUL_SHUTDOWN_TIMEOUT_S

# Ray's default is 60 s. When `gcs_server` dies inside a running head container, the head's
# raylet exits after this timeout and the container restarts with a fresh GCS that reloads
# its state from Redis; 20 s is what KubeRay's own HA end-to-end test uses.
HEAD_GCS_RECONNECT_TIMEOUT_S = 20
# Workers must outlive a head outage (a new head pod, image pull included) or they exit and
# take their replicas with them. KubeRay sets 600 s on workers too; it is written here so
# the outage budget is visible and tested.
WORKER_GCS_RECONNECT_TIMEOUT_S = 600

# The GCS health checks (Ray 2.60 `RAY_health_check_*`, read by `gcs_server`, so they
# matter on the head). After a head restart the new GCS reloads the node table from Redis,
# where the old head node is still ALIVE; only these checks declare it dead, and only then
# is the Serve controller (pinned to the head node) restarted on the new head. Ray's
# defaults (initial delay 5 s, period 3 s, 5 failures) take ~17 s for a node whose address
# refuses connections; these take ~3 s.
#
# The same checks judge every worker. A worker that is busy or cut off does not refuse: each
# check waits for its timeout. The timeout is raised (Ray: 10 s) so that declaring a live
# worker dead still takes about a minute, as with Ray's defaults: initial delay
# + failures x timeout + (failures - 1) x period = 1 + 3 x 20 + 2 = 63 s (Ray's: 67 s). A
# worker wrongly declared dead exits and takes its replica (and the requests on it) along.
GCS_HEALTH_CHECK_INITIAL_DELAY_MS = 1_000
GCS_HEALTH_CHECK_PERIOD_MS = 1_000
GCS_HEALTH_CHECK_TIMEOUT_MS = 20_000
GCS_HEALTH_CHECK_FAILURE_THRESHOLD = 3

# The middlewares Ray Serve puts in front of each proxy (Ray 2.60 `http_util.py`,
# RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH): the proxy's share of the replicas' bound.
PROXY_GATE_IMPORT_PATH = "ray_serve_llm.proxy_gate.middlewares"


def unresponsive_node_declared_dead_after_s() -> float:
    """How long the GCS takes to declare dead a node whose checks time out (busy, cut off)."""
    return (
        GCS_HEALTH_CHECK_INITIAL_DELAY_MS
        + GCS_HEALTH_CHECK_FAILURE_THRESHOLD * GCS_HEALTH_CHECK_TIMEOUT_MS
        + (GCS_HEALTH_CHECK_FAILURE_THRESHOLD - 1) * GCS_HEALTH_CHECK_PERIOD_MS
    ) / 1000


def refusing_node_declared_dead_after_s() -> float:
    """How long the GCS takes to declare dead a node whose address refuses connections."""
    return (
        GCS_HEALTH_CHECK_INITIAL_DELAY_MS + (GCS_HEALTH_CHECK_FAILURE_THRESHOLD - 1) * GCS_HEALTH_CHECK_PERIOD_MS
    ) / 1000


# A deleted worker pod (node expiry, consolidation, a spot interruption, an upgrade's old
# cluster) gets this long between SIGTERM and SIGKILL: its replica's graceful shutdown
# (in-flight requests and streams finish) plus room for Serve to notice the drain.
WORKER_TERMINATION_GRACE_S = GRACEFUL_SHUTDOWN_TIMEOUT_S + 30
# Ray 2.60's `ray start --block` marks its node draining on SIGTERM (ray#64454): Serve stops
# sending it new requests, moves its replica and lets in-flight ones finish, and the raylet
# exits once idle. It waits at most this long, then stops the node's processes itself, before
# the kubelet's SIGKILL at the end of the grace period (Ray's default is 30 s, less than a
# replica's graceful shutdown).
WORKER_DRAIN_TIMEOUT_S = WORKER_TERMINATION_GRACE_S - 10

GCS_HEALTH_CHECK_ENV = {
    "RAY_health_check_initial_delay_ms": str(GCS_HEALTH_CHECK_INITIAL_DELAY_MS),
    "RAY_health_check_period_ms": str(GCS_HEALTH_CHECK_PERIOD_MS),
    "RAY_health_check_timeout_ms": str(GCS_HEALTH_CHECK_TIMEOUT_MS),
    "RAY_health_check_failure_threshold": str(GCS_HEALTH_CHECK_FAILURE_THRESHOLD),
}

# What KubeRay sets on every Ray container of a RayService: fail fast on a dead GCS instead
# of hanging, so requests keep flowing through the workers while the head restarts.
KUBERAY_SET_ENV = {
    "RAY_timeout_ms_task_wait_for_death_info": "0",
    "RAY_gcs_server_request_timeout_seconds": "5",
    "RAY_SERVE_KV_TIMEOUT_S": "5",
}


def head_env() -> dict[str, str]:
    """The environment the chart sets on the head container (besides secrets and TLS)."""
    return {"RAY_gcs_rpc_server_reconnect_timeout_s": str(HEAD_GCS_RECONNECT_TIMEOUT_S), **GCS_HEALTH_CHECK_ENV}


def worker_env() -> dict[str, str]:
    """The environment the chart sets on the worker containers (besides secrets)."""
    return {
        "RAY_gcs_rpc_server_reconnect_timeout_s": str(WORKER_GCS_RECONNECT_TIMEOUT_S),
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": str(WORKER_DRAIN_TIMEOUT_S),
        # The workers' Serve proxies take the API's traffic and shed beyond their share of
        # what the replicas hold (images/ray-serve/ray_serve_llm/proxy_gate.py, in the image).
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": PROXY_GATE_IMPORT_PATH,
    }


def as_container_env(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in env.items()]


# The dashboard agent's port on every Ray node (KubeRay's default), where the raylet's
# health is asked.
DASHBOARD_AGENT_PORT = 52365
GCS_HEALTH_PATH = "/api/gcs_healthz"
RAYLET_HEALTH_PATH = "/api/local_raylet_healthz"


@dataclass(frozen=True)
class Probe:
    """A KubeRay liveness probe: HTTP GETs on the node itself whose bodies say `success`."""

    paths: tuple[tuple[int, str], ...]
    initial_delay_s: float
    period_s: float
    timeout_s: float
    failure_threshold: int


def kuberay_liveness(head: bool, dashboard_port: int) -> Probe:
    """KubeRay 1.7's liveness probe (pod.go, constant.go): the raylet's health on every
    node, plus the GCS's on the head; 120 failures 5 s apart. The raylet check passes while the GCS is
    unreachable (Ray treats that as the head's problem), so a head outage never gets the
    workers restarted; it fails once the GCS has declared the node dead."""
    paths = [(DASHBOARD_AGENT_PORT, RAYLET_HEALTH_PATH)]
    if head:
        paths.append((dashboard_port, GCS_HEALTH_PATH))
    # The head's probe asks two endpoints, so KubeRay gives it a longer timeout.
    return Probe(paths=tuple(paths), initial_delay_s=30, period_s=5, timeout_s=5 if head else 2, failure_threshold=120)
