"""Ray on EKS for batch work: one long-lived, autoscaling Ray cluster per data-science team,
in the team's own namespace, on nodes only that team's pods may use. The jobs submitted to
it are in ray_serve_ha/charts/batch_jobs.py.

Isolation rests on one label and one taint per team, both `ray-serve-ha.dev/team=<team>`:
the team's capacity (a Karpenter NodePool in EKS Auto Mode, or a managed node group) carries
both, and only the team's Ray workers tolerate that taint (by value: a worker of team A does
not tolerate team B's taint) and select that label. The Ray head holds no work (`num-cpus: 0`)
and stays on on-demand general capacity, so a Spot interruption never takes a cluster down.

Jobs run on the team's cluster (RayJob `clusterSelector`), not on a cluster of their own:
the cluster, its autoscaler and its warm nodes outlive each job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cdk8s
from constructs import Construct

from ray_serve_ha.assets import asset_path
from ray_serve_ha.charts import constants, job_args
from ray_serve_ha.charts.accelerators import ACCELERATORS, Accelerator
from ray_serve_ha.charts.namespace import namespace_manifest
from ray_serve_ha.charts.node_pool import capacity_requirements, instance_type_requirements, node_pool
from ray_serve_ha.charts.objects import add_api_object
from ray_serve_ha.charts.ray_pods import (
    DNS_1035_LABEL,
    MAX_RAYJOB_NAME_LENGTH,
    RAY_VERSION,
    PodResources,
    autoscaling,
    container_resources,
    head_group,
    on_demand_capacity_affinity,
    worker_group,
    worker_pod_resources,
)

# Label on a team's nodes and pods, and key of the taint on its nodes (value: the team name).
TEAM_LABEL = constants.TEAM_LABEL
TEAM_TAINT_KEY = TEAM_LABEL
TAINT_EFFECT = "NoSchedule"

CapacityType = Literal["on-demand", "spot"]
CAPACITY_TYPES: tuple[str, ...] = ("on-demand", "spot")
# Managed node groups name capacity types as aws_eks_v2.CapacityType does.
NODE_GROUP_CAPACITY_TYPES = {"on-demand": "ON_DEMAND", "spot": "SPOT"}

# The job scripts (batch/), mounted on the head from a ConfigMap: RayJob entrypoints run there.
SCRIPTS_CONFIG_MAP = "batch-scripts"
SCRIPTS_MOUNT_PATH = "/home/ray/batch"
# What every job script imports from beside it (a file of batch/).
RUNNER_MODULE = "job_runner.py"


def job_files() -> dict[str, str]:
    """Every file a job needs, by its path under the scripts' folder: the job scripts and
    their runner (batch/), and their argument spec (job_args.py) at its import path, since
    the Ray heads have no ray_serve_ha installed. The ConfigMap carries them, and
    `python -m batch.submit` uploads the same files."""
    folder = asset_path("batch")
    scripts = sorted([*(spec.script for spec in job_args.JOB_ARGUMENTS.values()), RUNNER_MODULE])
    files = {name: (folder / name).read_text() for name in scripts}
    files[job_args.__name__.replace(".", "/") + ".py"] = Path(job_args.__file__).read_text()
    return files


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

# The head runs the GCS, the dashboard, the autoscaler's view and every job's driver.
BATCH_HEAD_RESOURCES = PodResources(cpu="2", memory="8Gi")
# Idle workers go after 5 minutes: long enough to keep a node warm between the jobs of one
# session (a Ray image takes minutes to pull), short enough not to pay for an idle night.
WORKER_IDLE_TIMEOUT_S = 300
# Empty team nodes go a minute after their last worker: the autoscaler already waited.
NODE_CONSOLIDATE_AFTER = "1m"
# Karpenter sizes CPU nodes to the pending pods plus DaemonSets; the pool's limit allows twice
# the workers' requests so that rounding up to an instance size never blocks a worker.
CPU_NODE_LIMIT_FACTOR = 2


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
        if len(self.name) > max_team_name_length():
            raise ValueError(
                f"team name {self.name!r} is {len(self.name)} characters long; at most {max_team_name_length()} "
                "are allowed because the team's RayCluster and RayJob names are made from it"
            )
        if not DNS_1035_LABEL.match(self.name):
            raise ValueError(
                f"team name {self.name!r} is not a DNS-1035 label: use lowercase letters, digits and '-', "
                "starting with a letter and ending with a letter or digit"
            )
        if len(self.namespace) > _MAX_DNS_LABEL_LENGTH or not _DNS_1123_LABEL.match(self.namespace):
            raise ValueError(
                f"team {self.name!r} namespace {self.namespace!r} is not a DNS-1123 label: at most 63 "
                "lowercase letters, digits and '-', starting and ending with a letter or digit"
            )
        if self.namespace in RESERVED_NAMESPACES:
            raise ValueError(
                f"team {self.name!r} namespace {self.namespace!r} is reserved; a team needs a namespace "
                f"of its own, not one of: {', '.join(sorted(RESERVED_NAMESPACES))}"
            )
        if not self.ray_image or any(c.isspace() for c in self.ray_image):
            raise ValueError(f"team {self.name!r} ray_image {self.ray_image!r} must be an image reference")
        if not isinstance(self.worker_shape, (CpuWorkerShape, AcceleratorWorkerShape)):
            raise ValueError(
                f"team {self.name!r} worker_shape must be a CpuWorkerShape or an AcceleratorWorkerShape, "
                f"got {type(self.worker_shape).__name__}"
            )
        if self.min_workers < 0 or self.max_workers < 1:
            raise ValueError(
                f"team {self.name!r} min_workers={self.min_workers}, max_workers={self.max_workers}: "
                "min_workers must be at least 0 and max_workers at least 1"
            )
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"team {self.name!r} min_workers={self.min_workers} is above max_workers={self.max_workers}"
            )
        if self.capacity_type not in CAPACITY_TYPES:
            raise ValueError(
                f"team {self.name!r} capacity_type {self.capacity_type!r} must be one of: {', '.join(CAPACITY_TYPES)}"
            )

    @property
    def accelerator(self) -> Accelerator | None:
        shape = self.worker_shape
        return shape.accelerator if isinstance(shape, AcceleratorWorkerShape) else None


def check_distinct_teams(teams: Sequence[BatchTeam]) -> None:
    """Two teams may share neither a name (node pools, labels) nor a namespace."""
    for attribute in ("name", "namespace"):
        seen: set[str] = set()
        for team in teams:
            value = getattr(team, attribute)
            if value in seen:
                raise ValueError(f"two teams have the {attribute} {value!r}; each team needs its own")
            seen.add(value)


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
    return NODE_GROUP_CAPACITY_TYPES[team.capacity_type]


def worker_resources(team: BatchTeam) -> PodResources:
    shape = team.worker_shape
    if isinstance(shape, CpuWorkerShape):
        return PodResources(cpu=str(shape.cpus), memory=f"{shape.memory_gib}Gi")
    # The serving workers' sizing: Karpenter's allocatable estimate less DaemonSets and a margin.
    return worker_pod_resources(shape.accelerator.worker_size((shape.instance_type,)))


# --- manifests -------------------------------------------------------------------------

def team_namespace(team: BatchTeam) -> dict[str, Any]:
    manifest = namespace_manifest(team.namespace)
    manifest["metadata"]["labels"] = {**manifest["metadata"]["labels"], TEAM_LABEL: team.name}
    return manifest


def _node_pool_requirements(team: BatchTeam) -> list[dict[str, Any]]:
    shape = team.worker_shape
    if isinstance(shape, AcceleratorWorkerShape):
        placement = instance_type_requirements(shape.accelerator, (shape.instance_type,))
    else:
        # What Auto Mode's own general-purpose pool offers; Karpenter picks the size.
        placement = [
            {"key": "eks.amazonaws.com/instance-category", "operator": "In", "values": ["c", "m", "r"]},
            {"key": "eks.amazonaws.com/instance-generation", "operator": "Gt", "values": ["4"]},
        ]
    return [*placement, *capacity_requirements(team.capacity_type)]


def _node_pool_limits(team: BatchTeam) -> dict[str, str]:
    shape = team.worker_shape
    if isinstance(shape, AcceleratorWorkerShape):
        # One worker per node: the pool never needs more than max_workers nodes.
        size = shape.accelerator.instance_types[shape.instance_type]
        return {"cpu": str(team.max_workers * size.vcpus), "memory": f"{team.max_workers * size.memory_gib}Gi"}
    return {
        "cpu": str(CPU_NODE_LIMIT_FACTOR * team.max_workers * shape.cpus),
        "memory": f"{CPU_NODE_LIMIT_FACTOR * team.max_workers * shape.memory_gib}Gi",
    }


def team_node_pool(team: BatchTeam) -> dict[str, Any]:
    """The team's Karpenter NodePool for EKS Auto Mode (cluster-scoped)."""
    return node_pool(
        node_pool_name(team),
        labels={TEAM_LABEL: team.name},
        node_labels=team_node_labels(team),
        taints=[taint.manifest() for taint in team_node_taints(team)],
        requirements=_node_pool_requirements(team),
        limits=_node_pool_limits(team),
        # Only empty nodes go: consolidating a busy node would restart a training run.
        disruption={"consolidationPolicy": "WhenEmpty", "consolidateAfter": NODE_CONSOLIDATE_AFTER},
    )


