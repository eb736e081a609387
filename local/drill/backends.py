"""Where the drill sends traffic and how it injects the fault: the local stack (processes in
network namespaces) or a Kubernetes cluster (the RayService's head pod)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from local.stack import LocalStack
    from local.topology import RayNode

# The drill's clock: seconds since the drill started.
Clock = Callable[[], float]

# Faults on the head (crash, graceful stop), its GCS store, a worker node (crash) and the
# head's network (its link down, processes running).
FAULTS = ("head", "head-graceful", "redis", "worker", "partition")
KUBERNETES_FAULTS = ("head", "head-graceful")


class DrillError(RuntimeError):
    """The drill cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class FaultTimes:
    fault_at: float
    restarted_at: float | None


class Backend(Protocol):
    name: str
    fault_tolerance: bool
    base_url: str

    def inject(self, fault: str, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes: ...

    def serve_healthy(self) -> bool: ...

    def recovery(self) -> dict[str, object]: ...


class LocalBackend:
    """Traffic through the API port (the serve Service's stand-in: both workers' proxies)
    unless another target is given; faults on the processes and links of the local stack.
    The supervisor restarts what a fault took down once the fault's outage is over."""

    name = "local"

    def __init__(self, stack: LocalStack, target_url: str | None = None) -> None:
        from local.topology import API_URL, check_local_target

        self.stack = stack
        self.fault_tolerance = stack.state.fault_tolerance
        self.base_url = check_local_target(target_url or API_URL)
        self._before: dict[str, int] = {}
        self._touched: tuple[str, ...] = ()
        # A worker fault: healthy only once a replica started after the fault runs on it.
        self._replaced_on: tuple[str, float] | None = None
        self._head_generation_at_restart: int | None = None

    def _generations(self) -> dict[str, int]:
        from local.topology import NODES

        records = {node.name: self.stack.node_record(node) for node in NODES}
        return {name: record.generation if record else 0 for name, record in records.items()}

    def _restart(self, node: RayNode, outage_s: float, clock: Clock) -> float:
        """Ends a held node's outage; returns when (on the drill's clock) the supervisor
        started it again."""
        time.sleep(outage_s)
        generation = self._generations()[node.name]
        self.stack.release(node)
        record = self.stack.wait_restarted(node, generation)
        if node.head:
            self._head_generation_at_restart = record.generation - 1
        assert record.started_at is not None  # wait_restarted returns only a started record
        return clock() - (time.monotonic() - record.started_at)

    def inject(self, fault: str, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        from local.topology import HEAD, WORKERS

        self._before = self._generations()
        if fault == "redis":
            if not self.fault_tolerance:
                raise DrillError("the redis fault needs the GCS store: run it without --no-ft")
            # The GCS loses its store and exits; the supervisor restarts the head (with
            # back-off while Redis is away), and the new GCS reloads the cluster from Redis.
            self._touched = (HEAD.name,)
            self._head_generation_at_restart = self._before[HEAD.name]
            fault_at = clock()
            self.stack.stop_redis()
            time.sleep(outage_s)
            self.stack.start_redis()
            return FaultTimes(fault_at, clock())
        if fault == "partition":
            # Nothing restarts: the head runs on behind its cut link, the workers keep
            # serving and wait for it, and no node may be declared dead for it.
            self._touched = ()
            fault_at = clock()
            self.stack.partition(HEAD)
            try:
                time.sleep(outage_s)
            finally:
                self.stack.heal(HEAD)
            return FaultTimes(fault_at, clock())
        node = WORKERS[-1] if fault == "worker" else HEAD
        self._touched = (node.name,)
        if fault == "worker":
            self._replaced_on = (node.ip, time.time())
        fault_at = clock()
        try:
            if fault == "head-graceful":
                self.stack.terminate_node(node, grace_s)
            else:
                self.stack.kill_node(node)
            restarted_at = self._restart(node, outage_s, clock)
        finally:
            self.stack.release(node)
        return FaultTimes(fault_at, restarted_at)

    def serve_healthy(self) -> bool:
        if self._replaced_on is None:
            return self.stack.serve_healthy()
        # Serve's status may still count the lost replica for a moment: wait for its
        # replacement on the restarted node.
        ip, since = self._replaced_on
        status = self.stack.serve_status()
        from local.stack import serve_status_healthy

        if not serve_status_healthy(status):
            return False
        assert status is not None  # healthy implies a status was read
        replicas = [r for d in status["deployments"].values() for r in d.get("replicas", [])]
        return any(r.get("node_ip") == ip and r.get("state") == "RUNNING" and r.get("start_time_s", 0) > since
                   for r in replicas)

    def recovery(self) -> dict[str, object]:
        """What the supervisor did: starts per node since the fault, how many starts the head
        needed to recover, and restarts of nodes the fault did not touch (a worker wrongly
        declared dead would show up here)."""
        from local.topology import HEAD

        after = self._generations()
        starts = {name: after[name] - self._before.get(name, 0) for name in after}
        details: dict[str, object] = {"starts": starts}
        if self._head_generation_at_restart is not None:
            details["head_starts_to_recover"] = after[HEAD.name] - self._head_generation_at_restart
        details["unplanned_restarts"] = sorted(n for n, count in starts.items() if count and n not in self._touched)
        return details


class KubernetesBackend:
    """Traffic through the serve Service (a port-forward, or the internal load balancer from
    inside the VPC); the fault deletes the RayService's head pod through the Kubernetes API
    with the user's kubeconfig, and KubeRay starts a new one."""

    name = "kubernetes"
    fault_tolerance = True

    def __init__(self, *, base_url: str, namespace: str, rayservice: str,
                 kubeconfig: str | None = None, context: str | None = None):
        from local.drill.kube import KubeClient, KubeConfig, KubeError

        try:
            self.api = KubeClient(KubeConfig.load(kubeconfig, context))
        except KubeError as error:
            raise DrillError(
                f"{error}; run `aws eks update-kubeconfig --name <cluster>` or pass --kubeconfig"
            ) from None
        self.namespace = namespace
        self.rayservice_name = rayservice
        self.base_url = base_url
        self._old_head_uid: str | None = None

    def rayservice(self) -> dict[str, Any]:
        from local.drill.kube import KubeError

        try:
            return self.api.get_rayservice(self.namespace, self.rayservice_name)
        except KubeError as error:
            raise DrillError(f"cannot read RayService {self.namespace}/{self.rayservice_name}: {error}") from None

    def head_pod(self) -> dict[str, Any] | None:
        status = self.rayservice().get("status", {})
        cluster = status.get("activeServiceStatus", {}).get("rayClusterName")
        if not cluster:
            raise DrillError(f"RayService {self.rayservice_name} has no active Ray cluster yet")
        pods = self.api.list_pods(self.namespace, f"ray.io/cluster={cluster},ray.io/node-type=head")
        return pods[0] if pods else None

    def inject(self, fault: str, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        if fault not in KUBERNETES_FAULTS:
            raise DrillError(kubernetes_fault_refusal(fault))
        pod = self.head_pod()
        if pod is None:
            raise DrillError("the RayService has no head pod to delete")
        self._old_head_uid = pod["metadata"]["uid"]
        fault_at = clock()
        # grace 0: a crash; otherwise Kubernetes' SIGTERM, SIGKILL after the grace period.
        self.api.delete_pod(self.namespace, pod["metadata"]["name"], 0 if fault == "head" else int(grace_s))
        # KubeRay replaces the pod itself; nothing to restart by hand.
        return FaultTimes(fault_at, None)

    def recovery(self) -> dict[str, object]:
        return {}

    def serve_healthy(self) -> bool:
        pod = self.head_pod()
        if pod is None or pod["metadata"]["uid"] == self._old_head_uid:
            return False
        conditions = pod.get("status", {}).get("conditions") or []
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return False
        apps = self.rayservice().get("status", {}).get("activeServiceStatus", {}).get("applicationStatuses", {})
        return bool(apps) and all(app.get("status") == "RUNNING" for app in apps.values())


def kubernetes_fault_refusal(fault: str) -> str:
    if fault == "redis":
        return ("the redis fault is local only: on EKS, test the ElastiCache failover with "
                "`aws elasticache test-failover`")
    return f"the {fault} fault is local only; on Kubernetes the drill can: {', '.join(KUBERNETES_FAULTS)}"
