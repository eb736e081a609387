"""Names and addresses of the local stack: one place, so the stack, the drill and the tests
agree, and so the drill can refuse any address that is not the tool's own.

Every Ray node gets its own network namespace and IP: Serve proxies bind 0.0.0.0:8000 with
SO_REUSEPORT, so on one IP the kernel would spread connections over every node's proxy,
the head's included, and a client could not aim at a worker. The namespaces hang off a
bridge in the main namespace; they have no default route, and the main namespace reaches
them only through the bridge's on-link route, so no drill traffic can leave the machine.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ray_serve_ha.charts import constants

PREFIX = "rsha"
SUBNET = ipaddress.ip_network("10.213.7.0/24")
BRIDGE = f"{PREFIX}-br0"
BRIDGE_IP = "10.213.7.1"  # the main namespace's side: Redis listens here
# The ports the pods use (ray_serve_ha/charts/constants.py), so the local nodes listen where the pods do.
SERVE_PORT = constants.SERVE_PORT
GCS_PORT = constants.GCS_PORT
DASHBOARD_PORT = constants.DASHBOARD_PORT
REDIS_PORT = constants.REDIS_PORT
API_PORT = constants.SERVE_PORT  # 127.0.0.1: forwards to the workers' proxies, like the serve Service
GRADIO_PORT = constants.GRADIO_PORT
METRICS_PORT = constants.METRICS_EXPORT_PORT  # each node's own IP, as each pod's
# The demo's Prometheus, on loopback: not Prometheus's default 9090, which Debian's packaged
# service takes on a machine that runs it.
PROMETHEUS_PORT = 9095
STATE_DIR = Path(os.environ.get("RAY_SERVE_HA_LOCAL_DIR", "/tmp/ray-serve-ha-local"))


@dataclass(frozen=True)
class RayNode:
    name: str
    ip: str
    head: bool = False

    @property
    def namespace(self) -> str:
        return f"{PREFIX}-{self.name}"

    @property
    def veth(self) -> str:
        # Interface names are limited to 15 characters.
        return f"{PREFIX}-v{self.ip.rsplit('.', 1)[1]}"

    @property
    def interface(self) -> str:
        """The node's end of its veth pair, inside its namespace."""
        return f"{self.veth}p"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.ip}:{SERVE_PORT}"


HEAD = RayNode("head", "10.213.7.10", head=True)
WORKERS = (RayNode("worker-1", "10.213.7.11"), RayNode("worker-2", "10.213.7.12"))
NODES = (HEAD, *WORKERS)
NODE_NAMED = {node.name: node for node in NODES}

GCS_ADDRESS = f"{HEAD.ip}:{GCS_PORT}"
DASHBOARD_URL = f"http://{HEAD.ip}:{DASHBOARD_PORT}"
API_URL = f"http://127.0.0.1:{API_PORT}"
GRADIO_URL = f"http://127.0.0.1:{GRADIO_PORT}"
PROMETHEUS_URL = f"http://127.0.0.1:{PROMETHEUS_PORT}"
REDIS_ADDRESS = f"{BRIDGE_IP}:{REDIS_PORT}"


class ForeignTargetError(ValueError):
    """A target outside loopback and the stack's own namespaces."""


def check_local_target(url: str) -> str:
    """Returns `url` if its host is loopback or one of the stack's own addresses; raises
    ForeignTargetError otherwise. Every request the local drill sends goes through this."""
    host = urlsplit(url).hostname or ""
    allowed = {BRIDGE_IP, *(n.ip for n in NODES)}
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost":
            return url
        raise ForeignTargetError(
            f"refusing target {url!r}: the local drill only sends to loopback or its own "
            f"namespaces ({', '.join(sorted(allowed))}); use an IP address, not a host name"
        ) from None
    if address.is_loopback or host in allowed:
        return url
    raise ForeignTargetError(
        f"refusing target {url!r}: the local drill only sends to loopback or its own "
        f"namespaces ({', '.join(sorted(allowed))})"
    )
