"""The settings model: every setting once, with its context key, type, default and what it
allows (the "allowed" column of docs/settings.md). The defaults are the library's: its
tables, its charts' inputs and its constructs' props own them, and the model reads them."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.fields import FieldInfo

from ray_serve_ha.charts.accelerators import (
    ACCELERATORS,
    CPU_BATCH_DOCKERFILE,
    DEFAULT_ACCELERATOR,
    accelerator_of_instance_type,
)
from ray_serve_ha.charts.batch_teams import (
    CAPACITY_TYPES,
    BatchTeam,
    longest_job_suffix,
    team_problem,
)
from ray_serve_ha.charts.capacity import (
    DEFAULT_CAPACITY_MODE,
    DEFAULT_MAX_NODES,
    DEFAULT_MIN_NODES,
    DEFAULT_ON_DEMAND_REPLICAS,
    DEFAULT_SERVING_CAPACITY_TYPE,
    CapacityMode,
    ServingCapacity,
    ServingCapacityType,
    serving_capacity,
)
from ray_serve_ha.charts.images import BATCH_IMAGES, CUSTOM_TEAM_IMAGE, ContainerImage
from ray_serve_ha.charts.models import DEFAULT_MODEL_ID, MODELS, Model, model_of
from ray_serve_ha.charts.ray_pods import MAX_RAYJOB_NAME_LENGTH
from ray_serve_ha.charts.serve_config import DEFAULT_API_RATE_LIMIT_PER_MINUTE, DEFAULT_MAX_QUEUED_REQUESTS
from ray_serve_ha.constructs.availability import DEFAULT_SLO_PERCENT
from ray_serve_ha.constructs.gcs_store_engine import (
    DEFAULT_GCS_ENGINE_VERSION,
    ELASTICACHE_NODE_TYPES,
    GCS_ENGINE_VERSIONS,
    TRANSIT_ENCRYPTION_MODE_MIN_VERSION,
    GcsStoreEngine,
    tls_versions,
)
from ray_serve_ha.constructs.readiness import (
    DEFAULT_READINESS_TIMEOUT_MINUTES,
    READINESS_TIMEOUT_MAX_MINUTES,
    READINESS_TIMEOUT_MIN_MINUTES,
)
from ray_serve_ha.constructs.serve_alarms import DEFAULT_LATENCY_P99_MS, DEFAULT_SERVER_ERROR_PERCENT
from stacks.settings.types import (
    EKS_CREATABLE_VERSIONS,
    MAX_ACCELERATOR_NODES,
    MAX_NODE_DISK_GIB,
    MAX_TEAM_WORKERS,
    MIN_ACCELERATOR_NODES,
    MIN_EXISTING_SUBNET_AZS,
    MIN_NODE_DISK_GIB,
    AcceleratorName,
    Account,
    Branch,
    CapacityModeName,
    CertificateAuthority,
    Cidrs,
    CliBool,
    ClusterName,
    ConnectionArn,
    DiskGib,
    EksClusterName,
    EksEndpoint,
    Email,
    GcsEngine,
    Image,
    InstanceTypes,
    KubernetesVersion,
    ModelId,
    NodeCount,
    NodeType,
    OnDemandReplicas,
    Percent,
    PerMinute,
    PrincipalArns,
    QueuedRequests,
    ReadinessMinutes,
    Region,
    Repository,
    SecretName,
    SecurityGroupId,
    ServingCapacityTypeName,
    SubnetIds,
    TeamCapacityType,
    TeamCpus,
    TeamMaxWorkers,
    TeamMemory,
    TeamMinWorkers,
    Text,
    Threshold,
    VpcEndpoints,
    VpcId,
    WeightsGb,
    cli_json,
)


class BatchTeamSettings(BaseModel):
    """A data-science team's Ray cluster (see ray_serve_ha/charts/batch.py for what is built from it).

    Either `cpus` and `memoryGib` (CPU workers) or `instanceType` (one accelerator node per
    worker). JSON types only: a team is written as JSON, never parsed from `-c` text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Text
    namespace: Text
    cpus: TeamCpus | None = None
    memory_gib: TeamMemory | None = Field(None, alias="memoryGib")
    instance_type: Text | None = Field(None, alias="instanceType")
    # The team charts' own defaults (BatchTeam).
    min_workers: TeamMinWorkers = Field(BatchTeam.min_workers, alias="minWorkers")
    max_workers: TeamMaxWorkers = Field(BatchTeam.max_workers, alias="maxWorkers")
    capacity_type: TeamCapacityType = Field(BatchTeam.capacity_type, alias="capacityType")
    # None: the project's batch image (batch/Dockerfile: Ray 2.60, xgboost, torch).
    ray_image: Image | None = Field(None, alias="rayImage")

    def team_problem(self) -> str | None:
        """The first rule of one team that fails, as the charts would refuse it at synth."""
        if (self.instance_type is None) == (self.cpus is None or self.memory_gib is None):
            return "give either cpus and memoryGib (CPU workers) or instanceType (accelerator workers)"
        if self.instance_type is not None and accelerator_of_instance_type(self.instance_type) is None:
            types = [t for a in ACCELERATORS.values() for t in a.instance_types]
            return (
                f"instanceType={self.instance_type!r} is not an accelerator instance type; allowed: {', '.join(types)}"
            )
        suffix = longest_job_suffix()
        if len(self.name) + len(suffix) > MAX_RAYJOB_NAME_LENGTH:
            return (
                f"name={self.name!r} is {len(self.name)} characters; at most "
                f"{MAX_RAYJOB_NAME_LENGTH - len(suffix)}: the team's RayJob {self.name + suffix!r} must "
                f"stay within KubeRay's {MAX_RAYJOB_NAME_LENGTH} characters"
            )
        return team_problem(
            self.name, self.namespace, min_workers=self.min_workers, max_workers=self.max_workers,
            capacity_type=self.capacity_type,
        )


