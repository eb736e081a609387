"""The Serve control-plane watchdog in the head pod: a second container beside the Ray head.

Why in the head pod, and why a container of its own:

- KubeRay's probes cannot see the failure it watches for. They ask the raylet's and the
  GCS's health, and both are healthy while Serve's controller is stuck ALIVE at a dead
  node's address (`images/ray-serve/ray_serve_llm/serve_watchdog.py` says how Ray 2.60 gets
  there). A probe that fails restarts the Ray container, and a restarted head reloads the
  same records from Redis: that is not the remedy.
- The remedy needs the Ray cluster itself: a Ray job that kills the stuck actor, then the
  Serve config submitted again (KubeRay does that on its own once the cluster reports no
  Serve application). The head's dashboard offers both on the pod's loopback, so the
  container needs no Service, no network policy and no Kubernetes API access: no service
  account token, no RBAC at all. A probe Lambda outside the cluster would need a path to the
  head's dashboard and the cluster's Ray token, or `pods/exec` into the head.
- Its own container keeps it out of the Ray container's command and resources, gives it
  its own log (`kubectl logs <head pod> -c serve-watchdog`) and survives a restart of the
  Ray container (it then waits for the GCS, as after any head restart).

The dashboard wants the cluster's Ray token, which KubeRay puts only in the Ray container's
environment (from a Secret whose name it derives from the generated RayCluster name). The
Ray container therefore hands it over: a postStart hook writes it to a file in a
memory-backed volume that only the two containers of this pod mount (0600). Anyone who can
read it could already read the Ray container's environment.
"""

from __future__ import annotations

from typing import Any

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.ray_pods import SERVE_WATCHDOG_RESOURCES, container_resources

CONTAINER_NAME = "serve-watchdog"
VOLUME_NAME = "serve-watchdog-token"
MOUNT_PATH = "/var/run/ray-serve-watchdog"
TOKEN_FILE = f"{MOUNT_PATH}/token"
# The module's loop (ray_serve_llm.serve_watchdog): every image of images/ray-serve has it.
COMMAND = ["python", "-m", "ray_serve_llm.serve_watchdog", "watch",
           "--dashboard", f"http://127.0.0.1:{constants.DASHBOARD_PORT}"]

# Runs in the Ray container (with its environment): copies the token for the watchdog. It
# never fails (a failing postStart hook would kill the Ray container): without token auth
# there is nothing to copy.
_HAND_OVER_TOKEN = (
    f'umask 077; if [ -n "$RAY_AUTH_TOKEN" ]; then printf %s "$RAY_AUTH_TOKEN" > {TOKEN_FILE}.tmp '
    f"&& mv {TOKEN_FILE}.tmp {TOKEN_FILE}; fi; true"
)


def watchdog_container(image: str) -> dict[str, Any]:
    return {
        "name": CONTAINER_NAME,
        "image": image,
        "command": COMMAND,
        "env": [{"name": "RAY_AUTH_TOKEN_PATH", "value": TOKEN_FILE}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
        "resources": container_resources(SERVE_WATCHDOG_RESOURCES, None),
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": MOUNT_PATH, "readOnly": True}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def token_volume() -> dict[str, Any]:
    return {"name": VOLUME_NAME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}


def ray_container_additions() -> dict[str, Any]:
    """What the Ray head container gets: the shared volume and the hook that hands over
    the token."""
    return {
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": MOUNT_PATH}],
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", _HAND_OVER_TOKEN]}}},
    }
