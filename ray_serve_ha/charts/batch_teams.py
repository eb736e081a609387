"""Batch teams, without Kubernetes objects: a team's name, namespace, worker shape and
bounds, the rules they must meet, and the names, labels and taints derived from them. The
charts (batch.py), the stack that gives a team its node group, and the settings (which check
teams before anything is built) read this module; it needs no cdk8s.

Isolation rests on one label and one taint per team, both `ray-serve-ha.dev/team=<team>`:
the team's capacity carries both, and only the team's Ray workers tolerate that taint (by
value: a worker of team A does not tolerate team B's taint) and select that label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ray_serve_ha.charts import constants, job_args
from ray_serve_ha.charts.accelerators import ACCELERATORS, Accelerator
from ray_serve_ha.charts.pod_requests import BATCH_HEAD_RESOURCES
from ray_serve_ha.charts.ray_pods import (
    DNS_1035_LABEL,
    MAX_RAYJOB_NAME_LENGTH,
    PodResources,
    worker_pod_resources,
)

# Label on a team's nodes and pods, and key of the taint on its nodes (value: the team name).
TEAM_LABEL = constants.TEAM_LABEL
TEAM_TAINT_KEY = TEAM_LABEL
TAINT_EFFECT = "NoSchedule"

CapacityType = Literal["on-demand", "spot"]
CAPACITY_TYPES: tuple[str, ...] = ("on-demand", "spot")

# The longest name made from a team name is a RayJob's, `<team>-<job>` (KubeRay refuses
# RayJob names over 47 characters, RayCluster names over 53), for the longest job name.
# Computed when asked, so that a job added to the registry (batch/) shortens it at once.
def longest_job_suffix() -> str:
    """The longest suffix a team's RayJob names get: `-<job>` for each job in batch/."""
    return max((f"-{job}" for job in job_args.JOB_ARGUMENTS), key=len)


def max_team_name_length() -> int:
    return MAX_RAYJOB_NAME_LENGTH - len(longest_job_suffix())


_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_DNS_LABEL_LENGTH = 63
# Namespaces a team must not share: the serving system's, the operators' and Kubernetes'.
RESERVED_NAMESPACES = frozenset(
    {
        constants.SERVING_NAMESPACE,
        constants.KUBERAY_NAMESPACE,
        constants.EXTERNAL_SECRETS_NAMESPACE,
        *(accelerator.device_plugin.namespace for accelerator in ACCELERATORS.values()),
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
    }
)

@dataclass(frozen=True)
class CpuWorkerShape:
    """A CPU-only worker pod: whole CPUs (Ray counts whole CPUs) and memory in GiB."""

    cpus: int
    memory_gib: int

    def __post_init__(self) -> None:
        if self.cpus < 1 or self.memory_gib < 1:
            raise ValueError(
                f"CPU worker shape cpus={self.cpus}, memory_gib={self.memory_gib}: both must be at least 1"
            )


@dataclass(frozen=True)
class AcceleratorWorkerShape:
    """A worker pod that takes one whole accelerator node of `instance_type`."""

    accelerator: Accelerator
    instance_type: str

    def __post_init__(self) -> None:
        if self.instance_type not in self.accelerator.instance_types:
            raise ValueError(
                f"instance type {self.instance_type!r} is not a {self.accelerator.name} instance type: "
                f"{', '.join(self.accelerator.instance_types)}"
            )


WorkerShape = CpuWorkerShape | AcceleratorWorkerShape


@dataclass(frozen=True)
class BatchTeam:
    """A data-science team: its namespace, its Ray image and the capacity its workers get."""

    name: str
    namespace: str
    # Must hold Ray 2.60 and the job libraries (xgboost, torch) for the team's jobs.
    ray_image: str
    worker_shape: WorkerShape
    # 0 lets the cluster scale to no workers (and no team nodes) between jobs.
    min_workers: int = 0
    max_workers: int = 2
    capacity_type: CapacityType = "on-demand"
    head_resources: PodResources = BATCH_HEAD_RESOURCES

    def __post_init__(self) -> None:
        problem = team_problem(
            self.name, self.namespace, min_workers=self.min_workers, max_workers=self.max_workers,
            capacity_type=self.capacity_type,
        )
        if problem is None and (not self.ray_image or any(c.isspace() for c in self.ray_image)):
            problem = f"team {self.name!r} ray_image {self.ray_image!r} must be an image reference"
        if problem is None and not isinstance(self.worker_shape, (CpuWorkerShape, AcceleratorWorkerShape)):
            problem = (
                f"team {self.name!r} worker_shape must be a CpuWorkerShape or an AcceleratorWorkerShape, "
                f"got {type(self.worker_shape).__name__}"
            )
        if problem is not None:
            raise ValueError(problem)

    @property
    def accelerator(self) -> Accelerator | None:
        shape = self.worker_shape
        return shape.accelerator if isinstance(shape, AcceleratorWorkerShape) else None


def check_distinct_teams(teams: Sequence[BatchTeam]) -> None:
    """Two teams may share neither a name (node pools, labels) nor a namespace."""
    problem = distinct_teams_problem([(team.name, team.namespace) for team in teams])
    if problem is not None:
        raise ValueError(problem)


# --- the rules, on plain values (the settings check teams with them before any is built) ----

