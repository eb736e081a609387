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

from ray_serve_ha.charts.accelerators import CPU_BATCH_DOCKERFILE, accelerator_of_instance_type
from ray_serve_ha.charts.batch import BatchTeamChart
from ray_serve_ha.charts.batch_jobs import BatchJobsChart
from ray_serve_ha.charts.batch_teams import BatchTeam
from ray_serve_ha.charts.capacity import ServingCapacity
from ray_serve_ha.constructs.capacity import TeamNodeGroupProps, install_device_plugin, team_node_group
from ray_serve_ha.constructs.kuberay_validation import add_kuberay_rules
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
                disk_gib = capacity.disks.teams[team.name].min_gib
                self.node_groups[team.name] = team_node_group(self, f"{label}Nodes", TeamNodeGroupProps(
                    cluster=cluster.cluster, team=team, subnets=subnets, disk_gib=disk_gib,
                ))
                # The cluster stack installs the serving accelerator's device plugin, whose
                # one release serves every accelerator of its chart; a team on an accelerator
                # of another chart gets that chart's release here (once), or its pods would
                # stay Pending. Keyed by chart: Helm refuses a second release of one.
                plugin = accelerator.device_plugin if accelerator is not None else None
                if (
                    plugin is not None
                    and plugin.chart != capacity.accelerator.device_plugin.chart
                    and plugin.chart.chart not in self.device_plugins
                ):
                    self.device_plugins[plugin.chart.chart] = install_device_plugin(cluster.cluster, plugin, scope=self)
            cluster_manifest = eks.KubernetesManifest(
                self, f"{label}RayCluster", cluster=cluster.cluster, manifest=team_chart.to_json()
            )
            # What the KubeRay operator would refuse (ValidationFailed) fails synth instead.
            add_kuberay_rules(cluster_manifest, team_chart.to_json())
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