def _head_group(team: BatchTeam) -> dict[str, Any]:
    # No work on the head (ray_pods.head_group): tasks and Ray Train workers go to the
    # team's workers, and the head (the whole cluster) never sits on a team's Spot node.
    return head_group(
        {
            "name": "ray-head",
            "image": team.ray_image,
            "resources": container_resources(team.head_resources, None),
            # RayJob entrypoints run here, from the scripts in this mount.
            "volumeMounts": [{"name": SCRIPTS_CONFIG_MAP, "mountPath": SCRIPTS_MOUNT_PATH, "readOnly": True}],
        },
        labels={TEAM_LABEL: team.name},
        # Karpenter leaves the head's node alone while it runs: moving it ends every job.
        annotations={"karpenter.sh/do-not-disrupt": "true"},
        pod_spec={
            "volumes": [{"name": SCRIPTS_CONFIG_MAP, "configMap": {"name": SCRIPTS_CONFIG_MAP, "items": [
                {"key": PurePosixPath(path).name, "path": path} for path in job_files()
            ]}}],
            "affinity": on_demand_capacity_affinity(),
        },
    )


def _worker_group(team: BatchTeam) -> dict[str, Any]:
    accelerator = team.accelerator
    resources = worker_resources(team)
    return worker_group(
        group_name=accelerator.name if accelerator else "cpu",
        min_replicas=team.min_workers,
        max_replicas=team.max_workers,
        container={
            "name": "ray-worker",
            "image": team.ray_image,
            "resources": container_resources(resources, accelerator),
        },
        labels={TEAM_LABEL: team.name},
        accelerator=accelerator,
        devices=resources.devices,
        pod_spec={
            # The team's nodes and no others: the label only the team's nodes carry, and
            # tolerations for exactly the taints those nodes have.
            "nodeSelector": team_node_labels(team),
            "tolerations": [taint.toleration() for taint in team_node_taints(team)],
        },
    )


