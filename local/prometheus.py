"""The demo's Prometheus (Debian's `prometheus`): on loopback, scraping every Ray node's
metrics export port through the bridge, its data under the stack's state directory. What
CloudWatch's OTel Container Insights collects on EKS, here on one machine: the drill reads
Serve's server-side series from it (local/drill/server_series.py)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from typing import Any

from local import processes
from local.state import LOG_DIR
from local.topology import METRICS_PORT, NODES, PROMETHEUS_PORT, PROMETHEUS_URL, STATE_DIR

DATA_DIR = STATE_DIR / "prometheus"
CONFIG_FILE = STATE_DIR / "prometheus.yml"
LOG_FILE = LOG_DIR / "prometheus.log"
# Fine enough for a drill's timeline of a few minutes.
SCRAPE_INTERVAL_S = 2
# The demo's history: enough for a session and its drills, bounded on disk.
RETENTION = "6h"


class PrometheusError(RuntimeError):
    """Prometheus could not be started; the message names the fix."""


def config() -> dict[str, Any]:
    """One job, one target per Ray node (its own IP, as each pod's), labelled with the node."""
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "scrape_timeout": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [{
            "job_name": "ray",
            "static_configs": [
                {"targets": [f"{node.ip}:{METRICS_PORT}"], "labels": {"ray_node": node.name}} for node in NODES
            ],
        }],
    }


def start() -> int:
    """Starts Prometheus (a fresh store: a new stack's series only) and waits until it is
    ready; its PID."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusError(
            "Prometheus is not installed: run `make system-packages` as root "
            "(or `apt-get install --no-install-recommends prometheus`)"
        )
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    DATA_DIR.mkdir(mode=0o700, parents=True)
    # JSON is YAML: Prometheus reads it as its configuration file.
    CONFIG_FILE.write_text(json.dumps(config(), indent=1))
    pid = processes.spawn(
        [binary, f"--config.file={CONFIG_FILE}", f"--storage.tsdb.path={DATA_DIR}",
         f"--storage.tsdb.retention.time={RETENTION}", f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
        log=LOG_FILE,
    )
    deadline = time.monotonic() + 30
    while not ready():
        if not processes.alive(pid):
            raise PrometheusError(f"Prometheus exited at start; see {LOG_FILE}")
        if time.monotonic() > deadline:
            processes.terminate(pid, grace=5)
            raise PrometheusError(f"Prometheus was not ready on {PROMETHEUS_URL} within 30 s; see {LOG_FILE}")
        time.sleep(0.2)
    return pid


def ready(url: str = PROMETHEUS_URL) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def targets(url: str = PROMETHEUS_URL) -> dict[str, str]:
    """Each active scrape target's address and health (`up`, `down`, `unknown`)."""
    with urllib.request.urlopen(f"{url}/api/v1/targets?state=active", timeout=5) as response:
        data = json.load(response)["data"]["activeTargets"]
    return {t["labels"]["instance"]: t["health"] for t in data}
