"""Typed, validated settings: the only bridge between cdk.json context and the stacks.

`SettingsModel` declares every setting once: its context key, type, default, bounds and
what it allows. cdk.json holds only what a user changes (and the CDK feature flags); an
unset key takes the model's default. `Settings.from_context` checks every value and every
rule across values (instance types against the accelerator and the model, node counts,
engine versions against TLS, a team's workers against its instance types, names against
KubeRay's limits) and returns a frozen tree for the stacks, or raises `SettingsError`
whose one message names each bad key, its value and what is allowed. Nothing below app.py
reads context or the environment.

Values from `-c` arrive as strings, so numbers and booleans accept their text and lists
accept a JSON list (`-c 'adminPrincipalArns=["arn:…"]'`) or a comma-separated string.
Inside `batchTeams` (JSON) the JSON types are required: `"cpus": "4"` is refused.

`python -m stacks.settings` prints README's settings table from the model.
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from ray_serve_ha.charts.accelerators import (
    ACCELERATORS,
    CPU_BATCH_DOCKERFILE,
    CPU_INSTANCE_TYPES,
    DEFAULT_ACCELERATOR,
    accelerator_of_instance_type,
    cpu_instance_type,
)
from ray_serve_ha.charts.batch_teams import (
    CAPACITY_TYPES,
    AcceleratorWorkerShape,
    BatchTeam,
    CpuWorkerShape,
    distinct_teams_problem,
    longest_job_suffix,
    team_problem,
)
from ray_serve_ha.charts.capacity import (
    DEFAULT_CAPACITY_MODE,
    DEFAULT_MAX_NODES,
    DEFAULT_MIN_NODES,
    CapacityMode,
    ServingCapacity,
    serving_capacity,
)
from ray_serve_ha.charts.capacity_plan import (
    AUTO_MODE_DEFAULT_DISK_GIB,
    MAX_SYSTEM_NODES,
    SystemNodes,
    accelerator_node_disk,
    system_nodes,
    team_head,
    team_node_disk,
)
from ray_serve_ha.charts.images import BATCH_IMAGES, CUSTOM_TEAM_IMAGE, ContainerImage
from ray_serve_ha.charts.models import DEFAULT_MODEL_ID, HF_MODEL_ID, HF_MODEL_ID_RULE
from ray_serve_ha.charts.ray_pods import MAX_RAYJOB_NAME_LENGTH
from ray_serve_ha.charts.serve_config import MIN_REPLICAS
from ray_serve_ha.constructs.availability import DEFAULT_SLO_PERCENT
from ray_serve_ha.constructs.gcs_store_engine import (
    DEFAULT_GCS_ENGINE_VERSION,
    ELASTICACHE_NODE_TYPES,
    ELASTICACHE_RETIRED_FAMILIES,
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

# Kubernetes minors EKS can still create clusters on (2026-11: 1.31 leaves extended support
# on 2026-11-26, so a new 1.31 cluster would be born unsupported).
EKS_CREATABLE_VERSIONS = ("1.32", "1.33", "1.34", "1.35", "1.36")
# Two Serve replicas, one per node, need two accelerator nodes at all times.
MIN_ACCELERATOR_NODES = MIN_REPLICAS
MAX_ACCELERATOR_NODES = 100
# A team's Ray autoscaler may ask for this many workers at most: a guard against typos
# such as 1e9 (a managed node group's own quota is 450 nodes).
MAX_TEAM_WORKERS = 100
# The largest c/m/r sizes (…48xlarge: 192 vCPUs; r7i.48xlarge: 1,536 GiB) Auto Mode's team
# NodePool may launch; in node-groups mode a worker must also fit one of `CPU_INSTANCE_TYPES`.
MAX_TEAM_WORKER_CPUS = 192
MAX_TEAM_WORKER_MEMORY_GIB = 1536
# A managed node group's disk: EKS's default is 20 GiB; gp3 volumes go up to 16 TiB.
MIN_NODE_DISK_GIB = 20
MAX_NODE_DISK_GIB = 16384
# VPC endpoints the project adds: an S3 gateway endpoint (free; image layers, the compiled
# artifacts), and with "s3+ecr" also interface endpoints for ECR and EKS Pod Identity.
VPC_ENDPOINT_CHOICES = ("none", "s3", "s3+ecr")

_CLUSTER_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
_PRINCIPAL_ARN = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:(role|user)/[\w+=,.@/-]{1,512}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_CONNECTION_ARN = re.compile(
    r"^arn:aws(-cn|-us-gov)?:(codestar-connections|codeconnections):[a-z0-9-]+:\d{12}:connection/[A-Za-z0-9-]+$"
)
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_IMAGE = re.compile(r"^[a-z0-9][\w.:/@-]*$")
# A camelCase key is a setting; feature flags ("@aws-cdk/…") and CLI keys ("aws:cdk:…") are not.
_SETTING_LIKE_KEY = re.compile(r"^[a-z][A-Za-z0-9]*$")

CLUSTER_NAME_RULE = (
    "must be 1-40 lowercase letters, digits or hyphens, starting with a letter and ending with "
    "a letter or digit (a valid EKS cluster name and Kubernetes label value)"
)
PRINCIPAL_ARN_RULE = "must be an IAM role or user ARN, arn:aws:iam::<12-digit account>:role/<name> or :user/<name>"


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"Invalid settings ({len(problems)} problem{'s' if len(problems) > 1 else ''}). "
            f"Fix them in cdk.json or with -c key=value:\n{lines}"
        )


# --- checks of one value (each raises ValueError with what is allowed) ----------------------

def _matching(pattern: re.Pattern[str], rule: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(rule)
        return value

    return check


def _one_of(choices: Iterable[str]) -> Callable[[str], str]:
    # Read when a value is checked, not when the model is defined: the accelerator table is a
    # dict that a new entry extends.
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError("must be one of: " + ", ".join(choices))
        return value

    return check


def installed_kubectl_layers() -> list[str]:
    return [v for v in EKS_CREATABLE_VERSIONS if importlib.util.find_spec(kubectl_layer_module(v))]


def kubectl_layer_module(kubernetes_version: str) -> str:
    return f"aws_cdk.lambda_layer_kubectl_v{kubernetes_version.replace('1.', '', 1)}"


def _kubernetes_version(version: str) -> str:
    if version not in EKS_CREATABLE_VERSIONS:
        raise ValueError(
            "must be a Kubernetes minor EKS can create, written as a string: " + ", ".join(EKS_CREATABLE_VERSIONS)
        )
    installed = installed_kubectl_layers()
    if version not in installed:
        package = "aws-cdk.lambda-layer-kubectl-v" + version.split(".")[1]
        raise ValueError(
            f"no kubectl layer for {version} is installed (add {package} to requirements.txt); "
            "versions with a layer installed: " + ", ".join(installed)
        )
    return version


def _principal_arn(arn: str) -> str:
    if not _PRINCIPAL_ARN.match(arn):
        hint = (
            " (an assumed-role session; give the role's ARN, arn:aws:iam::<account>:role/<name>)"
            if ":assumed-role/" in arn
            else ""
        )
        raise ValueError(PRINCIPAL_ARN_RULE + hint)
    return arn


def _ipv4_cidr(cidr: str) -> str:
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as error:
        raise ValueError(f"must be an IPv4 CIDR such as 203.0.113.0/24 ({error})") from None
    if network.version != 4:
        raise ValueError("must be an IPv4 CIDR (EKS public endpoint access lists are IPv4 only)")
    if "/" not in cidr:
        raise ValueError("must include a prefix length, e.g. 203.0.113.7/32")
    return cidr


def _node_type(node_type: str) -> str:
    parts = node_type.split(".")
    example = "such as cache.r7g.large"
    if len(parts) != 3 or parts[0] != "cache":
        raise ValueError(f"must be an ElastiCache node type, cache.<family>.<size>, {example}")
    family, size = parts[1], parts[2]
    if family in ELASTICACHE_RETIRED_FAMILIES:
        raise ValueError(
            f"cache.{family} is a previous generation ElastiCache no longer creates clusters on; "
            f"use a current family ({', '.join(ELASTICACHE_NODE_TYPES)}), {example}"
        )
    if family not in ELASTICACHE_NODE_TYPES:
        raise ValueError(
            f"{family!r} is not an ElastiCache node family; families: {', '.join(ELASTICACHE_NODE_TYPES)} "
            f"({example})"
        )
    if size not in ELASTICACHE_NODE_TYPES[family]:
        raise ValueError(f"cache.{family} comes in sizes: {', '.join(ELASTICACHE_NODE_TYPES[family])}")
    return node_type


# --- parsing of `-c` strings (cdk.json and batchTeams keep their JSON types) ---------------

def _cli_integer(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return value


def _cli_number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _cli_boolean(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


class _NotJson(ValueError):
    pass


def _cli_list(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise _NotJson("is not a valid JSON list") from None
    return [part.strip() for part in text.split(",") if part.strip()]


def _cli_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise _NotJson("is not a valid JSON list") from None
    return value


_strict = Field(strict=True)
CliInt = Annotated[int, _strict, BeforeValidator(_cli_integer)]
CliFloat = Annotated[float, _strict, BeforeValidator(_cli_number)]
CliBool = Annotated[bool, _strict, BeforeValidator(_cli_boolean)]
Text = Annotated[str, _strict]


def _not_empty(types: tuple[str, ...]) -> tuple[str, ...]:
    if not types:
        defaults = ", ".join(f"{a.name}: {a.default_instance_type}" for a in ACCELERATORS.values())
        raise ValueError(
            f"must name at least one instance type; leave it unset for the accelerator's default ({defaults})"
        )
    return types


ClusterName = Annotated[str, _strict, AfterValidator(_matching(_CLUSTER_NAME, CLUSTER_NAME_RULE))]
KubernetesVersion = Annotated[str, _strict, AfterValidator(_kubernetes_version)]
PrincipalArns = Annotated[
    tuple[Annotated[str, _strict, AfterValidator(_principal_arn)], ...], BeforeValidator(_cli_list)
]
Cidrs = Annotated[tuple[Annotated[str, _strict, AfterValidator(_ipv4_cidr)], ...], BeforeValidator(_cli_list)]
AcceleratorName = Annotated[str, _strict, AfterValidator(_one_of(ACCELERATORS))]
CapacityModeName = Annotated[str, _strict, AfterValidator(_one_of(tuple(CapacityMode)))]
InstanceTypes = Annotated[tuple[Text, ...], BeforeValidator(_cli_list), AfterValidator(_not_empty)]
NodeCount = Annotated[CliInt, Field(ge=MIN_ACCELERATOR_NODES, le=MAX_ACCELERATOR_NODES)]
GcsEngine = Annotated[str, _strict, AfterValidator(_one_of(GCS_ENGINE_VERSIONS))]
NodeType = Annotated[str, _strict, AfterValidator(_node_type)]
SecretName = Annotated[
    str, _strict,
    AfterValidator(_matching(_SECRET_NAME, "must be 1-512 letters, digits or /_+=.@- (a Secrets Manager secret name)")),
]
ModelId = Annotated[str, _strict, AfterValidator(_matching(HF_MODEL_ID, HF_MODEL_ID_RULE))]
ReadinessMinutes = Annotated[CliInt, Field(ge=READINESS_TIMEOUT_MIN_MINUTES, le=READINESS_TIMEOUT_MAX_MINUTES)]
Percent = Annotated[CliFloat, Field(ge=50.0, le=99.99)]
Email = Annotated[str, _strict, AfterValidator(_matching(_EMAIL, "must be an e-mail address"))]
Repository = Annotated[
    str, _strict, AfterValidator(_matching(_REPOSITORY, "must be a repository name, <owner>/<name>"))
]
Branch = Annotated[str, _strict, AfterValidator(_matching(_BRANCH, "must be a git branch name"))]
ConnectionArn = Annotated[
    str, _strict,
    AfterValidator(_matching(
        _CONNECTION_ARN, "must be a CodeConnections ARN, arn:aws:codeconnections:<region>:<account>:connection/<id>"
    )),
]
Account = Annotated[str, _strict, AfterValidator(_matching(_ACCOUNT, "must be a 12-digit AWS account id"))]
Region = Annotated[str, _strict, AfterValidator(_matching(_REGION, "must be an AWS region name such as us-east-2"))]
TeamCpus = Annotated[int, _strict, Field(ge=1, le=MAX_TEAM_WORKER_CPUS)]
TeamMemory = Annotated[int, _strict, Field(ge=1, le=MAX_TEAM_WORKER_MEMORY_GIB)]
TeamMinWorkers = Annotated[int, _strict, Field(ge=0, le=MAX_TEAM_WORKERS)]
TeamMaxWorkers = Annotated[int, _strict, Field(ge=1, le=MAX_TEAM_WORKERS)]
TeamCapacityType = Annotated[str, _strict, AfterValidator(_one_of(CAPACITY_TYPES))]
Image = Annotated[str, _strict, AfterValidator(_matching(_IMAGE, "must be an image reference"))]
DiskGib = Annotated[CliInt, Field(ge=MIN_NODE_DISK_GIB, le=MAX_NODE_DISK_GIB)]
VpcEndpoints = Annotated[str, _strict, AfterValidator(_one_of(VPC_ENDPOINT_CHOICES))]

# --- bring your own VPC or cluster: value types -----------------------------------------
# EC2 ids: the prefix and 8 (older) or 17 hex digits.
_VPC_ID = re.compile(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$")
_SUBNET_ID = re.compile(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$")
# EKS spreads the control plane's ENIs, and the GCS store its replica, over two AZs at least.
MIN_EXISTING_SUBNET_AZS = 2


def _distinct_subnets(ids: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(ids)) < MIN_EXISTING_SUBNET_AZS:
        raise ValueError(
            f"must name at least {MIN_EXISTING_SUBNET_AZS} distinct private subnets, in at least "
            f"{MIN_EXISTING_SUBNET_AZS} AZs; leave it unset to use every private subnet of the VPC"
        )
    return ids


_SECURITY_GROUP_ID = re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")
# EKS cluster names: 1-100 letters, digits, hyphens and underscores, starting alphanumeric.
_EKS_CLUSTER_NAME = re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")
_EKS_ENDPOINT = re.compile(r"^https://[A-Za-z0-9.-]+\.eks\.amazonaws\.com(\.cn)?$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")

VpcId = Annotated[str, _strict, AfterValidator(_matching(
    _VPC_ID, "must be a VPC id: vpc- and 8 or 17 hex digits (vpc-0a1b2c3d4e5f60718)"
))]
SecurityGroupId = Annotated[str, _strict, AfterValidator(_matching(
    _SECURITY_GROUP_ID, "must be a security group id: sg- and 8 or 17 hex digits (sg-0a1b2c3d4e5f60718)"
))]
EksClusterName = Annotated[str, _strict, AfterValidator(_matching(
    _EKS_CLUSTER_NAME, "must be an EKS cluster name: 1-100 letters, digits, hyphens or underscores"
))]
EksEndpoint = Annotated[str, _strict, AfterValidator(_matching(
    _EKS_ENDPOINT, "must be the cluster's API endpoint, https://<id>.<zone>.<region>.eks.amazonaws.com "
    "(aws eks describe-cluster --query cluster.endpoint)"
))]
CertificateAuthority = Annotated[str, _strict, AfterValidator(_matching(
    _BASE64, "must be the cluster's base64 certificate authority data "
    "(aws eks describe-cluster --query cluster.certificateAuthority.data)"
))]
SubnetIds = Annotated[
    tuple[Annotated[str, _strict, AfterValidator(_matching(
        _SUBNET_ID, "must be a subnet id: subnet- and 8 or 17 hex digits (subnet-0a1b2c3d4e5f60718)"
    ))], ...],
    BeforeValidator(_cli_list),
    AfterValidator(_distinct_subnets),
]


# --- the model ------------------------------------------------------------------------

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
    min_workers: TeamMinWorkers = Field(0, alias="minWorkers")
    max_workers: TeamMaxWorkers = Field(2, alias="maxWorkers")
    capacity_type: TeamCapacityType = Field("on-demand", alias="capacityType")
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

    Each field's description is the "allowed" column of README's settings table.
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
        DEFAULT_MODEL_ID, alias="modelId", description="a Hugging Face model id, `<organization>/<model>`"
    )
    readiness_timeout_minutes: ReadinessMinutes = Field(
        DEFAULT_READINESS_TIMEOUT_MINUTES, alias="readinessTimeoutMinutes",
        description=f"{READINESS_TIMEOUT_MIN_MINUTES}–{READINESS_TIMEOUT_MAX_MINUTES}: how long `cdk deploy` "
        "waits for a Ready RayService (a CloudFormation custom resource waits at most 60 minutes)",
    )
    availability_slo_percent: Percent = Field(
        DEFAULT_SLO_PERCENT, alias="availabilitySloPercent", description="50–99.99: the availability alarm's threshold"
    )
    alarm_email: Email | None = Field(
        None, alias="alarmEmail", description="an address subscribed to the availability alarm"
    )
    batch_teams: Annotated[tuple[BatchTeamSettings, ...], BeforeValidator(_cli_json)] = Field(
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

    # --- bring your own VPC or cluster (README: "Bring your own VPC or cluster") -----------
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

    def _existing_infrastructure_problems(self, ok: Callable[..., bool]) -> list[str]:
        problems = []
        cluster_keys = ("existingClusterSecurityGroupId", "existingClusterEndpoint",
                        "existingClusterCertificateAuthorityData")
        cluster_values = (self.existing_cluster_security_group_id, self.existing_cluster_endpoint,
                          self.existing_cluster_certificate_authority_data)
        if self.existing_cluster_name is not None and ok("existingClusterName"):
            name = f"existingClusterName={self.existing_cluster_name!r}"
            missing = [k for k, v in zip(cluster_keys, cluster_values, strict=True) if v is None and ok(k)]
            if missing:
                problems.append(f"{name}: set {', '.join(missing)} too (from aws eks describe-cluster)")
            if self.vpc_id is None and ok("vpcId"):
                problems.append(f"{name}: set vpcId to the cluster's VPC (and account and region)")
            if self.existing_cluster_name != self.cluster_name and ok("clusterName"):
                problems.append(
                    f"{name}: set clusterName to the same name (the kubeconfig and drill commands and the "
                    f"stack names use it; clusterName={self.cluster_name!r})"
                )
            if self.endpoint_public_access_cidrs and ok("endpointPublicAccessCidrs"):
                problems.append(
                    f"{name}: endpointPublicAccessCidrs configures a cluster this app creates; an existing "
                    "cluster keeps its own endpoint access (aws eks update-cluster-config)"
                )
        else:
            given = [k for k, v in zip(cluster_keys, cluster_values, strict=True) if v is not None and ok(k)]
            if given and ok("existingClusterName"):
                problems.append(f"{', '.join(given)}: describe an existing cluster; set existingClusterName too")
        if self.vpc_id is not None and ok("vpcId"):
            missing = [key for key, value in (("account", self.account), ("region", self.region)) if value is None]
            if missing and ok(*missing):
                problems.append(
                    f"vpcId={self.vpc_id!r}: an existing VPC is looked up at synth in one account and region; "
                    f"set {' and '.join(missing)} too (-c account=<12 digits> -c region=<name>)"
                )
        if self.private_subnet_ids is not None and self.vpc_id is None and ok("privateSubnetIds", "vpcId"):
            problems.append("privateSubnetIds: names subnets of an existing VPC; set vpcId too, or leave it unset")
        return problems

    # --- rules across fields: each skips inputs that were already refused ------------------

    def problems_across_fields(self, refused: set[str], team_indexes: list[int] | None = None) -> list[str]:
        """Every rule across fields that fails. `team_indexes`: where each team stood in the
        context when teams refused on their own were left out."""
        problems: list[str] = []

        def ok(*keys: str) -> bool:
            return not refused.intersection(keys)

        if ok("accelerator", "acceleratorInstanceTypes"):
            problems += self._instance_type_problems()
        if ok("acceleratorMinNodes", "acceleratorMaxNodes") and self.accelerator_min_nodes > self.accelerator_max_nodes:
            problems.append(
                f"acceleratorMinNodes={self.accelerator_min_nodes}: must not exceed acceleratorMaxNodes "
                f"({self.accelerator_max_nodes})"
            )
        if ok("gcsStoreEngine", "gcsStoreEngineVersion"):
            problems += self._engine_version_problems()
        if self.pipeline and ok("pipeline"):
            for key, value in (("account", self.account), ("region", self.region),
                               ("pipelineRepository", self.pipeline_repository),
                               ("pipelineConnectionArn", self.pipeline_connection_arn)):
                if value is None and ok(key):
                    problems.append(f"{key}: must be set when pipeline=true")
        team_problems = []
        if ok("batchTeams", "capacityMode"):
            team_problems = self._team_problems(team_indexes or list(range(len(self.batch_teams))))
            problems += team_problems
        if not team_problems and ok("batchTeams", "capacityMode", "accelerator", "acceleratorNodeDiskGib",
                                    "acceleratorMinNodes", "acceleratorMaxNodes"):
            problems += self._node_problems()
        problems += self._existing_infrastructure_problems(ok)
        return problems

    @property
    def instance_types(self) -> tuple[str, ...]:
        accelerator = ACCELERATORS[self.accelerator]
        if self.accelerator_instance_types is None:
            return (accelerator.default_instance_type,)
        return self.accelerator_instance_types

    def _instance_type_problems(self) -> list[str]:
        key, accelerator = "acceleratorInstanceTypes", ACCELERATORS[self.accelerator]
        problems = []
        for instance_type in self.instance_types:
            if instance_type not in accelerator.instance_types:
                other = accelerator_of_instance_type(instance_type)
                why = f" ({instance_type} is a {other.name} instance type)" if other else ""
                problems.append(
                    f"{key}={instance_type!r}: is not a {accelerator.name} instance type{why}; allowed for "
                    f"accelerator={accelerator.name}: {', '.join(accelerator.instance_types)}"
                )
                continue
            reason = accelerator.unfit_reason(instance_type)
            if reason:
                problems.append(f"{key}={instance_type!r}: cannot serve the model: {reason}")
        return problems

    @property
    def engine_version(self) -> str:
        return self.gcs_store_engine_version or DEFAULT_GCS_ENGINE_VERSION[self.gcs_store_engine]

    def _engine_version_problems(self) -> list[str]:
        engine, version = self.gcs_store_engine, self.engine_version
        key = f"gcsStoreEngineVersion={version!r}"
        if version not in GCS_ENGINE_VERSIONS[engine]:
            return [f"{key}: must be one of {', '.join(tls_versions(engine))} for gcsStoreEngine={engine}"]
        if version not in tls_versions(engine):
            return [
                f"{key}: the GCS store requires TLS (transit encryption mode 'required'), which needs "
                f"{engine} {TRANSIT_ENCRYPTION_MODE_MIN_VERSION[engine]} or later; use one of "
                f"{', '.join(tls_versions(engine))}"
            ]
        return []

    def _team_problems(self, indexes: list[int]) -> list[str]:
        problems = []
        for index, team in zip(indexes, self.batch_teams, strict=False):
            where = f"batchTeams[{index}]"
            problem = team.team_problem()
            if problem is None and self.capacity_mode == CapacityMode.NODE_GROUPS and team.cpus is not None:
                problem = _node_group_fit_problem(team)
            if problem:
                problems.append(f"{where}: {problem}")
        if not problems and (clash := distinct_teams_problem([(t.name, t.namespace) for t in self.batch_teams])):
            problems.append(f"batchTeams: {clash}")
        return problems

    # --- what the nodes must hold ----------------------------------------------------------

    def _node_problems(self) -> list[str]:
        problems = []
        accelerator = ACCELERATORS[self.accelerator]
        need = accelerator_node_disk(accelerator)
        if self.accelerator_node_disk_gib is not None and self.accelerator_node_disk_gib < need.min_gib:
            problems.append(
                f"acceleratorNodeDiskGib={self.accelerator_node_disk_gib}: a {need.role} keeps {need.explain()}; "
                f"set at least {need.min_gib}, or leave it unset"
            )
        if self.capacity_mode == CapacityMode.AUTO_MODE:
            # Team pools use Auto Mode's default NodeClass, whose disk this project does not set.
            for index, team in enumerate(self.batch_teams):
                team_disk = team_node_disk(team.name, team_image(team))
                if team_disk.min_gib > AUTO_MODE_DEFAULT_DISK_GIB:
                    problems.append(
                        f"batchTeams[{index}]: a {team_disk.role} keeps {team_disk.explain()}, more than the "
                        f"{AUTO_MODE_DEFAULT_DISK_GIB} GiB of EKS Auto Mode's default NodeClass"
                    )
        else:
            nodes, head = self.system_nodes, team_head("head")
            if nodes.max_nodes > MAX_SYSTEM_NODES:
                problems.append(
                    f"batchTeams: {len(self.batch_teams)} teams need {nodes.max_nodes} {nodes.instance_type} system "
                    f"nodes for their Ray heads (a head of {head.cpu_milli / 1000:g} CPUs and "
                    f"{head.memory_mib / 1024:g} GiB each, plus the serving head, an upgrade's second head, the chat "
                    f"UI and the operators); a managed node group holds at most {MAX_SYSTEM_NODES}: use fewer teams, "
                    "or capacityMode=auto-mode"
                )
        return problems

    @property
    def system_nodes(self) -> SystemNodes:
        return system_nodes(
            autoscaling=self.accelerator_max_nodes > self.accelerator_min_nodes,
            teams=[team.name for team in self.batch_teams],
        )

    def capacity(self) -> ServingCapacity:
        return serving_capacity(
            ACCELERATORS[self.accelerator],
            mode=CapacityMode(self.capacity_mode),
            instance_types=self.instance_types,
            min_nodes=self.accelerator_min_nodes,
            max_nodes=self.accelerator_max_nodes,
            node_disk_gib=self.accelerator_node_disk_gib,
            team_images={t.name: team_image(t) for t in self.batch_teams},
        )

    # --- the tree the stacks read -----------------------------------------------------------

    def settings(self) -> Settings:
        return Settings(
            environment=DeploymentEnvironment(account=self.account, region=self.region),
            cluster=ClusterSettings(
                name=self.cluster_name,
                kubernetes_version=self.kubernetes_version,
                admin_principal_arns=self.admin_principal_arns,
                endpoint_public_access_cidrs=self.endpoint_public_access_cidrs,
            ),
            capacity=self.capacity(),
            gcs_store=GcsStoreEngine(
                engine=self.gcs_store_engine, engine_version=self.engine_version, node_type=self.gcs_store_node_type
            ),
            secrets=SecretsSettings(hugging_face_token_secret_name=self.hugging_face_token_secret_name),
            serving=ServingSettings(model_id=self.model_id),
            operations=OperationsSettings(
                readiness_timeout_minutes=self.readiness_timeout_minutes,
                availability_slo_percent=self.availability_slo_percent,
                alarm_email=self.alarm_email,
            ),
            pipeline=PipelineSettings(
                enabled=self.pipeline,
                repository=self.pipeline_repository,
                branch=self.pipeline_branch,
                connection_arn=self.pipeline_connection_arn,
            ),
            batch_teams=self.batch_teams,
            network=NetworkSettings(
                vpc_id=self.vpc_id,
                private_subnet_ids=self.private_subnet_ids,
                endpoints=self.vpc_endpoints or ("none" if self.vpc_id else "s3"),
            ),
            existing_cluster=None if self.existing_cluster_name is None else ExistingClusterSettings(
                name=self.existing_cluster_name,
                security_group_id=self.existing_cluster_security_group_id or "",
                endpoint=self.existing_cluster_endpoint or "",
                certificate_authority_data=self.existing_cluster_certificate_authority_data or "",
            ),
        )


# --- the tree the stacks read (no defaults here: they are the model's) ----------------

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
    # Hugging Face model the RayService serves (gated: needs the token secret).
    model_id: str


@dataclass(frozen=True)
class OperationsSettings:
    # How long `cdk deploy` waits for the RayService to be Ready (at most
    # READINESS_TIMEOUT_MAX_MINUTES: a custom resource cannot wait longer).
    readiness_timeout_minutes: int
    # The availability alarm fires below this percentage of successful probe requests.
    availability_slo_percent: float
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
        return parse_settings(context).settings()


# --- reading context -----------------------------------------------------------------------

_FIELDS_BY_KEY: dict[str, FieldInfo] = {f.alias or n: f for n, f in SettingsModel.model_fields.items()}
_TEAM_FIELDS_BY_KEY: dict[str, FieldInfo] = {f.alias or n: f for n, f in BatchTeamSettings.model_fields.items()}
SETTING_KEYS: tuple[str, ...] = tuple(_FIELDS_BY_KEY)


def parse_settings(context: Mapping[str, Any]) -> SettingsModel:
    """The validated model; SettingsError names every bad key, its value and what is allowed."""
    problems: list[str] = []
    given: dict[str, Any] = {}
    for key, value in context.items():
        if not _SETTING_LIKE_KEY.match(key):
            continue
        if key not in _FIELDS_BY_KEY:
            close = difflib.get_close_matches(key, SETTING_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known settings: " + ", ".join(SETTING_KEYS)
            problems.append(f"{key}: unknown setting; {hint}")
        elif value is not None:  # null: the default, as if unset
            given[key] = value
    refused: set[str] = set()
    team_indexes: list[int] | None = None
    try:
        model = SettingsModel.model_validate(given)
    except ValidationError as error:
        problems += _describe(error, given)
        refused = {str(item["loc"][0]) for item in error.errors()}
        # The rules across fields still run on what was valid, so one message names everything:
        # the other keys, and the teams that passed on their own.
        valid = {k: v for k, v in given.items() if k not in refused}
        bad_teams = {int(item["loc"][1]) for item in error.errors() if item["loc"][0] == "batchTeams"
                     and len(item["loc"]) > 1}
        if bad_teams and all(len(item["loc"]) > 1 for item in error.errors() if item["loc"][0] == "batchTeams"):
            teams = _cli_json(given["batchTeams"])
            team_indexes = [i for i in range(len(teams)) if i not in bad_teams]
            valid["batchTeams"] = [teams[i] for i in team_indexes]
            refused.discard("batchTeams")
        model = SettingsModel.model_validate(valid)
    problems += model.problems_across_fields(refused, team_indexes)
    if problems:
        raise SettingsError(problems)
    return model


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _bounds(field: FieldInfo) -> tuple[Any, Any]:
    """(ge, le) of a field, looking through `X | None` and nested Annotated metadata."""
    found: list[Any] = []

    def collect(metadata: Iterable[Any]) -> None:
        for item in metadata:
            found.append(item)
            if isinstance(item, FieldInfo):
                collect(item.metadata)

    collect(field.metadata)
    for arg in get_args(field.annotation):
        collect(getattr(arg, "__metadata__", ()))
    low = next((m.ge for m in found if getattr(m, "ge", None) is not None), None)
    high = next((m.le for m in found if getattr(m, "le", None) is not None), None)
    return low, high


def _type_rule(error_type: str, field: FieldInfo, from_json: bool) -> str | None:
    """What a field allows, for an error of its type or range (None: not such an error)."""
    low, high = _bounds(field)
    text = " (a JSON number, not a string)" if from_json else ""
    if error_type in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number from {low} to {high}{text}"
    if error_type in ("float_type", "float_parsing"):
        return f"must be a number from {low:g} to {high:g}"
    if error_type in ("greater_than_equal", "less_than_equal"):
        return f"must be from {low:g} to {high:g}" if isinstance(low, float) else f"must be from {low} to {high}"
    if error_type in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if error_type == "string_type":
        return "must be a string"
    if error_type in ("tuple_type", "list_type"):
        return "must be a list of strings (JSON list or comma-separated)"
    return None


def _describe(error: ValidationError, given: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    unknown_team_fields: dict[int, list[str]] = {}
    for item in error.errors(include_url=False):
        loc, kind = item["loc"], item["type"]
        key = str(loc[0])
        message = item["msg"].removeprefix("Value error, ")
        if key == "batchTeams" and len(loc) >= 2:
            index = int(loc[1])
            where = f"batchTeams[{index}]"
            if len(loc) == 2:
                problems.append(f"{where}={_show(item['input'])}: must be a team object (see README, Settings)")
            elif kind == "extra_forbidden":
                unknown_team_fields.setdefault(index, []).append(str(loc[2]))
            elif kind == "missing":
                problems.append(f"{where}.{loc[2]}: required")
            else:
                field = _TEAM_FIELDS_BY_KEY[str(loc[2])]
                rule = _type_rule(kind, field, from_json=isinstance(item["input"], str)) or message
                problems.append(f"{where}.{loc[2]}={_show(item['input'])}: {rule}")
            continue
        if kind == "value_error" and isinstance(item.get("ctx", {}).get("error"), _NotJson):
            problems.append(f"{key}={_show(given[key])}: {message}")
            continue
        if key == "batchTeams":
            problems.append(f"{key}={_show(given[key])}: must be a JSON list of team objects")
            continue
        if kind == "string_type" and len(loc) > 1:  # an item of a list
            problems.append(f"{key}={_show(given[key])}: must be a list of strings (JSON list or comma-separated)")
            continue
        allowed = _type_rule(kind, _FIELDS_BY_KEY[key], from_json=False) or message
        value = item["input"]
        if kind in ("greater_than_equal", "less_than_equal"):  # show a `-c` number as the number it is
            value = _cli_number(_cli_integer(value))
        problems.append(f"{key}={_show(value)}: {allowed}")
    for index, names in unknown_team_fields.items():
        hints = [
            f"{name} (did you mean {close[0]!r}?)"
            if (close := difflib.get_close_matches(name, _TEAM_FIELDS_BY_KEY, n=1, cutoff=0.8))
            else name
            for name in names
        ]
        problems.append(
            f"batchTeams[{index}]: unknown field(s) {', '.join(hints)}; allowed: {', '.join(_TEAM_FIELDS_BY_KEY)}"
        )
    return problems


# --- batch teams: the charts' view and the node-group fit ----------------------------------

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


def team_image(team: BatchTeamSettings) -> ContainerImage:
    """The image a team's head and workers run (ray_serve_ha/charts/images.py): the project's batch image
    for its devices, or, for its own `rayImage`, the largest of them (an assumption)."""
    if team.ray_image is not None:
        return CUSTOM_TEAM_IMAGE
    accelerator = accelerator_of_instance_type(team.instance_type) if team.instance_type else None
    return BATCH_IMAGES[accelerator.batch_dockerfile if accelerator else CPU_BATCH_DOCKERFILE]


def _node_group_fit_problem(team: BatchTeamSettings) -> str | None:
    """In node-groups mode a CPU team's node group gets the smallest general-purpose size
    whose allocatable estimate holds a worker (ray_serve_ha/charts/accelerators.py)."""
    assert team.cpus is not None and team.memory_gib is not None  # checked by team_problem
    if cpu_instance_type(team.cpus, team.memory_gib) is not None:
        return None
    sizes = ", ".join(
        f"{name} ({shape.worker_cpus} CPU, {shape.worker_memory_gib} GiB for a worker)"
        for name, shape in CPU_INSTANCE_TYPES.items()
    )
    return (
        f"cpus={team.cpus}, memoryGib={team.memory_gib}: no node-group instance type holds this worker "
        f"once the node's own reservations are taken (capacityMode=node-groups); sizes: {sizes}"
    )


# --- README ----------------------------------------------------------------------------

def settings_table() -> str:
    """README's settings table: every key, its default (JSON) and what it allows."""
    rows = ["| key | default | allowed |", "|---|---|---|"]
    for key, field in _FIELDS_BY_KEY.items():
        default = field.default
        shown = (
            "unset" if default is None else f"`{json.dumps(list(default) if isinstance(default, tuple) else default)}`"
        )
        rows.append(f"| `{key}` | {shown} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