def team_raycluster(team: BatchTeam) -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": raycluster_name(team), "namespace": team.namespace, "labels": {TEAM_LABEL: team.name}},
        "spec": {
            "rayVersion": RAY_VERSION,
            # The operator makes a token Secret and sets it on every Ray container and on RayJob
            # submitters (KubeRay >= 1.5.1): other teams' pods cannot drive this dashboard.
            "authOptions": {"mode": "token"},
            # Jobs ask for workers; Ray's autoscaler adds pods, Karpenter (or the Cluster
            # Autoscaler) adds nodes for them, and both go away when the workers are idle.
            **autoscaling(WORKER_IDLE_TIMEOUT_S, upscaling_mode="Default"),
            "headGroupSpec": _head_group(team),
            "workerGroupSpecs": [_worker_group(team)],
        },
    }


def team_job_scripts(team: BatchTeam) -> dict[str, Any]:
    """The job files, as the ConfigMap the head mounts (files update in place on change): one
    key per file, placed at its path by the head's volume."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": SCRIPTS_CONFIG_MAP, "namespace": team.namespace, "labels": {TEAM_LABEL: team.name}},
        "data": {PurePosixPath(path).name: text for path, text in job_files().items()},
    }


# --- charts ----------------------------------------------------------------------------

class BatchTeamChart(cdk8s.Chart):
    """A team's namespace, job scripts and Ray cluster, and (EKS Auto Mode) its NodePool.
    Its jobs are batch_jobs.BatchJobsChart.

    In node-groups mode (`node_pool=False`) the stack gives the team a managed node group
    with `team_node_group_labels`, `team_node_group_taints` and `team_node_group_capacity_type`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, team: BatchTeam, node_pool: bool = True) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.team = team
        self.namespace_object = add_api_object(self, team_namespace(team))
        self.node_pool = add_api_object(self, team_node_pool(team)) if node_pool else None
        self.job_scripts = add_api_object(self, team_job_scripts(team))
        self.raycluster = add_api_object(self, team_raycluster(team))
        # Emitted after the namespace, and the head mounts the scripts at start.
        self.job_scripts.add_dependency(self.namespace_object)
        self.raycluster.add_dependency(self.job_scripts)
