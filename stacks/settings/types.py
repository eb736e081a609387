"""The settings' value types: each setting's type and bounds, the checks of one value (each
raises ValueError with what is allowed), and the parsing of `-c` strings.

Values from `-c` arrive as strings, so numbers and booleans accept their text and lists
accept a JSON list (`-c 'adminPrincipalArns=["arn:…"]'`) or a comma-separated string.
Inside `batchTeams` (JSON) the JSON types are required: `"cpus": "4"` is refused.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from ray_serve_ha.charts.accelerators import (
    ACCELERATORS,
)
from ray_serve_ha.charts.batch_teams import (
    CAPACITY_TYPES,
)
from ray_serve_ha.charts.capacity import (
    CapacityMode,
    ServingCapacityType,
)
from ray_serve_ha.charts.models import HF_MODEL_ID, HF_MODEL_ID_RULE
from ray_serve_ha.charts.serve_config import MIN_REPLICAS
from ray_serve_ha.constructs.gcs_store_engine import (
    ELASTICACHE_NODE_TYPES,
    ELASTICACHE_RETIRED_FAMILIES,
    GCS_ENGINE_VERSIONS,
)
from ray_serve_ha.constructs.readiness import (
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
SETTING_LIKE_KEY = re.compile(r"^[a-z][A-Za-z0-9]*$")

CLUSTER_NAME_RULE = (
    "must be 1-40 lowercase letters, digits or hyphens, starting with a letter and ending with "
    "a letter or digit (a valid EKS cluster name and Kubernetes label value)"
)
PRINCIPAL_ARN_RULE = "must be an IAM role or user ARN, arn:aws:iam::<12-digit account>:role/<name> or :user/<name>"


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


def _team_capacity_type(value: str) -> str:
    if value == ServingCapacityType.MIXED:
        raise ValueError(
            f"'mixed' is for the serving replicas (servingCapacityType); a team's workers all run on one "
            f"capacity type: {', '.join(CAPACITY_TYPES)}"
        )
    return _one_of(CAPACITY_TYPES)(value)


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

def cli_integer(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return value


def cli_number(value: Any) -> Any:
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


class NotJson(ValueError):
    pass


def _cli_list(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise NotJson("is not a valid JSON list") from None
    return [part.strip() for part in text.split(",") if part.strip()]


def cli_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise NotJson("is not a valid JSON list") from None
    return value


_strict = Field(strict=True)
CliInt = Annotated[int, _strict, BeforeValidator(cli_integer)]
CliFloat = Annotated[float, _strict, BeforeValidator(cli_number)]
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
# An alarm threshold on Serve's own metrics: above zero.
Threshold = Annotated[CliFloat, Field(gt=0)]
# A model's weights, GB: above 0, at most what the largest listed instance holds.
WeightsGb = Annotated[CliFloat, Field(gt=0, le=1000)]
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
TeamCapacityType = Annotated[str, _strict, AfterValidator(_team_capacity_type)]
ServingCapacityTypeName = Annotated[str, _strict, AfterValidator(_one_of(tuple(ServingCapacityType)))]
# The floor's own rule (1 up to acceleratorMinNodes - 1, with mixed) is a rule across values.
OnDemandReplicas = Annotated[CliInt, Field(ge=0, le=MAX_ACCELERATOR_NODES)]
# Per-key API limits and the queue bound: at least 1 (a limit of 0 would refuse everything).
MAX_PER_MINUTE = 10_000_000
PerMinute = Annotated[CliInt, Field(ge=1, le=MAX_PER_MINUTE)]
MAX_QUEUED_REQUESTS = 10_000
QueuedRequests = Annotated[CliInt, Field(ge=0, le=MAX_QUEUED_REQUESTS)]
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
