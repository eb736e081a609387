"""Typed, validated settings: the only bridge between cdk.json context and the stacks.

`Settings.from_context` reads a mapping of context values (cdk.json, `-c key=value`),
checks every value in one place and returns a frozen tree, or raises `SettingsError` whose
message names each bad key, its value and what is allowed. Nothing below app.py reads
context or the environment.

Values from `-c` arrive as strings, so integers accept digit strings and lists accept a JSON
list (`-c 'adminPrincipalArns=["arn:…"]'`) or a comma-separated string.
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from charts.accelerators import ACCELERATORS, Accelerator
from charts.batch import AcceleratorWorkerShape, BatchTeam, CpuWorkerShape, check_distinct_teams

# Kubernetes minors EKS can still create clusters on (2026-11: 1.31 leaves extended support
# on 2026-11-26, so a new 1.31 cluster would be born unsupported).
EKS_CREATABLE_VERSIONS = ("1.32", "1.33", "1.34", "1.35", "1.36")
CAPACITY_MODES = ("auto-mode", "node-groups")
# Engine versions Ray's GCS client is known to work with (cluster mode off).
GCS_ENGINE_VERSIONS = {"redis": ("6.2", "7.0", "7.1"), "valkey": ("7.2", "8.0", "8.1")}
DEFAULT_GCS_ENGINE_VERSION = {"redis": "7.1", "valkey": "8.0"}
# Two Serve replicas with max_replicas_per_node=1 need two accelerator nodes at all times.
MIN_ACCELERATOR_NODES = 2
MAX_ACCELERATOR_NODES = 100
# CloudFormation waits at most 3,600 s for a custom resource; the readiness gate needs a
# few minutes of that for its own start and for CloudFormation (stacks/readiness.py).
READINESS_TIMEOUT_MAX_MINUTES = 55


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"Invalid settings ({len(problems)} problem{'s' if len(problems) > 1 else ''}). "
            f"Fix them in cdk.json or with -c key=value:\n{lines}"
        )


@dataclass(frozen=True)
class DeploymentEnvironment:
    """Account and region; both None keeps the stacks environment-agnostic."""

    account: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class ClusterSettings:
    name: str = "ray-serve-ha"
    kubernetes_version: str = "1.35"
    # IAM roles/users that get cluster-admin access entries.
    admin_principal_arns: tuple[str, ...] = ()
    # Empty: the API endpoint is private (reachable from the VPC only).
    endpoint_public_access_cidrs: tuple[str, ...] = ()

    @property
    def kubectl_layer_module(self) -> str:
        return kubectl_layer_module(self.kubernetes_version)


@dataclass(frozen=True)
class CapacitySettings:
    accelerator: Accelerator
    mode: str = "auto-mode"
    instance_types: tuple[str, ...] = ("inf2.8xlarge",)
    min_nodes: int = 2
    max_nodes: int = 4

    @property
    def auto_mode(self) -> bool:
        return self.mode == "auto-mode"


@dataclass(frozen=True)
class GcsStoreSettings:
    """The ElastiCache replication group Ray's GCS writes to."""

    engine: str = "redis"
    engine_version: str = "7.1"
    node_type: str = "cache.r7g.large"


@dataclass(frozen=True)
class SecretsSettings:
    # Name of an existing Secrets Manager secret holding the Hugging Face token.
    hugging_face_token_secret_name: str = "ray-serve-ha/hugging-face-token"


@dataclass(frozen=True)
class ServingSettings:
    # Hugging Face model the RayService serves (gated: needs the token secret).
    model_id: str = "mistralai/Mistral-7B-Instruct-v0.2"


@dataclass(frozen=True)
class OperationsSettings:
    # How long `cdk deploy` waits for the RayService to be Ready: a first Neuron start
    # compiles the model (tens of minutes); CloudFormation bounds a custom resource's wait.
    readiness_timeout_minutes: int = READINESS_TIMEOUT_MAX_MINUTES
    # The availability alarm fires below this percentage of successful probe requests.
    availability_slo_percent: float = 99.0
    # Optional address that gets the alarm's notifications.
    alarm_email: str | None = None


