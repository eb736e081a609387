"""How much of a node its pods may request: the scheduler's view of an instance type.

Worker sizes come from what Karpenter (and so EKS Auto Mode) estimates a node will have
allocatable *before* it launches one: a pod over that estimate stays Pending ("no instance
type satisfied resources") even when the real node would hold it. The accelerator table
(ray_serve_ha/charts/accelerators.py) lists its instance types as `InstanceShape`s; the
general-purpose types for CPU-only teams and the system nodes are here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# --- Karpenter's allocatable estimate ----------------------------------------------------
# karpenter-provider-aws pkg/providers/instancetype/types.go (`kubeReservedResources`,
# `evictionThreshold`) and the chart's `vmMemoryOverheadPercent` default.
VM_MEMORY_OVERHEAD_SHARE = 0.075
KUBE_RESERVED_MEMORY_MIB_PER_POD = 11
KUBE_RESERVED_MEMORY_BASE_MIB = 255
EVICTION_THRESHOLD_MIB = 100
# Millicores reserved for the kubelet per core: 60m for the first, 10m for the second, 5m
# each for cores 3-4, 2.5m for each core beyond.
_KUBE_RESERVED_CPU_MILLI = ((1, 60.0), (1, 10.0), (2, 5.0))
_KUBE_RESERVED_CPU_MILLI_BEYOND = 2.5

# --- what a worker leaves on its node ----------------------------------------------------
# DaemonSets on an accelerator or team node: VPC CNI (25m), kube-proxy (100m), the Pod
# Identity agent, the device plugin, and room for a monitoring agent a user adds.
DAEMONSET_CPU_MILLI = 500
DAEMONSET_MEMORY_MIB = 1024
# Auto Mode does not publish its exact node overhead (it runs its own agents on the node):
# keep a margin under Karpenter's estimate.
MARGIN_CPU_MILLI = 250
MARGIN_MEMORY_SHARE = 0.03



def kube_reserved_cpu_milli(vcpus: int) -> float:
    reserved, left = 0.0, vcpus
    for cores, per_core in _KUBE_RESERVED_CPU_MILLI:
        taken = min(cores, left)
        reserved += taken * per_core
        left -= taken
    return reserved + left * _KUBE_RESERVED_CPU_MILLI_BEYOND



@dataclass(frozen=True)
class InstanceShape:
    """One EC2 instance type, as EC2 describes it and as Karpenter estimates it."""

    vcpus: int
    memory_gib: int
    # Devices the device plugin advertises (Inferentia2 chips, NVIDIA GPUs); 0 for CPU types.
    devices: int = 0
    # Accelerator memory per device, GiB.
    device_memory_gib: int = 0
    # Pods the kubelet allows without prefix delegation (ENIs x (IPv4 per ENI - 1) + 2), from
    # aws/amazon-vpc-cni-k8s misc/eni-max-pods.txt (2026-08-20, b521883). Karpenter reserves
    # kubelet memory per pod, so it sizes what a pod may request.
    max_pods: int = 110

    @property
    def allocatable_cpu_milli(self) -> float:
        """Karpenter's estimate of the node's allocatable CPU."""
        return self.vcpus * 1000 - kube_reserved_cpu_milli(self.vcpus)

    @property
    def allocatable_memory_mib(self) -> float:
        """Karpenter's estimate of the node's allocatable memory."""
        capacity = self.memory_gib * 1024
        return (
            capacity
            - math.ceil(capacity * VM_MEMORY_OVERHEAD_SHARE)
            - (KUBE_RESERVED_MEMORY_MIB_PER_POD * self.max_pods + KUBE_RESERVED_MEMORY_BASE_MIB)
            - EVICTION_THRESHOLD_MIB
        )

    @property
    def pods_cpu_milli(self) -> float:
        """CPU the node's pods may request in all: the estimate less DaemonSets and a margin."""
        return self.allocatable_cpu_milli - DAEMONSET_CPU_MILLI - MARGIN_CPU_MILLI

    @property
    def pods_memory_mib(self) -> float:
        """Memory the node's pods may request in all: the estimate less DaemonSets and a margin."""
        return self.allocatable_memory_mib - DAEMONSET_MEMORY_MIB - self.memory_gib * 1024 * MARGIN_MEMORY_SHARE

    @property
    def worker_cpus(self) -> int:
        """Whole CPUs (Ray counts whole CPUs) a pod that takes the node may request."""
        return math.floor(self.pods_cpu_milli / 1000)

    @property
    def worker_memory_gib(self) -> int:
        """Memory a pod that takes the node may request."""
        return math.floor(self.pods_memory_mib / 1024)


@dataclass(frozen=True)
class WorkerSize:
    """What one worker pod that takes a whole node requests (requests equal limits)."""

    cpus: int
    memory_gib: int
    devices: int


# General-purpose types for CPU-only batch teams in node-groups mode and the system node
# group (m7i: 4 GiB per vCPU), smallest first; max pods as above.
CPU_INSTANCE_TYPES: dict[str, InstanceShape] = {
    "m7i.large": InstanceShape(vcpus=2, memory_gib=8, max_pods=29),
    "m7i.xlarge": InstanceShape(vcpus=4, memory_gib=16, max_pods=58),
    "m7i.2xlarge": InstanceShape(vcpus=8, memory_gib=32, max_pods=58),
    "m7i.4xlarge": InstanceShape(vcpus=16, memory_gib=64, max_pods=234),
    "m7i.8xlarge": InstanceShape(vcpus=32, memory_gib=128, max_pods=234),
    "m7i.16xlarge": InstanceShape(vcpus=64, memory_gib=256, max_pods=737),
}


def cpu_instance_type(cpus: int, memory_gib: int) -> str | None:
    """The smallest general-purpose type a worker of `cpus` and `memory_gib` fits on, by the
    same estimate as accelerator workers; None when none does."""
    for name, shape in CPU_INSTANCE_TYPES.items():
        if shape.worker_cpus >= cpus and shape.worker_memory_gib >= memory_gib:
            return name
    return None


@dataclass(frozen=True)
class PodRequest:
    """What one pod requests, for packing pods onto nodes."""

    what: str
    cpu_milli: float
    memory_mib: float


def nodes_to_hold(shape: InstanceShape, pods: list[PodRequest]) -> int:
    """How many nodes of `shape` hold `pods` (first fit, largest first: what the scheduler
    does no better than), each node offering what its pods may request by Karpenter's
    estimate. Raises ValueError for a pod no node of the shape can hold."""
    free: list[list[float]] = []
    for pod in sorted(pods, key=lambda p: (p.memory_mib, p.cpu_milli), reverse=True):
        if pod.cpu_milli > shape.pods_cpu_milli or pod.memory_mib > shape.pods_memory_mib:
            raise ValueError(
                f"{pod.what} ({pod.cpu_milli:g}m CPU, {pod.memory_mib:g} MiB) does not fit a node that offers its pods "
                f"{shape.pods_cpu_milli:g}m and {shape.pods_memory_mib:.0f} MiB"
            )
        for node in free:
            if pod.cpu_milli <= node[0] and pod.memory_mib <= node[1]:
                node[0] -= pod.cpu_milli
                node[1] -= pod.memory_mib
                break
        else:
            free.append([shape.pods_cpu_milli - pod.cpu_milli, shape.pods_memory_mib - pod.memory_mib])
    return len(free)
