"""The drill's Kubernetes backend: traffic through the serve Service, faults by deleting the
RayService's pods through the Kubernetes API with the user's kubeconfig."""

from __future__ import annotations

from typing import Any

from local.drill.backends import Clock, DrillError, FaultTimes
from local.faults import KUBERNETES_FAULTS


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return not pod["metadata"].get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class KubernetesBackend:
    """Traffic through the serve Service (a port-forward, or the internal load balancer from
    inside the VPC); the fault deletes one of the RayService's pods through the Kubernetes
    API with the user's kubeconfig (the head, or a worker with a grace period: a drain), and
    KubeRay starts a new one."""

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
        self._fault = "head"
        self._old_uid: str | None = None
        self._workers_before = 0

    def rayservice(self) -> dict[str, Any]:
        from local.drill.kube import KubeError

        try:
            return self.api.get_rayservice(self.namespace, self.rayservice_name)
        except KubeError as error:
            raise DrillError(f"cannot read RayService {self.namespace}/{self.rayservice_name}: {error}") from None

    def _pods(self, node_type: str) -> list[dict[str, Any]]:
        status = self.rayservice().get("status", {})
        cluster = status.get("activeServiceStatus", {}).get("rayClusterName")
        if not cluster:
            raise DrillError(f"RayService {self.rayservice_name} has no active Ray cluster yet")
        return self.api.list_pods(self.namespace, f"ray.io/cluster={cluster},ray.io/node-type={node_type}")

    def head_pod(self) -> dict[str, Any] | None:
        pods = self._pods("head")
        return pods[0] if pods else None

    def inject(self, fault: str, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        if fault not in KUBERNETES_FAULTS:
            raise DrillError(kubernetes_fault_refusal(fault))
        self._fault = fault
        if fault == "worker-drain":
            ready = sorted((p for p in self._pods("worker") if _pod_ready(p)), key=lambda p: p["metadata"]["name"])
            if len(ready) < 2:
                raise DrillError(f"the RayService has {len(ready)} Ready worker pod(s): draining one would leave no "
                                 "replica serving; wait until every worker is Ready")
            pod, self._workers_before = ready[-1], len(ready)
            grace: int = int(grace_s)
        else:
            head = self.head_pod()
            if head is None:
                raise DrillError("the RayService has no head pod to delete")
            # grace 0: a crash; otherwise Kubernetes' SIGTERM, SIGKILL after the grace period.
            pod, grace = head, 0 if fault == "head" else int(grace_s)
        self._old_uid = pod["metadata"]["uid"]
        fault_at = clock()
        self.api.delete_pod(self.namespace, pod["metadata"]["name"], grace)
        # KubeRay replaces the pod itself; nothing to restart by hand.
        return FaultTimes(fault_at, None)

    def recovery(self) -> dict[str, object]:
        return {}

    def serve_healthy(self) -> bool:
        if self._fault == "worker-drain":
            workers = self._pods("worker")
            if any(p["metadata"]["uid"] == self._old_uid for p in workers):
                return False  # the drained pod is still terminating
            if sum(1 for p in workers if _pod_ready(p)) < self._workers_before:
                return False
        else:
            pod = self.head_pod()
            if pod is None or pod["metadata"]["uid"] == self._old_uid or not _pod_ready(pod):
                return False
        apps = self.rayservice().get("status", {}).get("activeServiceStatus", {}).get("applicationStatuses", {})
        return bool(apps) and all(app.get("status") == "RUNNING" for app in apps.values())


def kubernetes_fault_refusal(fault: str) -> str:
    if fault.startswith("redis"):
        return (f"the {fault} fault is local only: on EKS, test the ElastiCache failover with "
                "`aws elasticache test-failover`")
    return f"the {fault} fault is local only; on Kubernetes the drill can: {', '.join(KUBERNETES_FAULTS)}"
