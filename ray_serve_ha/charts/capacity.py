"""The serving capacity: how the cluster provisions nodes (one `CapacityMode` type), how many
accelerator nodes the workers get by default, and what the stacks build it from
(`ServingCapacity`: the accelerator, its instance types and node bounds, the disks and the
system node group, computed by the capacity plan). Plain data, without cdk8s: the settings
and the charts CLI read the same defaults as the constructs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from ray_serve_ha.charts.accelerators import Accelerator
from ray_serve_ha.charts.capacity_plan import (
    NodeDisk,
    SystemNodes,
    accelerator_node_disk,
    system_node_disk,
    system_nodes,
    team_node_disk,
)
from ray_serve_ha.charts.images import ContainerImage
from ray_serve_ha.charts.models import DEFAULT_MODEL, Model
from ray_serve_ha.charts.serve_config import MIN_REPLICAS


class CapacityMode(StrEnum):
    """How the cluster gets its nodes: EKS Auto Mode with the project's Karpenter NodePools, or
    managed node groups (with the Cluster Autoscaler and the device plugins)."""

    AUTO_MODE = "auto-mode"
    NODE_GROUPS = "node-groups"


class ServingCapacityType(StrEnum):
    """What the serving workers run on: all on on-demand nodes, or an on-demand floor of
    replicas (`on_demand_replicas`) with the rest on spot nodes (the cost of each:
    docs/measurements.md; what each keeps serving: docs/operating.md, Spot interruptions)."""

    ON_DEMAND = "on-demand"
    MIXED = "mixed"


DEFAULT_CAPACITY_MODE = CapacityMode.AUTO_MODE
DEFAULT_SERVING_CAPACITY_TYPE = ServingCapacityType.ON_DEMAND
# With `mixed`: the replicas no spot interruption can take.
DEFAULT_ON_DEMAND_REPLICAS = 1
# The serving workers, one per accelerator node: at least the two Serve replicas (one per
# node), and room for the autoscaler to add two more.
DEFAULT_MIN_NODES = MIN_REPLICAS
DEFAULT_MAX_NODES = 4


@dataclass(frozen=True)
class NodeDisks:
    """What each kind of node keeps on its disk (capacity_plan.py), and the disks."""

    accelerator: NodeDisk
    # The serving nodes' disk: acceleratorNodeDiskGib, or what `accelerator` needs.
    accelerator_gib: int
    # Nodes of the Ray heads and the UI (node-groups: the system group; Auto Mode: the heads pool).
    system: NodeDisk
    # Each batch team's nodes, by team name.
    teams: dict[str, NodeDisk]


@dataclass(frozen=True)
class ServingCapacity:
    """What the cluster's capacity constructs build: the accelerator's nodes (its instance
    types, `min_nodes` to `max_nodes` workers), their disks, and (node-groups) the system
    node group that holds the Ray heads."""

    accelerator: Accelerator
    mode: CapacityMode
    instance_types: tuple[str, ...]
    min_nodes: int
    max_nodes: int
    disks: NodeDisks
    # node-groups mode: the system node group's type and bounds.
    system_nodes: SystemNodes
    # What the serving nodes hold (the spot instance types must hold it too).
    model: Model = DEFAULT_MODEL
    capacity_type: ServingCapacityType = DEFAULT_SERVING_CAPACITY_TYPE
    # With `mixed`: the workers (and Serve replicas) on on-demand nodes; the others run on spot.
    on_demand_replicas: int = DEFAULT_ON_DEMAND_REPLICAS

    @property
    def auto_mode(self) -> bool:
        return self.mode == CapacityMode.AUTO_MODE

    @property
    def floor(self) -> int | None:
        """The on-demand floor of workers and replicas; None: every worker is on-demand."""
        return self.on_demand_replicas if self.capacity_type == ServingCapacityType.MIXED else None

    @property
    def spot_instance_types(self) -> tuple[str, ...]:
        """The spot capacity's instance types (mixed): the configured ones first, then every
        other type of the accelerator's table with as many devices that holds the same worker
        (a worker pod sized for the configured types) and the model: more spot pools, fewer
        interruptions and shortages."""
        size = self.accelerator.worker_size(self.instance_types)
        others = [
            name for name, shape in self.accelerator.instance_types.items()
            if name not in self.instance_types
            and shape.devices == size.devices
            and shape.worker_cpus >= size.cpus
            and shape.worker_memory_gib >= size.memory_gib
            and self.accelerator.unfit_reason(name, self.model) is None
        ]
        return (*self.instance_types, *others)

    def on_demand_nodes(self) -> tuple[int, int]:
        """(min, max) accelerator nodes on on-demand capacity."""
        floor = self.floor
        return (self.min_nodes, self.max_nodes) if floor is None else (floor, floor)

    def spot_nodes(self) -> tuple[int, int]:
        """(min, max) accelerator nodes on spot capacity (0, 0 without spot)."""
        floor = self.floor
        return (0, 0) if floor is None else (self.min_nodes - floor, self.max_nodes - floor)


def serving_capacity(
    accelerator: Accelerator,
    *,
    mode: CapacityMode = DEFAULT_CAPACITY_MODE,
    instance_types: Sequence[str] | None = None,
    min_nodes: int = DEFAULT_MIN_NODES,
    max_nodes: int = DEFAULT_MAX_NODES,
    node_disk_gib: int | None = None,
    team_images: Mapping[str, ContainerImage] | None = None,
    model: Model = DEFAULT_MODEL,
    capacity_type: ServingCapacityType = DEFAULT_SERVING_CAPACITY_TYPE,
    on_demand_replicas: int = DEFAULT_ON_DEMAND_REPLICAS,
) -> ServingCapacity:
    """The capacity for `accelerator` (default instance type unless given), its disks sized
    from what each node keeps (a serving node's disk at least `node_disk_gib`), and the
    system nodes for the serving head and each batch team's head (`team_images`: team name ->
    the image its nodes pull); the serving nodes hold `model`."""
    teams = dict(team_images or {})
    serving = accelerator_node_disk(accelerator, model)
    return ServingCapacity(
        accelerator=accelerator,
        mode=CapacityMode(mode),
        instance_types=tuple(instance_types or (accelerator.default_instance_type,)),
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        disks=NodeDisks(
            accelerator=serving,
            accelerator_gib=node_disk_gib or serving.min_gib,
            system=system_node_disk(accelerator, list(teams.values())),
            teams={name: team_node_disk(name, image) for name, image in teams.items()},
        ),
        system_nodes=system_nodes(autoscaling=max_nodes > min_nodes, teams=list(teams)),
        model=model,
        capacity_type=ServingCapacityType(capacity_type),
        on_demand_replicas=on_demand_replicas,
    )
