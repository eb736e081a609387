"""What each kind of node must hold: its disk (images, weights, compile scratch) and, for
the system node group, how many nodes the Ray heads need.

Disks: a node keeps the images of every pod that may run on it, the model's weights and the
engine's compile scratch (serving nodes) or Ray's spill space (batch nodes), and the OS,
containerd and logs. The kubelet starts deleting images at 85 % of the disk
(`imageGCHighThresholdPercent`), so the disk is sized for the sum to stay below that, with a
margin because most sizes in ray_serve_ha/charts/images.py are estimates.

System nodes (node-groups mode): each Ray head is a pod the scheduler must place on a
system node (ray_serve_ha/charts/ray_pods.py keeps heads off accelerator and team nodes). The group is
sized from the pods it must hold, packed against what Karpenter's allocatable estimate
leaves the node's pods (ray_serve_ha/charts/accelerators.py): the serving head, a NewCluster upgrade's
second head, one head per batch team, the chat UI and the operators.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ray_serve_ha.charts.accelerators import ACCELERATORS, Accelerator
from ray_serve_ha.charts.constants import HEADS_NODE_CLASS, accelerator_node_class
from ray_serve_ha.charts.images import (
    ALL_IMAGES,
    BATCH_IMAGES,
    BATCH_SCRATCH_GB,
    DAEMONSET_IMAGES_GB,
    GRADIO,
    OPERATOR_IMAGES_GB,
    SERVING_IMAGES,
    ContainerImage,
)
from ray_serve_ha.charts.models import DEFAULT_MODEL, Model
from ray_serve_ha.charts.node_sizing import CPU_INSTANCE_TYPES, PodRequest, nodes_to_hold
from ray_serve_ha.charts.pod_requests import (
    BATCH_HEAD_RESOURCES,
    EKS_HEAD_RESOURCES,
    GRADIO_CPU_REQUEST_MILLI,
    GRADIO_MEMORY_REQUEST_MIB,
    GRADIO_REPLICAS,
)
from ray_serve_ha.charts.ray_pods import AUTOSCALER_RESOURCES, PodResources

_GB = 10**9
_GIB = 2**30

# The kubelet's default image garbage-collection threshold (imageGCHighThresholdPercent 85).
IMAGE_GC_HIGH_THRESHOLD = 0.85
# The OS (AL2023's root volume holds it with the images), containerd and kubelet state, and
# container logs (estimate).
NODE_RESERVE_GB = 10.0
# Most sizes are estimates (ray_serve_ha/charts/images.py): a quarter more.
ESTIMATE_MARGIN = 1.25
# Disks are whole multiples of this.
DISK_STEP_GIB = 10
# EKS Auto Mode's built-in NodeClass `default` (used by the built-in pools and by the batch
# teams' NodePools): its ephemeralStorage.size default, from the NodeClass schema
# (schemas/eks-auto-mode/, `spec.ephemeralStorage.default`).
AUTO_MODE_DEFAULT_DISK_GIB = 80

# node-groups mode: where the operators, the Ray heads and the UI run.
SYSTEM_INSTANCE_TYPE = "m7i.xlarge"
# The system group keeps two nodes at least, so that the operators survive a node's loss.
MIN_SYSTEM_NODES = 2
# EKS's quota of nodes per managed node group (Service Quotas, "Nodes per managed node group").
MAX_SYSTEM_NODES = 450
# Pods on the system nodes besides the Ray heads, with their requests: the KubeRay operator
# (chart 1.7: limits 100m / 512Mi, and so requests), CoreDNS (two replicas, 100m / 70Mi), the
# chat UI, and the GCS-FT Redis cleanup Job KubeRay runs when a RayCluster is deleted (a
# NewCluster upgrade deletes the old one; KubeRay sets 200m / 256Mi).
KUBERAY_OPERATOR_POD = PodRequest("the KubeRay operator", 100, 512)
COREDNS_POD = PodRequest("CoreDNS", 100, 70)
REDIS_CLEANUP_POD = PodRequest("the Redis cleanup Job", 200, 256)


@dataclass(frozen=True)
class NodeDisk:
    """What one kind of node keeps on its disk, and the disk that holds it."""

    role: str
    images: tuple[ContainerImage, ...]
    # Other contents: (what, GB).
    data: tuple[tuple[str, float], ...] = ()

    @property
    def used_gb(self) -> float:
        return (
            sum(image.unpacked_gb for image in self.images)
            + DAEMONSET_IMAGES_GB
            + sum(size for _, size in self.data)
            + NODE_RESERVE_GB
        )

    @property
    def min_gib(self) -> int:
        """The smallest disk (a multiple of DISK_STEP_GIB) that keeps `used_gb`, with the
        estimate margin, below the kubelet's image GC threshold."""
        gib = self.used_gb * ESTIMATE_MARGIN / IMAGE_GC_HIGH_THRESHOLD * _GB / _GIB
        return math.ceil(gib / DISK_STEP_GIB) * DISK_STEP_GIB

    def explain(self) -> str:
        parts = [f"{image.name} {image.unpacked_gb:g} GB" for image in self.images]
        parts += [f"{what} {size:g} GB" for what, size in self.data]
        parts += [f"DaemonSet images {DAEMONSET_IMAGES_GB:g} GB", f"OS and logs {NODE_RESERVE_GB:g} GB"]
        return (
            f"{' + '.join(parts)} = {self.used_gb:g} GB; with {ESTIMATE_MARGIN - 1:.0%} for estimates, below the "
            f"kubelet's {IMAGE_GC_HIGH_THRESHOLD:.0%} image GC threshold: {self.min_gib} GiB"
        )


