"""What the local stack asks its running cluster, as a part of `LocalStack`: the head's
dashboard API (from inside the head's network namespace, with the cluster's token), the GCS's
health, Serve's application status and every worker's Serve proxy, and whether all of that
adds up to healthy."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local import netns
from local.state import LOG_DIR, StackError, StackState
from local.topology import DASHBOARD_PORT, HEAD, STATE_DIR, WORKERS, RayNode
from ray_serve_ha.charts import ray_env, worker_readiness
from ray_serve_ha.charts.constants import SERVE_PROXY_HEALTH_PATH
from ray_serve_ha.charts.serve_config import APP_NAME, LlmServing, tiny_model_serving

HEAD_DASHBOARD = f"http://127.0.0.1:{DASHBOARD_PORT}"


class ClusterView:
    """Mixed into `LocalStack`, whose state holds the cluster's token."""

    state: StackState

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
