"""The frozen tree the stacks read, built from a validated model. No defaults here: they are
the model's (and so the library's)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray_serve_ha.charts.accelerators import (
    accelerator_of_instance_type,
)
from ray_serve_ha.charts.batch_teams import (
    AcceleratorWorkerShape,
    BatchTeam,
    CpuWorkerShape,
)
from ray_serve_ha.charts.capacity import (
    ServingCapacity,
)
from ray_serve_ha.charts.models import Model
from ray_serve_ha.constructs.gcs_store_engine import (
    GcsStoreEngine,
)
from stacks.settings.context import (
    parse_settings,
)
from stacks.settings.model import (
    BatchTeamSettings,
    SettingsModel,
)
from stacks.settings.types import (
    kubectl_layer_module,
)


@dataclass(frozen=True)
class DeploymentEnvironment:
    """Account and region; both None keeps the stacks environment-agnostic."""

    account: str | None
    region: str | None


@dataclass(frozen=True)
class ClusterSettings:
    name: str
    kubernetes_version: str
    # IAM roles/users that get cluster-admin access entries.
    admin_principal_arns: tuple[str, ...]
    # Empty: the API endpoint is private (reachable from the VPC only).
    endpoint_public_access_cidrs: tuple[str, ...]

    @property
    def kubectl_layer_module(self) -> str:
        return kubectl_layer_module(self.kubernetes_version)


@dataclass(frozen=True)
class SecretsSettings:
    # Name of an existing Secrets Manager secret holding the Hugging Face token.
    hugging_face_token_secret_name: str


@dataclass(frozen=True)
class ServingSettings:
    # The model the RayService serves (ray_serve_ha/charts/models.py; gated: needs the token secret).
    model: Model
    # Per API key and minute (None: no token limit), and the requests each caller queues.
    api_rate_limit_per_minute: int
    api_token_limit_per_minute: int | None
    max_queued_requests: int


@dataclass(frozen=True)
class OperationsSettings:
    # How long `cdk deploy` waits for the RayService to be Ready (at most
    # READINESS_TIMEOUT_MAX_MINUTES: a custom resource cannot wait longer).
    readiness_timeout_minutes: int
    # The availability alarm fires below this percentage of successful probe requests.
    availability_slo_percent: float
    # Ray Serve's own metrics: the 5xx alarm's share of answers (percent) and the p99 latency
    # alarm's threshold (milliseconds).
    serve_error_alarm_percent: float
    serve_latency_alarm_ms: float
    # Optional address that gets the alarm's notifications.
    alarm_email: str | None


@dataclass(frozen=True)
class PipelineSettings:
    """CDK Pipelines delivery of the serving system (off: `cdk deploy` the stacks directly)."""

    enabled: bool
    # GitHub (or other CodeConnections) repository "owner/name" and branch to deploy.
    repository: str | None
    branch: str
    # ARN of the CodeConnections (formerly CodeStar) connection to the repository.
    connection_arn: str | None


@dataclass(frozen=True)
class NetworkSettings:
    """Where the system lives: a new VPC (vpc_id None) or an existing one, looked up at synth."""

    vpc_id: str | None
    # None: every private subnet of the existing VPC.
    private_subnet_ids: tuple[str, ...] | None
    # One of VPC_ENDPOINT_CHOICES.
    endpoints: str


@dataclass(frozen=True)
class ExistingClusterSettings:
    """An EKS cluster this app deploys into instead of creating one (eks_v2 import)."""

    name: str
    # The cluster security group EKS created: the GCS store admits it, the helpers reach
    # the API endpoint through it.
    security_group_id: str
    endpoint: str
    certificate_authority_data: str


@dataclass(frozen=True)
class Settings:
    environment: DeploymentEnvironment
    cluster: ClusterSettings
    capacity: ServingCapacity
    gcs_store: GcsStoreEngine
    secrets: SecretsSettings
    serving: ServingSettings
    operations: OperationsSettings
    pipeline: PipelineSettings
    batch_teams: tuple[BatchTeamSettings, ...]
    network: NetworkSettings
    # None: the cluster stack creates the cluster.
    existing_cluster: ExistingClusterSettings | None

    @staticmethod
    def from_context(context: Mapping[str, Any]) -> Settings:
        """The settings from context values (cdk.json, `-c`); SettingsError lists every problem."""
        return settings_tree(parse_settings(context))



def settings_tree(model: SettingsModel) -> Settings:
    """The frozen tree the stacks read, from a validated model."""
    return Settings(
        environment=DeploymentEnvironment(account=model.account, region=model.region),
        cluster=ClusterSettings(
            name=model.cluster_name,
            kubernetes_version=model.kubernetes_version,
            admin_principal_arns=model.admin_principal_arns,
            endpoint_public_access_cidrs=model.endpoint_public_access_cidrs,
        ),
        capacity=model.capacity(),
        gcs_store=GcsStoreEngine(
            engine=model.gcs_store_engine, engine_version=model.engine_version, node_type=model.gcs_store_node_type
        ),
        secrets=SecretsSettings(hugging_face_token_secret_name=model.hugging_face_token_secret_name),
        serving=ServingSettings(
            model=model.served_model(),
            api_rate_limit_per_minute=model.api_rate_limit_per_minute,
            api_token_limit_per_minute=model.api_token_limit_per_minute,
            max_queued_requests=model.max_queued_requests,
        ),
        operations=OperationsSettings(
            readiness_timeout_minutes=model.readiness_timeout_minutes,
            availability_slo_percent=model.availability_slo_percent,
            serve_error_alarm_percent=model.serve_error_alarm_percent,
            serve_latency_alarm_ms=model.serve_latency_alarm_ms,
            alarm_email=model.alarm_email,
        ),
        pipeline=PipelineSettings(
            enabled=model.pipeline,
            repository=model.pipeline_repository,
            branch=model.pipeline_branch,
            connection_arn=model.pipeline_connection_arn,
        ),
        batch_teams=model.batch_teams,
        network=NetworkSettings(
            vpc_id=model.vpc_id,
            private_subnet_ids=model.private_subnet_ids,
            endpoints=model.vpc_endpoints or ("none" if model.vpc_id else "s3"),
        ),
        existing_cluster=None if model.existing_cluster_name is None else ExistingClusterSettings(
            name=model.existing_cluster_name,
            security_group_id=model.existing_cluster_security_group_id or "",
            endpoint=model.existing_cluster_endpoint or "",
            certificate_authority_data=model.existing_cluster_certificate_authority_data or "",
        ),
    )


def batch_team(team: BatchTeamSettings, ray_image: str) -> BatchTeam:
    """The charts' BatchTeam (which validates itself) for a team of the settings."""
    if team.instance_type is not None:
        accelerator = accelerator_of_instance_type(team.instance_type)
        if accelerator is None:
            raise ValueError(f"team {team.name!r} instanceType {team.instance_type!r} is no accelerator's")
        shape: AcceleratorWorkerShape | CpuWorkerShape = AcceleratorWorkerShape(accelerator, team.instance_type)
    else:
        assert team.cpus is not None and team.memory_gib is not None  # checked by team_problem
        shape = CpuWorkerShape(cpus=team.cpus, memory_gib=team.memory_gib)
    return BatchTeam(
        name=team.name, namespace=team.namespace, ray_image=team.ray_image or ray_image, worker_shape=shape,
        min_workers=team.min_workers, max_workers=team.max_workers, capacity_type=team.capacity_type,  # type: ignore[arg-type]
    )