def accelerator_node_disk(accelerator: Accelerator, model: Model = DEFAULT_MODEL) -> NodeDisk:
    """A serving worker's node: the serving image, the model's weights and the engine's scratch."""
    return NodeDisk(
        role=f"{accelerator.name} serving node",
        images=(SERVING_IMAGES[accelerator.dockerfile],),
        data=(
            ("model weights", model.weights_gb),
            (f"{accelerator.engine} compile scratch", accelerator.compile_scratch_gb),
        ),
    )


def system_node_disk(accelerator: Accelerator, team_images: Sequence[ContainerImage]) -> NodeDisk:
    """A node that runs Ray heads and the UI: the serving head (its autoscaler sidecar and the
    Redis cleanup Job use the same image), every team head's image, the UI, the operators.
    Any head may land on any such node, so each holds all of them; and a NewCluster upgrade
    that changes the serving image may start its new head beside the running one."""
    serving = SERVING_IMAGES[accelerator.dockerfile]
    return NodeDisk(
        role="Ray head node",
        images=(serving, *dict.fromkeys(team_images), GRADIO),
        data=(
            (f"an upgrade's new {serving.name} image", serving.unpacked_gb),
            ("operator images", OPERATOR_IMAGES_GB),
        ),
    )


def team_node_disk(team: str, image: ContainerImage) -> NodeDisk:
    """A batch team's worker node: its image and Ray's spill space."""
    return NodeDisk(
        role=f"team {team!r} node", images=(image,), data=(("Ray spill and job scratch", BATCH_SCRATCH_GB),)
    )


# --- the system node group -------------------------------------------------------------------

def _pod(what: str, *containers: PodResources) -> PodRequest:
    return PodRequest(
        what,
        sum(_cpu_milli(c.cpu) for c in containers),
        sum(_memory_mib(c.memory) for c in containers),
    )


def _cpu_milli(cpu: str) -> float:
    return float(cpu[:-1]) if cpu.endswith("m") else float(cpu) * 1000


def _memory_mib(memory: str) -> float:
    units = {"Gi": 1024, "Mi": 1}
    return float(memory[:-2]) * units[memory[-2:]]


