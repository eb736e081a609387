"""Two example batch teams (CPU, on demand; Inferentia2, spot) and how their objects are read:
the batch-team tests' shared input."""

from __future__ import annotations

from ray_serve_ha.charts.accelerators import NEURON
from ray_serve_ha.charts.batch import (
    team_job_scripts,
    team_namespace,
    team_node_pool,
    team_raycluster,
)
from ray_serve_ha.charts.batch_jobs import (
    pytorch_rayjob,
    xgboost_rayjob,
)
from ray_serve_ha.charts.batch_teams import (
    AcceleratorWorkerShape,
    BatchTeam,
    CpuWorkerShape,
)

CPU_TEAM = BatchTeam(
    name="analytics",
    namespace="team-analytics",
    ray_image="111122223333.dkr.ecr.us-east-2.amazonaws.com/ray-batch:cpu",
    worker_shape=CpuWorkerShape(cpus=4, memory_gib=16),
    min_workers=0,
    max_workers=4,
    capacity_type="on-demand",
)
NEURON_TEAM = BatchTeam(
    name="vision",
    namespace="team-vision",
    ray_image="111122223333.dkr.ecr.us-east-2.amazonaws.com/ray-batch:neuron",
    worker_shape=AcceleratorWorkerShape(accelerator=NEURON, instance_type="inf2.xlarge"),
    min_workers=1,
    max_workers=3,
    capacity_type="spot",
)
TEAMS = (CPU_TEAM, NEURON_TEAM)


def other(team: BatchTeam) -> BatchTeam:
    return NEURON_TEAM if team is CPU_TEAM else CPU_TEAM


def team_objects(team: BatchTeam) -> list[dict]:
    return [
        team_namespace(team),
        team_node_pool(team),
        team_job_scripts(team),
        team_raycluster(team),
        xgboost_rayjob(team),
        pytorch_rayjob(team),
    ]


ALL_OBJECTS = [obj for team in TEAMS for obj in team_objects(team)]


def worker_spec(team: BatchTeam) -> dict:
    (group,) = team_raycluster(team)["spec"]["workerGroupSpecs"]
    return group["template"]["spec"]


def tolerates(toleration: dict, taint: dict) -> bool:
    """Kubernetes' rule: does `toleration` let a pod onto a node with `taint`?"""
    if toleration.get("effect") and toleration["effect"] != taint["effect"]:
        return False
    operator = toleration.get("operator", "Equal")
    if not toleration.get("key"):
        return operator == "Exists"
    if toleration["key"] != taint["key"]:
        return False
    return operator == "Exists" or toleration.get("value", "") == taint.get("value", "")


def node_pool_taints(team: BatchTeam) -> list[dict]:
    return team_node_pool(team)["spec"]["template"]["spec"]["taints"]


def node_pool_labels(team: BatchTeam) -> dict:
    return team_node_pool(team)["spec"]["template"]["metadata"]["labels"]


def requirement(team: BatchTeam, key: str) -> dict:
    (found,) = [r for r in team_node_pool(team)["spec"]["template"]["spec"]["requirements"] if r["key"] == key]
    return found