def team_problem(
    name: str, namespace: str, *, min_workers: int, max_workers: int, capacity_type: str
) -> str | None:
    """The first rule a team's name, namespace, worker bounds or capacity type breaks."""
    if len(name) > max_team_name_length():
        return (
            f"team name {name!r} is {len(name)} characters long; at most {max_team_name_length()} "
            "are allowed because the team's RayCluster and RayJob names are made from it"
        )
    if not DNS_1035_LABEL.match(name):
        return (
            f"team name {name!r} is not a DNS-1035 label: use lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    if len(namespace) > _MAX_DNS_LABEL_LENGTH or not _DNS_1123_LABEL.match(namespace):
        return (
            f"team {name!r} namespace {namespace!r} is not a DNS-1123 label: at most 63 "
            "lowercase letters, digits and '-', starting and ending with a letter or digit"
        )
    if namespace in RESERVED_NAMESPACES:
        return (
            f"team {name!r} namespace {namespace!r} is reserved; a team needs a namespace "
            f"of its own, not one of: {', '.join(sorted(RESERVED_NAMESPACES))}"
        )
    if min_workers < 0 or max_workers < 1:
        return (
            f"team {name!r} min_workers={min_workers}, max_workers={max_workers}: "
            "min_workers must be at least 0 and max_workers at least 1"
        )
    if min_workers > max_workers:
        return f"team {name!r} min_workers={min_workers} is above max_workers={max_workers}"
    if capacity_type not in CAPACITY_TYPES:
        return f"team {name!r} capacity_type {capacity_type!r} must be one of: {', '.join(CAPACITY_TYPES)}"
    return None


def distinct_teams_problem(teams: Sequence[tuple[str, str]]) -> str | None:
    """Two teams of (name, namespace) that share either: the first such value, said."""
    for index, attribute in enumerate(("name", "namespace")):
        seen: set[str] = set()
        for team in teams:
            value = team[index]
            if value in seen:
                return f"two teams have the {attribute} {value!r}; each team needs its own"
            seen.add(value)
    return None


# --- names -----------------------------------------------------------------------------

def raycluster_name(team: BatchTeam) -> str:
    return f"{team.name}-ray"


def node_pool_name(team: BatchTeam) -> str:
    return f"team-{team.name}"


def dashboard_url(team: BatchTeam) -> str:
    """The team cluster's dashboard (Job Submission API), from inside the Kubernetes cluster."""
    host = f"{raycluster_name(team)}-head-svc.{team.namespace}.svc.cluster.local"
    return f"http://{host}:{constants.DASHBOARD_PORT}"


# --- where a team's workers run --------------------------------------------------------

@dataclass(frozen=True)
class NodeTaint:
    """A node taint; `effect` as Kubernetes names it (aws_eks_v2.TaintEffect.NO_SCHEDULE)."""

    key: str
    value: str | None = None
    effect: str = TAINT_EFFECT

    def manifest(self) -> dict[str, str]:
        taint = {"key": self.key, "effect": self.effect}
        if self.value is not None:
            taint["value"] = self.value
        return taint

    def toleration(self) -> dict[str, str]:
        """Tolerates this taint only: by value where it has one."""
        if self.value is None:
            return {"key": self.key, "operator": "Exists", "effect": self.effect}
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


def team_node_labels(team: BatchTeam) -> dict[str, str]:
    """Labels on every node of the team's capacity, NodePool or node group alike."""
    labels = {TEAM_LABEL: team.name}
    if team.accelerator is not None:
        # The device plugins select accelerator nodes by this label in node-groups mode.
        labels.update(team.accelerator.node_labels())
    return labels


def team_node_taints(team: BatchTeam) -> tuple[NodeTaint, ...]:
    """Taints on every node of the team's capacity: the team's, and the accelerator's."""
    taints = [NodeTaint(key=TEAM_TAINT_KEY, value=team.name)]
    if team.accelerator is not None:
        taints.append(NodeTaint(key=team.accelerator.taint_key))
    return tuple(taints)


def team_node_group_labels(team: BatchTeam) -> dict[str, str]:
    """Labels for the team's managed node group (node-groups mode)."""
    return team_node_labels(team)


def team_node_group_taint(team: BatchTeam) -> NodeTaint:
    """The taint that reserves a node group for the team (`ray-serve-ha.dev/team=<team>:NoSchedule`)."""
    return team_node_taints(team)[0]


def team_node_group_taints(team: BatchTeam) -> tuple[NodeTaint, ...]:
    """Every taint for the team's managed node group: the team's, plus the accelerator's."""
    return team_node_taints(team)


def team_node_group_capacity_type(team: BatchTeam) -> str:
    """The node group capacity type, as aws_eks_v2.CapacityType names it."""
    return constants.NODE_GROUP_CAPACITY_TYPES[team.capacity_type]


def worker_resources(team: BatchTeam) -> PodResources:
    shape = team.worker_shape
    if isinstance(shape, CpuWorkerShape):
        return PodResources(cpu=str(shape.cpus), memory=f"{shape.memory_gib}Gi")
    # The serving workers' sizing: Karpenter's allocatable estimate less DaemonSets and a margin.
    return worker_pod_resources(shape.accelerator.worker_size((shape.instance_type,)))


