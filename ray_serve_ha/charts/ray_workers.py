"""The RayService's workers: how many pods, of what size, on which accelerator, and their
worker groups (one, or one per capacity type when spot replicas run above an on-demand floor).
Plain data, no cdk8s: the RayService chart (ray_serve_ha/charts/rayservice.py) builds the
groups' pod specs from it."""

from __future__ import annotations

from dataclasses import dataclass

from ray_serve_ha.charts.accelerators import Accelerator
from ray_serve_ha.charts.ray_pods import PodResources, worker_pod_resources
from ray_serve_ha.charts.serve_config import (
    CPU_ENGINE,
    DEPLOYMENT_NAME,
    MIN_REPLICAS,
    SPOT_DEPLOYMENT_NAME,
    Engine,
)


@dataclass(frozen=True)
class WorkerGroupPlan:
    """One worker group: its name and bounds, the capacity type its nodes must have (None:
    any the accelerator's capacity offers) and the Serve deployment its replicas belong to."""

    name: str
    min_replicas: int
    max_replicas: int
    capacity_type: str | None
    deployment: str


@dataclass(frozen=True)
class RayWorkers:
    """The worker group: where it runs, what each pod gets, how many pods."""

    resources: PodResources
    # None: CPU-only workers that land on any node (the kind profile).
    accelerator: Accelerator | None = None
    min_replicas: int = MIN_REPLICAS
    max_replicas: int = MIN_REPLICAS
    # None: one worker group on the accelerator's on-demand capacity. A number: a fixed group
    # of that many workers on on-demand nodes (the Serve floor's) and a group on spot nodes for
    # the rest (min_replicas - floor to max_replicas - floor), each advertising its capacity
    # type's Ray resource (ray_serve_ha/charts/serve_config.py, CAPACITY_RESOURCES).
    on_demand_replicas: int | None = None

    def __post_init__(self) -> None:
        if self.on_demand_replicas is not None and not 1 <= self.on_demand_replicas < self.min_replicas:
            raise ValueError(
                f"workers on_demand_replicas={self.on_demand_replicas}: must be from 1 to min_replicas - 1 "
                f"({self.min_replicas - 1}), so that at least one worker runs on spot"
            )
        if self.min_replicas < MIN_REPLICAS:
            raise ValueError(
                f"workers min_replicas={self.min_replicas}: at least {MIN_REPLICAS} worker pods are "
                "needed to keep two Serve replicas on two nodes"
            )
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"workers max_replicas={self.max_replicas} is below min_replicas={self.min_replicas}"
            )
        if (self.accelerator is None) != (self.resources.devices == 0):
            raise ValueError(
                "accelerator workers need devices > 0 and CPU-only workers none; got "
                f"accelerator={self.accelerator.name if self.accelerator else None}, "
                f"devices={self.resources.devices}"
            )

    @property
    def group_name(self) -> str:
        return self.accelerator.name if self.accelerator else "cpu"

    def groups(self) -> list[WorkerGroupPlan]:
        """The worker groups: one, or (with an on-demand floor) one per capacity type."""
        floor = self.on_demand_replicas
        if floor is None:
            return [WorkerGroupPlan(self.group_name, self.min_replicas, self.max_replicas, None, DEPLOYMENT_NAME)]
        return [
            WorkerGroupPlan(f"{self.group_name}-on-demand", floor, floor, "on-demand", DEPLOYMENT_NAME),
            WorkerGroupPlan(
                f"{self.group_name}-spot", self.min_replicas - floor, self.max_replicas - floor, "spot",
                SPOT_DEPLOYMENT_NAME,
            ),
        ]

    @property
    def engine(self) -> Engine:
        return self.accelerator.engine if self.accelerator else CPU_ENGINE  # type: ignore[return-value]


def accelerator_workers(
    accelerator: Accelerator,
    instance_types: tuple[str, ...],
    min_replicas: int,
    max_replicas: int,
    on_demand_replicas: int | None = None,
) -> RayWorkers:
    """One worker pod per accelerator node, sized to fit the smallest of `instance_types`
    (by Karpenter's allocatable estimate, see ray_serve_ha/charts/accelerators.py), with all its devices:
    one worker, and one Serve replica, per node."""
    return RayWorkers(
        resources=worker_pod_resources(accelerator.worker_size(instance_types)),
        accelerator=accelerator,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        on_demand_replicas=on_demand_replicas,
    )
