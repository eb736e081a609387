"""Where the drill sends traffic and how it injects the fault: the local stack (processes in
network namespaces) or a Kubernetes cluster (the RayService's head pod)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

FAULTS = ("head", "head-graceful", "redis")


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

    def inject(self, fault: str, outage_s: float, grace_s: float, clock) -> FaultTimes: ...

    def serve_healthy(self) -> bool: ...


class LocalBackend:
    """Traffic through worker-1's Serve proxy; faults on the processes of the local stack."""

    name = "local"

    def __init__(self, stack, target_url: str | None = None):
        from local.topology import WORKERS, check_local_target

        self.stack = stack
        self.fault_tolerance = stack.state.fault_tolerance
        self.base_url = check_local_target(target_url or WORKERS[0].proxy_url)

    def inject(self, fault: str, outage_s: float, grace_s: float, clock) -> FaultTimes:
        if fault == "redis":
            if not self.fault_tolerance:
                raise DrillError("the redis fault needs the GCS store: run it without --no-ft")
            fault_at = clock()
            self.stack.stop_redis()
            time.sleep(outage_s)
            self.stack.start_redis()
            # The GCS lost its store; the head restarts (as kubelet restarts its container)
            # and recovers the cluster's state from Redis.
            self.stack.kill_head()
            restarted_at = clock()
            self.stack.start_head()
            return FaultTimes(fault_at, restarted_at)
        fault_at = clock()
        if fault == "head":
            self.stack.kill_head()
        else:
            self.stack.terminate_head(grace_s)
        time.sleep(outage_s)
        restarted_at = clock()
        self.stack.start_head()
        return FaultTimes(fault_at, restarted_at)

    def serve_healthy(self) -> bool:
        return self.stack.serve_healthy()


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

    def rayservice(self) -> dict:
        from local.drill.kube import KubeError

        try:
            return self.api.get_rayservice(self.namespace, self.rayservice_name)
        except KubeError as error:
            raise DrillError(f"cannot read RayService {self.namespace}/{self.rayservice_name}: {error}") from None

    def head_pod(self) -> dict | None:
        status = self.rayservice().get("status", {})
        cluster = status.get("activeServiceStatus", {}).get("rayClusterName")
        if not cluster:
            raise DrillError(f"RayService {self.rayservice_name} has no active Ray cluster yet")
        pods = self.api.list_pods(self.namespace, f"ray.io/cluster={cluster},ray.io/node-type=head")
        return pods[0] if pods else None

    def inject(self, fault: str, outage_s: float, grace_s: float, clock) -> FaultTimes:
        if fault == "redis":
            raise DrillError(
                "the redis fault is local only: on EKS, test the ElastiCache failover with "
                "`aws elasticache test-failover`"
            )
        pod = self.head_pod()
        if pod is None:
            raise DrillError("the RayService has no head pod to delete")
        self._old_head_uid = pod["metadata"]["uid"]
        fault_at = clock()
        # grace 0: a crash; otherwise Kubernetes' SIGTERM, SIGKILL after the grace period.
        self.api.delete_pod(self.namespace, pod["metadata"]["name"], 0 if fault == "head" else int(grace_s))
        # KubeRay replaces the pod itself; nothing to restart by hand.
        return FaultTimes(fault_at, None)

    def serve_healthy(self) -> bool:
        pod = self.head_pod()
        if pod is None or pod["metadata"]["uid"] == self._old_head_uid:
            return False
        conditions = pod.get("status", {}).get("conditions") or []
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            return False
        apps = self.rayservice().get("status", {}).get("activeServiceStatus", {}).get("applicationStatuses", {})
        return bool(apps) and all(app.get("status") == "RUNNING" for app in apps.values())
