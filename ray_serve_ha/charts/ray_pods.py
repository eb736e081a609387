"""Ray pods on Kubernetes, shared by the RayService (ray_serve_ha/charts/rayservice.py) and the batch
teams' RayClusters (ray_serve_ha/charts/batch.py): pod resources, head and worker groups, the in-tree
autoscaler, KubeRay's name limits, secret references and the GCS store.

Plain dicts and dataclasses, no cdk8s: the charts wrap what these functions return.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import Accelerator
from ray_serve_ha.charts.node_sizing import WorkerSize

RAY_VERSION = "2.60.0"
# Ray's own CPU image; accelerator images (Neuron, vLLM) are built from images/ray-serve.
DEFAULT_RAY_IMAGE = f"rayproject/ray:{RAY_VERSION}-py312"

# KubeRay derives the RayCluster, Service and Pod names from a RayService's or RayJob's name
# and refuses longer ones (ray-operator/controllers/ray/utils/constant.go).
MAX_RAYSERVICE_NAME_LENGTH = 47
MAX_RAYCLUSTER_NAME_LENGTH = 53
MAX_RAYJOB_NAME_LENGTH = 47
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class SecretKeyRef:
    """One key of a Kubernetes Secret (synced from Secrets Manager by an ExternalSecret)."""

    name: str
    key: str

    def env_source(self) -> dict[str, Any]:
        return {"secretKeyRef": {"name": self.name, "key": self.key}}


@dataclass(frozen=True)
class GcsStore:
    """The Redis that the Ray GCS writes to. `host` and `port` may be CDK tokens."""

    host: str
    port: int | str
    password: SecretKeyRef
    # ElastiCache enforces TLS in transit; the in-cluster Redis of the kind profile has none.
    tls: bool = True

    @property
    def address(self) -> str:
        # No credentials in the URL: Ray reads the password from `redisPassword`.
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class PodResources:
    """Requests, equal to limits: Guaranteed QoS, and Ray counts exactly what it gets."""

    cpu: str
    memory: str
    # Accelerator devices (Inferentia2 chips, NVIDIA GPUs); only on accelerator workers.
    devices: int = 0


# The kind profile's pods (CPU workers serving the tiny model, as in KubeRay's HA sample): the
# same workload the local stack runs as processes, so its nodes get these pods' CPU weights.
KIND_HEAD_RESOURCES = PodResources(cpu="1", memory="2Gi")
KIND_WORKER_RESOURCES = PodResources(cpu="1", memory="3Gi")
# The head pod's Serve watchdog container (ray_serve_llm.serve_watchdog): a Python loop of a
# few HTTP calls every 5 s; its remedy runs as a Ray job in the head container.
SERVE_WATCHDOG_RESOURCES = PodResources(cpu="100m", memory="128Mi")


def worker_pod_resources(size: WorkerSize) -> PodResources:
    """A worker that takes a whole node, as the accelerator table sizes it."""
    return PodResources(cpu=str(size.cpus), memory=f"{size.memory_gib}Gi", devices=size.devices)


def container_resources(resources: PodResources, accelerator: Accelerator | None) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    if accelerator is not None:
        amounts[accelerator.device_resource] = str(resources.devices)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def capacity_type_terms(capacity_type: str, expressions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Node selector terms (ORed) for nodes of `capacity_type` ("on-demand", "spot") that also
    match `expressions`: by Karpenter's label (EKS Auto Mode) or by the label EKS puts on a
    managed node group's nodes. One spec fits both capacity modes."""
    return [
        {"matchExpressions": [
            *expressions,
            {"key": constants.KARPENTER_CAPACITY_TYPE_LABEL, "operator": "In", "values": [capacity_type]},
        ]},
        {"matchExpressions": [
            *expressions,
            {
                "key": constants.NODE_GROUP_CAPACITY_TYPE_LABEL,
                "operator": "In",
                "values": [constants.NODE_GROUP_CAPACITY_TYPES[capacity_type]],
            },
        ]},
    ]


def required_node_affinity(terms: list[dict[str, Any]]) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}


def on_demand_capacity_affinity() -> dict[str, Any]:
    """Where Ray heads run: on-demand capacity without accelerators. The terms are ORed:
    in EKS Auto Mode the project's heads pool (Karpenter labels; its disk holds the heads'
    images), or, in node-groups mode, the system node group (on-demand managed nodes)."""
    auto_mode, node_groups = capacity_type_terms("on-demand", [])
    auto_mode["matchExpressions"].insert(
        0, {"key": "karpenter.sh/nodepool", "operator": "In", "values": [constants.HEADS_POOL]}
    )
    node_groups["matchExpressions"].insert(
        0, {"key": constants.NODE_ROLE_LABEL, "operator": "In", "values": [constants.SYSTEM_NODE_ROLE]}
    )
    return required_node_affinity([auto_mode, node_groups])


# The in-tree autoscaler's sidecar on the head.
AUTOSCALER_RESOURCES = PodResources(cpu="500m", memory="512Mi")


def autoscaling(idle_timeout_s: int, *, upscaling_mode: str | None = None) -> dict[str, Any]:
    """The RayCluster fields that turn Ray's autoscaler on: it adds worker pods when tasks,
    actors or Serve replicas wait for resources, and removes them after `idle_timeout_s`."""
    options: dict[str, Any] = {"idleTimeoutSeconds": idle_timeout_s}
    if upscaling_mode is not None:
        options["upscalingMode"] = upscaling_mode
    options["resources"] = container_resources(AUTOSCALER_RESOURCES, None)
    return {"enableInTreeAutoscaling": True, "autoscalerOptions": options}


def head_group(
    container: dict[str, Any],
    *,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
    pod_spec: dict[str, Any] | None = None,
    sidecars: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """A head group whose Ray holds no CPUs: tasks, actors and Serve replicas go to workers,
    so a head restart never takes work with it. The Ray container comes first (KubeRay's
    rule), then any `sidecars`."""
    metadata: dict[str, Any] = {"labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "rayStartParams": {"num-cpus": "0"},
        "template": {"metadata": metadata, "spec": {"containers": [container, *sidecars], **(pod_spec or {})}},
    }


def worker_group(
    *,
    group_name: str,
    min_replicas: int,
    max_replicas: int,
    container: dict[str, Any],
    labels: dict[str, str],
    accelerator: Accelerator | None = None,
    devices: int = 0,
    pod_spec: dict[str, Any] | None = None,
    ray_resources: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A worker group; on an accelerator, with the Ray resources Ray cannot derive from the
    pod's device request (Neuron: the cores per chip), plus `ray_resources` (custom ones the
    group's workers advertise)."""
    group: dict[str, Any] = {
        "groupName": group_name,
        "replicas": min_replicas,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "rayStartParams": {},
    }
    resources = dict(accelerator.ray_device.worker_group_resources(devices)) if accelerator is not None else {}
    resources.update(ray_resources or {})
    if resources:
        group["resources"] = resources
    group["template"] = {"metadata": {"labels": labels}, "spec": {"containers": [container], **(pod_spec or {})}}
    return group
