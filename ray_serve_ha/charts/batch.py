"""Ray on EKS for batch work: one long-lived, autoscaling Ray cluster per data-science team,
in the team's own namespace, on nodes only that team's pods may use. The teams themselves
(names, shapes, rules, labels and taints) are in batch_teams.py; the jobs submitted to them
in batch_jobs.py.

The team's capacity (a Karpenter NodePool in EKS Auto Mode, or a managed node group) carries
the team's label and taint. The Ray head holds no work (`num-cpus: 0`) and stays on
on-demand general capacity, so a Spot interruption never takes a cluster down.

Jobs run on the team's cluster (RayJob `clusterSelector`), not on a cluster of their own:
the cluster, its autoscaler and its warm nodes outlive each job.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import cdk8s
from constructs import Construct

from ray_serve_ha.assets import asset_path
from ray_serve_ha.charts import job_args
from ray_serve_ha.charts.batch_teams import (
    TEAM_LABEL,
    AcceleratorWorkerShape,
    BatchTeam,
    node_pool_name,
    raycluster_name,
    team_node_labels,
    team_node_taints,
    worker_resources,
)
from ray_serve_ha.charts.namespace import namespace_manifest
from ray_serve_ha.charts.node_pool import capacity_requirements, instance_type_requirements, node_pool
from ray_serve_ha.charts.objects import add_api_object
from ray_serve_ha.charts.ray_pods import (
    RAY_VERSION,
    autoscaling,
    container_resources,
    head_group,
    on_demand_capacity_affinity,
    worker_group,
)

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

# Idle workers go after 5 minutes: long enough to keep a node warm between the jobs of one
# session (a Ray image takes minutes to pull), short enough not to pay for an idle night.
WORKER_IDLE_TIMEOUT_S = 300
# Empty team nodes go a minute after their last worker: the autoscaler already waited.
NODE_CONSOLIDATE_AFTER = "1m"
# Karpenter sizes CPU nodes to the pending pods plus DaemonSets; the pool's limit allows twice
# the workers' requests so that rounding up to an instance size never blocks a worker.
CPU_NODE_LIMIT_FACTOR = 2


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
