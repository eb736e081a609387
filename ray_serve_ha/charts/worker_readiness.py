"""Readiness of a RayService worker: Ready only while its own Serve replica serves.

KubeRay 1.7 gives RayService workers a readiness probe of raylet + Serve proxy health
(`pod.go`, `initLivenessAndReadinessProbe`), which passes minutes before the worker's replica
has loaded the model (Neuron: compiled or fetched it). A worker that is Ready too early is
counted by the workers' PodDisruptionBudget as available, so a node drain (expiry, drift)
could take the node of the *other*, serving replica while this one still loads: both gone.

This probe adds the replica: the worker is Ready when its raylet and proxy answer and a
replica of the LLM deployment on this node has finished initializing. The check is local to
the pod (it reads the replica's process title in /proc, which Ray sets per task:
`ray::ServeReplica:<app>:<deployment>.initialize_and_get_metadata` while the model loads,
`ray::ServeReplica:<app>:<deployment>` once it serves) and never asks the head, so workers
stay Ready, and keep serving, while the head restarts. KubeRay keeps a readiness probe the
pod template sets (it injects its own only where none is given).
"""

from __future__ import annotations

from typing import Any

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.serve_config import APP_NAME, DEPLOYMENT_NAME

# Methods a replica runs before it serves (actor creation, the user constructor, config).
REPLICA_STARTING_METHODS = ("__init__", "initialize_and_get_metadata", "reconfigure")
# KubeRay's probe timings for Serve workers: every 5 s, NotReady at the first failure (so the
# serve Service stops sending to a worker at once), after a 10 s initial delay.
PERIOD_SECONDS = 5
TIMEOUT_SECONDS = 5
FAILURE_THRESHOLD = 1
INITIAL_DELAY_SECONDS = 10
# Each HTTP check's own time-out, within the probe's.
HTTP_TIMEOUT_SECONDS = 2

_SCRIPT = """\
import os, sys, urllib.request
def answers(url):
    try:
        with urllib.request.urlopen(url, timeout={http_timeout}) as response:
            return response.status == 200
    except Exception:
        return False
def titles(root):
    for pid in os.listdir(root):
        if pid.isdigit():
            try:
                with open(os.path.join(root, pid, "cmdline"), "rb") as f:
                    yield f.read().split(b"\\0")[0].decode(errors="replace").strip()
            except OSError:
                pass
replica, starting = {title!r}, {starting!r}
serving = any(
    t == replica or (t.startswith(replica + ".") and t[len(replica) + 1:] not in starting)
    for t in titles({proc_root!r})
)
sys.exit(0 if serving and answers({raylet_url!r}) and answers({proxy_url!r}) else 1)
"""


def replica_process_title(app_name: str = APP_NAME, deployment_name: str = DEPLOYMENT_NAME) -> str:
    """The process title Ray gives a Serve replica of `deployment_name` in `app_name`."""
    return f"ray::ServeReplica:{app_name}:{deployment_name}"


def readiness_command(
    *,
    agent_port: int = constants.DASHBOARD_AGENT_PORT,
    serve_port: int = constants.SERVE_PORT,
    replica_title: str | None = None,
    proc_root: str = "/proc",
) -> list[str]:
    """The probe's command: exit status 0 when the replica serves and raylet and proxy answer."""
    script = _SCRIPT.format(
        http_timeout=HTTP_TIMEOUT_SECONDS,
        title=replica_title or replica_process_title(),
        starting=REPLICA_STARTING_METHODS,
        proc_root=proc_root,
        # The raylet's health from the node's dashboard agent, as KubeRay 1.7 probes RayService
        # workers (it answers 200 while only the GCS, on the head, is unreachable).
        raylet_url=f"http://localhost:{agent_port}/api/local_raylet_healthz",
        proxy_url=f"http://localhost:{serve_port}{constants.SERVE_PROXY_HEALTH_PATH}",
    )
    # python3 from the image: every Ray image has it (KubeRay's own fallback probe uses Python).
    return ["python3", "-c", script]


def worker_readiness_probe(deployment_name: str = DEPLOYMENT_NAME) -> dict[str, Any]:
    """The probe of a worker whose replica is one of `deployment_name` (the floor's or the spot
    deployment's, with spot replicas)."""
    return {
        "exec": {"command": readiness_command(replica_title=replica_process_title(deployment_name=deployment_name))},
        "initialDelaySeconds": INITIAL_DELAY_SECONDS,
        "periodSeconds": PERIOD_SECONDS,
        "timeoutSeconds": TIMEOUT_SECONDS,
        "failureThreshold": FAILURE_THRESHOLD,
        "successThreshold": 1,
    }