@dataclass(frozen=True)
class BatchTeamSettings:
    """A data-science team's Ray cluster (see charts/batch.py for what is built from it)."""

    name: str
    namespace: str
    # CPU workers (cpus, memory_gib) or accelerator workers (instance_type of `accelerator`).
    cpus: int | None = None
    memory_gib: int | None = None
    instance_type: str | None = None
    min_workers: int = 0
    max_workers: int = 2
    capacity_type: str = "on-demand"
    # None: the project's batch image (batch/Dockerfile: Ray 2.60, xgboost, torch).
    ray_image: str | None = None


@dataclass(frozen=True)
class PipelineSettings:
    """CDK Pipelines delivery of the serving system (off: `cdk deploy` the stacks directly)."""

    enabled: bool = False
    # GitHub (or other CodeConnections) repository "owner/name" and branch to deploy.
    repository: str | None = None
    branch: str = "main"
    # ARN of the CodeConnections (formerly CodeStar) connection to the repository.
    connection_arn: str | None = None


@dataclass(frozen=True)
class Settings:
    environment: DeploymentEnvironment
    cluster: ClusterSettings
    capacity: CapacitySettings
    gcs_store: GcsStoreSettings
    secrets: SecretsSettings
    serving: ServingSettings
    operations: OperationsSettings
    pipeline: PipelineSettings
    batch_teams: tuple[BatchTeamSettings, ...] = ()

    @staticmethod
    def from_context(context: Mapping[str, Any]) -> "Settings":
        return _Reader(context).settings()


def kubectl_layer_module(kubernetes_version: str) -> str:
    return f"aws_cdk.lambda_layer_kubectl_v{kubernetes_version.replace('1.', '', 1)}"


def installed_kubectl_layers() -> list[str]:
    return [
        v for v in EKS_CREATABLE_VERSIONS if importlib.util.find_spec(kubectl_layer_module(v))
    ]


# Context keys this module reads, with a one-line description (README and unknown-key help).
SETTING_KEYS: dict[str, str] = {
    "account": "AWS account id (12 digits); unset keeps the stacks environment-agnostic",
    "region": "AWS region, e.g. us-east-2; unset keeps the stacks environment-agnostic",
    "clusterName": "EKS cluster name",
    "kubernetesVersion": "EKS Kubernetes minor, as a string",
    "adminPrincipalArns": "IAM role/user ARNs given cluster-admin access entries",
    "endpointPublicAccessCidrs": "IPv4 CIDRs allowed to the public API endpoint; empty: private",
    "accelerator": "neuron (Inferentia2) or nvidia (GPU)",
    "capacityMode": "auto-mode (EKS Auto Mode + NodePool) or node-groups (managed node groups)",
    "acceleratorInstanceTypes": "instance types for the Ray workers; null: the accelerator's default",
    "acceleratorMinNodes": "accelerator nodes always running (at least 2: one Serve replica each)",
    "acceleratorMaxNodes": "upper bound on accelerator nodes",
    "gcsStoreEngine": "redis or valkey",
    "gcsStoreEngineVersion": "engine version; null: the engine's default",
    "gcsStoreNodeType": "ElastiCache node type",
    "huggingFaceTokenSecretName": "name of the Secrets Manager secret holding the HF token",
    "modelId": "Hugging Face model id the RayService serves",
    "readinessTimeoutMinutes": "how long cdk deploy waits for the RayService to be Ready",
    "availabilitySloPercent": "availability alarm threshold (percent of successful probes)",
    "alarmEmail": "optional e-mail address for availability alarm notifications",
    "batchTeams": "data-science teams, each with its own autoscaling Ray cluster (JSON list)",
    "pipeline": "true: synthesize the CDK Pipelines stack that deploys the serving system",
    "pipelineRepository": "repository the pipeline deploys, owner/name",
    "pipelineBranch": "branch the pipeline deploys",
    "pipelineConnectionArn": "ARN of the CodeConnections connection to the repository",
}