def serving_head(autoscaling: bool) -> PodRequest:
    """The RayService head pod; with the autoscaler sidecar when its workers scale."""
    containers = (EKS_HEAD_RESOURCES, AUTOSCALER_RESOURCES) if autoscaling else (EKS_HEAD_RESOURCES,)
    return _pod("the serving Ray head", *containers)


def team_head(team: str) -> PodRequest:
    """A batch team's head pod (its autoscaler sidecar always runs)."""
    return _pod(f"team {team!r}'s Ray head", BATCH_HEAD_RESOURCES, AUTOSCALER_RESOURCES)


@dataclass(frozen=True)
class SystemNodes:
    """The system node group's bounds: `min_nodes` hold the steady state, `max_nodes` also a
    NewCluster upgrade's second head wherever the other pods happen to sit (the Cluster
    Autoscaler adds nodes up to it for a Pending pod)."""

    instance_type: str
    min_nodes: int
    max_nodes: int
    heads: int


def system_nodes(*, autoscaling: bool, teams: Sequence[str]) -> SystemNodes:
    shape = CPU_INSTANCE_TYPES[SYSTEM_INSTANCE_TYPE]
    ui = PodRequest("a chat UI replica", GRADIO_CPU_REQUEST_MILLI, GRADIO_MEMORY_REQUEST_MIB)
    heads = [serving_head(autoscaling), *(team_head(t) for t in teams)]
    others = [*[ui] * GRADIO_REPLICAS, KUBERAY_OPERATOR_POD, *[COREDNS_POD] * 2]
    # Steady state, packed tightly: what the group keeps running.
    min_nodes = max(MIN_SYSTEM_NODES, nodes_to_hold(shape, [*heads, *others]))
    # The scheduler spreads pods (it scores the least allocated node highest), so the small pods
    # may take a bit of every node and leave no room for a head that arrives later: the upper
    # bound gives the heads (with an upgrade's) nodes of their own, and the other pods theirs.
    upgrade_heads = [*heads, serving_head(autoscaling)]
    max_nodes = nodes_to_hold(shape, upgrade_heads) + nodes_to_hold(shape, [*others, REDIS_CLEANUP_POD])
    return SystemNodes(
        instance_type=SYSTEM_INSTANCE_TYPE,
        min_nodes=min_nodes,
        max_nodes=max(min_nodes, max_nodes),
        heads=len(upgrade_heads),
    )


# --- the docs' tables (`python -m ray_serve_ha.charts.capacity_plan`) ----------------------------------

def images_table() -> str:
    rows = ["| image | built on | unpacked | pulled | runs on | source of the sizes |", "|---|---|---|---|---|---|"]
    for image in ALL_IMAGES:
        rows.append(
            f"| `{image.dockerfile}` | `{image.base}` | {image.unpacked_gb:g} GB | {image.pulled_gb:g} GB | "
            f"{image.runs_on} | {image.basis} |"
        )
    return "\n".join(rows)


def disks_table() -> str:
    rows = ["| node | keeps | disk |", "|---|---|---|"]
    for accelerator in ACCELERATORS.values():
        serving = accelerator_node_disk(accelerator)
        rows.append(f"| {serving.role} (NodeClass `{accelerator_node_class(accelerator.name)}`, or the accelerator "
                    f"node group) | {serving.explain()} | {serving.min_gib} GiB |")
    for accelerator in ACCELERATORS.values():
        heads = system_node_disk(accelerator, ())
        rows.append(f"| Ray head node, {accelerator.name} serving, no teams (NodeClass `{HEADS_NODE_CLASS}`, or the "
                    f"system node group) | {heads.explain()} | {heads.min_gib} GiB |")
    for image in BATCH_IMAGES.values():
        team = team_node_disk("<name>", image)
        rows.append(f"| batch team node, {image.name} (Auto Mode: the default NodeClass's "
                    f"{AUTO_MODE_DEFAULT_DISK_GIB} GiB; or its node group) | {team.explain()} | {team.min_gib} GiB |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(images_table())
    print()
    print(disks_table())