_ACCELERATOR_NAMES = ", ".join(ACCELERATORS)
_DEFAULT_TYPES = " / ".join(f"`{a.default_instance_type}` ({a.name})" for a in ACCELERATORS.values())


class SettingsModel(BaseModel):
    """Every setting as the context holds it (camelCase keys), with its one default.

    Each field's description is the "allowed" column of docs/settings.md.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster_name: ClusterName = Field(
        "ray-serve-ha", alias="clusterName",
        description="1–40 lowercase letters, digits, hyphens; starts with a letter. Also prefixes the stack names",
    )
    kubernetes_version: KubernetesVersion = Field(
        "1.35", alias="kubernetesVersion",
        description=f"a minor EKS can create ({', '.join(EKS_CREATABLE_VERSIONS)}), as a string, *and* whose "
        "kubectl layer is installed (`requirements.txt`)",
    )
    admin_principal_arns: PrincipalArns = Field(
        (), alias="adminPrincipalArns",
        description="IAM role/user ARNs that get `AmazonEKSClusterAdminPolicy` access entries",
    )
    endpoint_public_access_cidrs: Cidrs = Field(
        (), alias="endpointPublicAccessCidrs",
        description="IPv4 CIDRs allowed to the public API endpoint; empty: private endpoint",
    )
    accelerator: AcceleratorName = Field(
        DEFAULT_ACCELERATOR, alias="accelerator", description=_ACCELERATOR_NAMES
    )
    capacity_mode: CapacityModeName = Field(
        DEFAULT_CAPACITY_MODE, alias="capacityMode", description=", ".join(CapacityMode)
    )
    accelerator_instance_types: InstanceTypes | None = Field(
        None, alias="acceleratorInstanceTypes",
        description=f"unset: {_DEFAULT_TYPES}; else at least one instance type of the accelerator's family "
        "(`ray_serve_ha/charts/accelerators.py`) that can hold the model",
    )
    accelerator_min_nodes: NodeCount = Field(
        DEFAULT_MIN_NODES, alias="acceleratorMinNodes",
        description=f"{MIN_ACCELERATOR_NODES}–{MAX_ACCELERATOR_NODES}, at most acceleratorMaxNodes "
        "(two Serve replicas, one per node)",
    )
    accelerator_max_nodes: NodeCount = Field(
        DEFAULT_MAX_NODES, alias="acceleratorMaxNodes", description=f"{MIN_ACCELERATOR_NODES}–{MAX_ACCELERATOR_NODES}"
    )
    serving_capacity_type: ServingCapacityTypeName = Field(
        DEFAULT_SERVING_CAPACITY_TYPE, alias="servingCapacityType",
        description=f"{', '.join(ServingCapacityType)}: `mixed` keeps `onDemandReplicas` Serve replicas on "
        "on-demand nodes (the floor no spot interruption can take) and runs the others on spot nodes (an Auto Mode "
        "NodePool or a managed node group per capacity type; docs/design.md, Spot replicas)",
    )
    on_demand_replicas: OnDemandReplicas = Field(
        DEFAULT_ON_DEMAND_REPLICAS, alias="onDemandReplicas",
        description="with `servingCapacityType=mixed`: 1 to acceleratorMinNodes − 1, the replicas (and "
        "accelerator nodes) on on-demand capacity",
    )
    accelerator_node_disk_gib: DiskGib | None = Field(
        None, alias="acceleratorNodeDiskGib",
        description="unset: what a serving node keeps (its image, the weights, compile scratch; "
        "`ray_serve_ha/charts/capacity_plan.py`), rounded up; else "
        f"{MIN_NODE_DISK_GIB}–{MAX_NODE_DISK_GIB} GiB and at least that",
    )
    gcs_store_engine: GcsEngine = Field(
        GcsStoreEngine.engine, alias="gcsStoreEngine", description=", ".join(GCS_ENGINE_VERSIONS)
    )
    gcs_store_engine_version: Text | None = Field(
        None, alias="gcsStoreEngineVersion",
        description="unset: "
        + " / ".join(f"{v} ({e})" for e, v in DEFAULT_GCS_ENGINE_VERSION.items())
        + "; else "
        + "; ".join(f"{e} {', '.join(tls_versions(e))}" for e in GCS_ENGINE_VERSIONS)
        + " (TLS-required mode needs "
        + ", ".join(f"{e} ≥ {v}" for e, v in TRANSIT_ENCRYPTION_MODE_MIN_VERSION.items())
        + ")",
    )
    gcs_store_node_type: NodeType = Field(
        GcsStoreEngine.node_type, alias="gcsStoreNodeType",
        description="a current-generation ElastiCache node type, `cache.<family>.<size>`, of the families "
        + ", ".join(ELASTICACHE_NODE_TYPES),
    )
    hugging_face_token_secret_name: SecretName = Field(
        "ray-serve-ha/hugging-face-token", alias="huggingFaceTokenSecretName",
        description="name of an existing Secrets Manager secret holding the Hugging Face token",
    )
    model_id: ModelId = Field(
        DEFAULT_MODEL_ID, alias="modelId",
        description="a Hugging Face model id, `<organization>/<model>`, of the models table ("
        + ", ".join(MODELS) + "), or any other with modelWeightsGb",
    )
    model_weights_gb: WeightsGb | None = Field(
        None, alias="modelWeightsGb",
        description="the size in GB of the weights of a model the models table lacks (bf16: 2 × its "
        "parameters in billions); its tensor parallelism then follows from the accelerator's memory",
    )
    api_rate_limit_per_minute: PerMinute = Field(
        DEFAULT_API_RATE_LIMIT_PER_MINUTE, alias="apiRateLimitPerMinute",
        description="requests per API key and minute, across every replica (counted in the GCS Redis); over it: 429",
    )
    api_token_limit_per_minute: PerMinute | None = Field(
        None, alias="apiTokenLimitPerMinute",
        description="unset: no limit; else prompt plus completion tokens per API key and minute (a key over it "
        "gets 429)",
    )
    max_queued_requests: QueuedRequests = Field(
        DEFAULT_MAX_QUEUED_REQUESTS, alias="maxQueuedRequests",
        description="requests each model replica holds, in order, waiting for one of the answers it generates at "
        "once; more are shed at once with 429 and Retry-After (0: shed whatever cannot start now)",
    )
    readiness_timeout_minutes: ReadinessMinutes = Field(
        DEFAULT_READINESS_TIMEOUT_MINUTES, alias="readinessTimeoutMinutes",
        description=f"{READINESS_TIMEOUT_MIN_MINUTES}–{READINESS_TIMEOUT_MAX_MINUTES}: how long `cdk deploy` "
        "waits for a Ready RayService (a CloudFormation custom resource waits at most 60 minutes)",
    )
    availability_slo_percent: Percent = Field(
        DEFAULT_SLO_PERCENT, alias="availabilitySloPercent", description="50–99.99: the availability alarm's threshold"
    )
    serve_error_alarm_percent: Threshold = Field(
        DEFAULT_SERVER_ERROR_PERCENT, alias="serveErrorAlarmPercent",
        description="above 0: the 5xx alarm fires above this share of Ray Serve's answers (its own metrics)",
    )
    serve_latency_alarm_ms: Threshold = Field(
        DEFAULT_LATENCY_P99_MS, alias="serveLatencyAlarmMs",
        description="above 0: the latency alarm fires above this p99 of Ray Serve's answers, milliseconds",
    )
    alarm_email: Email | None = Field(
        None, alias="alarmEmail", description="an address subscribed to the availability and Serve alarms"
    )
    batch_teams: Annotated[tuple[BatchTeamSettings, ...], BeforeValidator(cli_json)] = Field(
        (), alias="batchTeams",
        description="JSON list of teams, each `{name, namespace, cpus, memoryGib}` (CPU workers) or "
        "`{name, namespace, instanceType}`, optionally `minWorkers` (0–"
        f"{MAX_TEAM_WORKERS}), `maxWorkers` (1–{MAX_TEAM_WORKERS}), `capacityType` "
        f"({', '.join(CAPACITY_TYPES)}), `rayImage`",
    )
    pipeline: CliBool = Field(
        False, alias="pipeline",
        description="`true`: synthesize the CDK Pipelines stack instead of the stacks themselves",
    )
    pipeline_repository: Repository | None = Field(
        None, alias="pipelineRepository", description="`owner/name` (required with `pipeline=true`)"
    )
    pipeline_branch: Branch = Field(
        "main", alias="pipelineBranch", description="the branch the pipeline deploys"
    )
    pipeline_connection_arn: ConnectionArn | None = Field(
        None, alias="pipelineConnectionArn",
        description="a CodeConnections ARN (required with `pipeline=true`)",
    )
    account: Account | None = Field(
        None, alias="account",
        description="12-digit account id; unset: environment-agnostic (required with `pipeline=true`)",
    )
    region: Region | None = Field(
        None, alias="region",
        description="region name; unset: environment-agnostic (required with `pipeline=true`)",
    )

    # --- bring your own VPC or cluster (docs/operating.md: "Bring your own VPC or cluster") -----------
    vpc_id: VpcId | None = Field(
        None, alias="vpcId",
        description="an existing VPC to deploy into (no network stack; looked up at synth, so `account` and "
        "`region` are required); unset: a new VPC",
    )
    private_subnet_ids: SubnetIds | None = Field(
        None, alias="privateSubnetIds",
        description=f"with `vpcId`: the private subnets (with a NAT route) in ≥ {MIN_EXISTING_SUBNET_AZS} AZs "
        "for nodes, pods, Redis and the helpers; unset: every private subnet of the VPC",
    )

    vpc_endpoints: VpcEndpoints | None = Field(
        None, alias="vpcEndpoints",
        description="unset: `s3` for a new VPC, `none` for an existing one (`vpcId`); `s3`: an S3 gateway "
        "endpoint on the private subnets' route tables (free: image layers and the compiled artifacts skip the NAT "
        "gateways); `s3+ecr`: also interface endpoints for ECR (`ecr.api`, `ecr.dkr`) and EKS Pod Identity "
        "(`eks-auth`); `none`",
    )

    existing_cluster_name: EksClusterName | None = Field(
        None, alias="existingClusterName",
        description="an existing EKS cluster to deploy into (no cluster is created), named as `clusterName`; "
        "needs `vpcId` (its VPC), "
        "`existingClusterSecurityGroupId`, `existingClusterEndpoint`, `existingClusterCertificateAuthorityData`; "
        "its version must be `kubernetesVersion`, its capacity `capacityMode`",
    )
    existing_cluster_security_group_id: SecurityGroupId | None = Field(
        None, alias="existingClusterSecurityGroupId",
        description="with `existingClusterName`: the cluster security group EKS created "
        "(`aws eks describe-cluster --query cluster.resourcesVpcConfig.clusterSecurityGroupId`)",
    )
    existing_cluster_endpoint: EksEndpoint | None = Field(
        None, alias="existingClusterEndpoint",
        description="with `existingClusterName`: its API endpoint, `https://….eks.amazonaws.com`",
    )
    existing_cluster_certificate_authority_data: CertificateAuthority | None = Field(
        None, alias="existingClusterCertificateAuthorityData",
        description="with `existingClusterName`: its certificate authority data (base64)",
    )

    @property
    def instance_types(self) -> tuple[str, ...]:
        accelerator = ACCELERATORS[self.accelerator]
        if self.accelerator_instance_types is None:
            return (accelerator.default_instance_type,)
        return self.accelerator_instance_types

    @property
    def engine_version(self) -> str:
        return self.gcs_store_engine_version or DEFAULT_GCS_ENGINE_VERSION[self.gcs_store_engine]

    def served_model(self) -> Model:
        """The model the RayService serves (a ValueError names the fix; the rules report it)."""
        return model_of(self.model_id, self.model_weights_gb)

    def capacity(self) -> ServingCapacity:
        return serving_capacity(
            ACCELERATORS[self.accelerator],
            mode=CapacityMode(self.capacity_mode),
            instance_types=self.instance_types,
            min_nodes=self.accelerator_min_nodes,
            max_nodes=self.accelerator_max_nodes,
            node_disk_gib=self.accelerator_node_disk_gib,
            team_images={t.name: team_image(t) for t in self.batch_teams},
            model=self.served_model(),
            capacity_type=ServingCapacityType(self.serving_capacity_type),
            on_demand_replicas=self.on_demand_replicas,
        )


def team_image(team: BatchTeamSettings) -> ContainerImage:
    """The image a team's head and workers run (ray_serve_ha/charts/images.py): the project's batch image
    for its devices, or, for its own `rayImage`, the largest of them (an assumption)."""
    if team.ray_image is not None:
        return CUSTOM_TEAM_IMAGE
    accelerator = accelerator_of_instance_type(team.instance_type) if team.instance_type else None
    return BATCH_IMAGES[accelerator.batch_dockerfile if accelerator else CPU_BATCH_DOCKERFILE]


FIELDS_BY_KEY: dict[str, FieldInfo] = {f.alias or n: f for n, f in SettingsModel.model_fields.items()}
TEAM_FIELDS_BY_KEY: dict[str, FieldInfo] = {f.alias or n: f for n, f in BatchTeamSettings.model_fields.items()}
SETTING_KEYS: tuple[str, ...] = tuple(FIELDS_BY_KEY)