_CLUSTER_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")
_PRINCIPAL_ARN = re.compile(r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:(role|user)/[\w+=,.@/-]{1,512}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_NODE_TYPE = re.compile(r"^cache\.[a-z][a-z0-9-]*\.[a-z0-9]+$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_CONNECTION_ARN = re.compile(
    r"^arn:aws(-cn|-us-gov)?:(codestar-connections|codeconnections):[a-z0-9-]+:\d{12}:connection/[A-Za-z0-9-]+$"
)
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
# A camelCase key is a setting; feature flags ("@aws-cdk/…") and CLI keys ("aws:cdk:…") are not.
_SETTING_LIKE_KEY = re.compile(r"^[a-z][A-Za-z0-9]*$")


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


class _Reader:
    """Reads and checks each key, collecting every problem before failing."""

    def __init__(self, context: Mapping[str, Any]):
        self.context = context
        self.problems: list[str] = []

    def problem(self, key: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{key}={_show(value)}: {allowed}")

    def raw(self, key: str, default: Any) -> Any:
        value = self.context.get(key)
        return default if value is None else value

    def string(self, key: str, default: str | None, check: Callable[[str], str | None]) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem(key, value, "must be a string")
            return default
        error = check(value)
        if error:
            self.problem(key, value, error)
            return default
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key, default)
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, value, f"must be a whole number from {low} to {high}")
            return default
        if not low <= value <= high:
            self.problem(key, value, f"must be from {low} to {high}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            self.problem(key, value, "must be true or false")
            return default
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.raw(key, default)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(key, value, f"must be a number from {low:g} to {high:g}")
            return default
        if not low <= value <= high:
            self.problem(key, value, f"must be from {low:g} to {high:g}")
            return default
        return float(value)

    def string_list(self, key: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    self.problem(key, value, "is not a valid JSON list")
                    return default
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            self.problem(key, value, "must be a list of strings (JSON list or comma-separated)")
            return default
        return tuple(value)

    def check_unknown_keys(self) -> None:
        for key in self.context:
            if _SETTING_LIKE_KEY.match(key) and key not in SETTING_KEYS:
                close = difflib.get_close_matches(key, SETTING_KEYS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "known settings: " + ", ".join(SETTING_KEYS)
                self.problems.append(f"{key}: unknown setting; {hint}")

    def settings(self) -> Settings:
        self.check_unknown_keys()
        environment = DeploymentEnvironment(
            account=self.string("account", None, lambda v: None if _ACCOUNT.match(v) else "must be a 12-digit AWS account id"),
            region=self.string("region", None, lambda v: None if _REGION.match(v) else "must be an AWS region name such as us-east-2"),
        )
        cluster = self.cluster()
        capacity = self.capacity()
        gcs_store = self.gcs_store()
        secrets = SecretsSettings(
            hugging_face_token_secret_name=self.string(
                "huggingFaceTokenSecretName", SecretsSettings.hugging_face_token_secret_name, _check_secret_name
            )
        )
        serving = ServingSettings(
            model_id=self.string(
                "modelId", ServingSettings.model_id,
                lambda v: None if _MODEL_ID.match(v) else "must be a Hugging Face model id, <organization>/<model>",
            )
        )
        operations = OperationsSettings(
            readiness_timeout_minutes=self.integer(
                "readinessTimeoutMinutes", OperationsSettings.readiness_timeout_minutes, 5, READINESS_TIMEOUT_MAX_MINUTES
            ),
            availability_slo_percent=self.number("availabilitySloPercent", 99.0, 50.0, 99.99),
            alarm_email=self.string(
                "alarmEmail", None, lambda v: None if _EMAIL.match(v) else "must be an e-mail address"
            ),
        )
        pipeline = self.pipeline(environment)
        teams = self.batch_teams()
        if self.problems:
            raise SettingsError(self.problems)
        return Settings(environment, cluster, capacity, gcs_store, secrets, serving, operations, pipeline, teams)

    def batch_teams(self) -> tuple[BatchTeamSettings, ...]:
        key = "batchTeams"
        value = self.raw(key, [])
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                self.problem(key, value, "is not a valid JSON list")
                return ()
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            self.problem(key, value, "must be a JSON list of team objects")
            return ()
        teams = []
        for index, raw in enumerate(value):
            team = _batch_team(raw, f"{key}[{index}]", self.problems)
            if team is not None:
                teams.append(team)
        try:
            check_distinct_teams([_validation_team(t) for t in teams])
        except ValueError as error:
            self.problems.append(f"{key}: {error}")
        return tuple(teams)

    def pipeline(self, environment: DeploymentEnvironment) -> PipelineSettings:
        enabled = self.boolean("pipeline", False)
        repository = self.string(
            "pipelineRepository", None,
            lambda v: None if _REPOSITORY.match(v) else "must be a repository name, <owner>/<name>",
        )
        branch = self.string(
            "pipelineBranch", "main", lambda v: None if _BRANCH.match(v) else "must be a git branch name"
        )
        connection_arn = self.string(
            "pipelineConnectionArn", None,
            lambda v: None if _CONNECTION_ARN.match(v)
            else "must be a CodeConnections ARN, arn:aws:codeconnections:<region>:<account>:connection/<id>",
        )
        if enabled:
            # A pipeline deploys to one known place, and needs to know what to build.
            for key, value in (("account", environment.account), ("region", environment.region),
                               ("pipelineRepository", repository), ("pipelineConnectionArn", connection_arn)):
                if value is None:
                    self.problems.append(f"{key}: must be set when pipeline=true")
        return PipelineSettings(enabled, repository, branch, connection_arn)

    def cluster(self) -> ClusterSettings:
        defaults = ClusterSettings()
        name = self.string(
            "clusterName",
            defaults.name,
            lambda v: None
            if _CLUSTER_NAME.match(v)
            else "must be 1-40 lowercase letters, digits or hyphens, starting with a letter and "
            "ending with a letter or digit (a valid EKS cluster name and Kubernetes label value)",
        )
        version = self.string("kubernetesVersion", defaults.kubernetes_version, _check_kubernetes_version)
        arns = self.string_list("adminPrincipalArns", defaults.admin_principal_arns)
        for arn in arns:
            if not _PRINCIPAL_ARN.match(arn):
                hint = (
                    " (an assumed-role session; give the role's ARN, arn:aws:iam::<account>:role/<name>)"
                    if ":assumed-role/" in arn
                    else ""
                )
                self.problem("adminPrincipalArns", arn, "must be an IAM role or user ARN, "
                             f"arn:aws:iam::<12-digit account>:role/<name> or :user/<name>{hint}")
        cidrs = self.string_list("endpointPublicAccessCidrs", defaults.endpoint_public_access_cidrs)
        for cidr in cidrs:
            error = _check_ipv4_cidr(cidr)
            if error:
                self.problem("endpointPublicAccessCidrs", cidr, error)
        return ClusterSettings(name, version, arns, cidrs)

    def capacity(self) -> CapacitySettings:
        name = self.string(
            "accelerator", "neuron",
            lambda v: None if v in ACCELERATORS else "must be one of: " + ", ".join(ACCELERATORS),
        )
        accelerator = ACCELERATORS[name]
        mode = self.string(
            "capacityMode", "auto-mode",
            lambda v: None if v in CAPACITY_MODES else "must be one of: " + ", ".join(CAPACITY_MODES),
        )
        types = self.string_list("acceleratorInstanceTypes", None) or (accelerator.default_instance_type,)
        if not types:
            self.problem("acceleratorInstanceTypes", list(types), "must name at least one instance type")
        for instance_type in types:
            if instance_type not in accelerator.instance_types:
                other = [a.name for a in ACCELERATORS.values() if instance_type in a.instance_types]
                why = f" ({instance_type} is a {other[0]} instance type)" if other else ""
                self.problem(
                    "acceleratorInstanceTypes", instance_type,
                    f"is not a {name} instance type{why}; allowed for accelerator={name}: "
                    + ", ".join(accelerator.instance_types),
                )
        low = self.integer("acceleratorMinNodes", 2, MIN_ACCELERATOR_NODES, MAX_ACCELERATOR_NODES)
        high = self.integer("acceleratorMaxNodes", 4, MIN_ACCELERATOR_NODES, MAX_ACCELERATOR_NODES)
        if low > high:
            self.problem("acceleratorMinNodes", low, f"must not exceed acceleratorMaxNodes ({high})")
        return CapacitySettings(accelerator, mode, types, low, high)

    def gcs_store(self) -> GcsStoreSettings:
        engine = self.string(
            "gcsStoreEngine", "redis",
            lambda v: None if v in GCS_ENGINE_VERSIONS else "must be one of: " + ", ".join(GCS_ENGINE_VERSIONS),
        )
        allowed = GCS_ENGINE_VERSIONS[engine]
        version = self.string(
            "gcsStoreEngineVersion", DEFAULT_GCS_ENGINE_VERSION[engine],
            lambda v: None if v in allowed else f"must be one of {', '.join(allowed)} for gcsStoreEngine={engine}",
        )
        node_type = self.string(
            "gcsStoreNodeType", GcsStoreSettings.node_type,
            lambda v: None if _NODE_TYPE.match(v) and not v.startswith("cache.t1.")
            else "must be an ElastiCache node type such as cache.r7g.large (Multi-AZ failover needs a current generation)",
        )
        return GcsStoreSettings(engine, version, node_type)


_TEAM_FIELDS = {
    "name": "name", "namespace": "namespace", "cpus": "cpus", "memoryGib": "memory_gib",
    "instanceType": "instance_type", "minWorkers": "min_workers", "maxWorkers": "max_workers",
    "capacityType": "capacity_type", "rayImage": "ray_image",
}


def _batch_team(raw: dict, where: str, problems: list[str]) -> BatchTeamSettings | None:
    unknown = sorted(set(raw) - set(_TEAM_FIELDS))
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_TEAM_FIELDS)}")
        return None
    try:
        team = BatchTeamSettings(**{_TEAM_FIELDS[k]: v for k, v in raw.items()})
    except TypeError:
        problems.append(f"{where}: needs name and namespace")
        return None
    if (team.instance_type is None) == (team.cpus is None or team.memory_gib is None):
        problems.append(f"{where}: give either cpus and memoryGib (CPU workers) or instanceType (accelerator workers)")
        return None
    try:
        _validation_team(team)
    except (ValueError, TypeError) as error:
        problems.append(f"{where}: {error}")
        return None
    return team


def batch_team(team: BatchTeamSettings, ray_image: str) -> BatchTeam:
    """The charts' BatchTeam (which validates itself) for a team of the settings."""
    if team.instance_type is not None:
        accelerator = next(
            (a for a in ACCELERATORS.values() if team.instance_type in a.instance_types), ACCELERATORS["neuron"]
        )
        shape = AcceleratorWorkerShape(accelerator, team.instance_type)
    else:
        shape = CpuWorkerShape(cpus=team.cpus, memory_gib=team.memory_gib)
    return BatchTeam(
        name=team.name, namespace=team.namespace, ray_image=team.ray_image or ray_image, worker_shape=shape,
        min_workers=team.min_workers, max_workers=team.max_workers, capacity_type=team.capacity_type,
    )


def _validation_team(team: BatchTeamSettings) -> BatchTeam:
    # The image is only known at deploy time (an asset); any reference checks the rest.
    return batch_team(team, ray_image="batch-image")


def _check_kubernetes_version(version: str) -> str | None:
    if version not in EKS_CREATABLE_VERSIONS:
        return (
            "must be a Kubernetes minor EKS can create, written as a string: "
            + ", ".join(EKS_CREATABLE_VERSIONS)
        )
    installed = installed_kubectl_layers()
    if version not in installed:
        package = "aws-cdk.lambda-layer-kubectl-v" + version.split(".")[1]
        return (
            f"no kubectl layer for {version} is installed (add {package} to requirements.txt); "
            "versions with a layer installed: " + ", ".join(installed)
        )
    return None


def _check_ipv4_cidr(cidr: str) -> str | None:
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as error:
        return f"must be an IPv4 CIDR such as 203.0.113.0/24 ({error})"
    if network.version != 4:
        return "must be an IPv4 CIDR (EKS public endpoint access lists are IPv4 only)"
    if "/" not in cidr:
        return "must include a prefix length, e.g. 203.0.113.7/32"
    return None


def _check_secret_name(name: str) -> str | None:
    if not _SECRET_NAME.match(name):
        return "must be 1-512 letters, digits or /_+=.@- (a Secrets Manager secret name)"
    return None
