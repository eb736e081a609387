"""BatchStack: a Ray cluster per data-science team, each in its own namespace on capacity
only its workers tolerate (a Karpenter NodePool in Auto Mode, a managed node group
otherwise), and the XGBoost and PyTorch benchmark RayJobs submitted to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from ray_serve_ha.charts.accelerators import CPU_BATCH_DOCKERFILE, accelerator_of_instance_type, cpu_instance_type
from ray_serve_ha.charts.batch import BatchTeamChart
from ray_serve_ha.charts.batch_jobs import BatchJobsChart
from ray_serve_ha.charts.batch_teams import (
    AcceleratorWorkerShape,
    BatchTeam,
    team_node_group_capacity_type,
    team_node_group_labels,
    team_node_group_taints,
)
from ray_serve_ha.charts.capacity import ServingCapacity
from ray_serve_ha.constructs.capacity import autoscaler_node_template_tags, install_device_plugin, without_surge
from stacks.existing_cluster import AnyClusterStack
from stacks.settings import BatchTeamSettings, batch_team

BATCH_DIR = Path(__file__).resolve().parent.parent / "batch"


class BatchStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        teams: tuple[BatchTeamSettings, ...],
        capacity: ServingCapacity,
        cluster: AnyClusterStack,
        subnets: list[ec2.ISubnet],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # One image per Dockerfile the teams need (batch/: PyTorch's CPU or CUDA build).
        self.images: dict[str, ecr_assets.DockerImageAsset] = {}
        self.teams: dict[str, BatchTeam] = {}
        self.node_groups: dict[str, eks.Nodegroup] = {}
        self.device_plugins: dict[str, eks.HelmChart] = {}
        self.manifests: dict[str, tuple[eks.KubernetesManifest, eks.KubernetesManifest]] = {}
        for settings in teams:
            accelerator = accelerator_of_instance_type(settings.instance_type) if settings.instance_type else None
            # The project's image for the team's devices, unless the team brings its own.
            default_image = (
                settings.ray_image
                or self._image(accelerator.batch_dockerfile if accelerator else CPU_BATCH_DOCKERFILE).image_uri
            )
            team = batch_team(settings, default_image)
            self.teams[team.name] = team
            app = cdk8s.App()
            team_chart = BatchTeamChart(app, team.name, team=team, node_pool=capacity.auto_mode)
            jobs_chart = BatchJobsChart(app, f"{team.name}-jobs", team=team)
            label = team.name.title().replace("-", "")
            if not capacity.auto_mode:
                self.node_groups[team.name] = _team_node_group(
                    self, label, cluster.cluster, team, subnets, disk_gib=capacity.disks.teams[team.name].min_gib
                )
                # The cluster stack installs the serving accelerator's device plugin; a team
                # on another accelerator gets its own here, or its pods would stay Pending.
                if (
                    accelerator is not None
                    and accelerator != capacity.accelerator
                    and accelerator.name not in self.device_plugins
                ):
                    self.device_plugins[accelerator.name] = install_device_plugin(
                        cluster.cluster, accelerator, scope=self
                    )
            cluster_manifest = eks.KubernetesManifest(
                self, f"{label}RayCluster", cluster=cluster.cluster, manifest=team_chart.to_json()
            )
            # The RayCluster is a KubeRay custom resource: the operator must run first (and,
            # on delete, still run to clean up).
            cluster_manifest.node.add_dependency(cluster.kuberay_operator)
            jobs_manifest = eks.KubernetesManifest(
                self, f"{label}Jobs", cluster=cluster.cluster, manifest=jobs_chart.to_json()
            )
            jobs_manifest.node.add_dependency(cluster_manifest)
            self.manifests[team.name] = (cluster_manifest, jobs_manifest)

    def _image(self, dockerfile: str) -> ecr_assets.DockerImageAsset:
        if dockerfile not in self.images:
            suffix = "" if dockerfile == CPU_BATCH_DOCKERFILE else dockerfile.rsplit(".", 1)[-1].title()
            construct_id = f"BatchImage{suffix}"
            self.images[dockerfile] = ecr_assets.DockerImageAsset(
                self, construct_id, directory=str(BATCH_DIR), file=dockerfile,
                platform=ecr_assets.Platform.LINUX_AMD64, exclude=["**/__pycache__", "**/*.pyc"],
            )
        return self.images[dockerfile]


def _team_node_group(
    scope: Construct, label: str, cluster: eks.ICluster, team: BatchTeam, subnets: list[ec2.ISubnet], *, disk_gib: int
) -> eks.Nodegroup:
    shape = team.worker_shape
    tags: dict[str, str] = {}
    if isinstance(shape, AcceleratorWorkerShape):
        instance_type = shape.instance_type
        ami_type = eks.NodegroupAmiType[shape.accelerator.node_group_ami_type]
        # A team group scales from zero: the autoscaler must know its nodes' devices.
        tags = autoscaler_node_template_tags(shape.accelerator, (instance_type,))
    else:
        fitting = cpu_instance_type(shape.cpus, shape.memory_gib)
        if fitting is None:
            raise ValueError(
                f"team {team.name!r}: no general-purpose instance type holds a worker of {shape.cpus} CPUs and "
                f"{shape.memory_gib} GiB in node-groups mode; lower cpus or memoryGib"
            )
        instance_type = fitting
        ami_type = eks.NodegroupAmiType.AL2023_X86_64_STANDARD
    node_group = eks.Nodegroup(
        scope,
        f"{label}Nodes",
        cluster=cluster,
        instance_types=[ec2.InstanceType(instance_type)],
        ami_type=ami_type,
        capacity_type=eks.CapacityType[team_node_group_capacity_type(team)],
        labels=team_node_group_labels(team),
        taints=[
            eks.TaintSpec(effect=eks.TaintEffect.NO_SCHEDULE, key=taint.key, value=taint.value)
            for taint in team_node_group_taints(team)
        ],
        # The cluster stack's Cluster Autoscaler adds nodes when the Ray autoscaler adds worker
        # pods, and removes them when the pods go (Auto Mode's Karpenter does both itself).
        min_size=team.min_workers,
        desired_size=team.min_workers,
        max_size=team.max_workers,
        # The team's image and Ray's spill space (ray_serve_ha/charts/capacity_plan.py; EKS's default: 20 GiB).
        disk_size=disk_gib,
        subnets=ec2.SubnetSelection(subnets=subnets),
        tags=tags or None,
    )
    if isinstance(shape, AcceleratorWorkerShape):
        # Accelerator instances: no surge of extra nodes during an update (ray_serve_ha/constructs/capacity.py).
        without_surge(node_group)
    return node_group
