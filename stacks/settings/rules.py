"""The rules across values: instance types against the accelerator and the model, node
counts, engine versions against TLS, a team's workers against its node sizes, what the nodes
must hold, and what an existing VPC or cluster needs. Each rule skips inputs already
refused on their own, so one message names every problem once."""

from __future__ import annotations

from collections.abc import Callable

from ray_serve_ha.charts.accelerators import ACCELERATORS, accelerator_of_instance_type
from ray_serve_ha.charts.batch_teams import (
    distinct_teams_problem,
)
from ray_serve_ha.charts.capacity import (
    CapacityMode,
    ServingCapacityType,
)
from ray_serve_ha.charts.capacity_plan import (
    AUTO_MODE_DEFAULT_DISK_GIB,
    MAX_SYSTEM_NODES,
    accelerator_node_disk,
    team_head,
    team_node_disk,
)
from ray_serve_ha.charts.node_sizing import CPU_INSTANCE_TYPES, cpu_instance_type
from ray_serve_ha.constructs.gcs_store_engine import (
    GCS_ENGINE_VERSIONS,
    TRANSIT_ENCRYPTION_MODE_MIN_VERSION,
    tls_versions,
)
from stacks.settings.model import (
    BatchTeamSettings,
    SettingsModel,
    team_image,
)


def _existing_infrastructure_problems(model: SettingsModel, ok: Callable[..., bool]) -> list[str]:
    problems = []
    cluster_keys = ("existingClusterSecurityGroupId", "existingClusterEndpoint",
                    "existingClusterCertificateAuthorityData")
    cluster_values = (model.existing_cluster_security_group_id, model.existing_cluster_endpoint,
                      model.existing_cluster_certificate_authority_data)
    if model.existing_cluster_name is not None and ok("existingClusterName"):
        name = f"existingClusterName={model.existing_cluster_name!r}"
        missing = [k for k, v in zip(cluster_keys, cluster_values, strict=True) if v is None and ok(k)]
        if missing:
            problems.append(f"{name}: set {', '.join(missing)} too (from aws eks describe-cluster)")
        if model.vpc_id is None and ok("vpcId"):
            problems.append(f"{name}: set vpcId to the cluster's VPC (and account and region)")
        if model.existing_cluster_name != model.cluster_name and ok("clusterName"):
            problems.append(
                f"{name}: set clusterName to the same name (the kubeconfig and drill commands and the "
                f"stack names use it; clusterName={model.cluster_name!r})"
            )
        if model.endpoint_public_access_cidrs and ok("endpointPublicAccessCidrs"):
            problems.append(
                f"{name}: endpointPublicAccessCidrs configures a cluster this app creates; an existing "
                "cluster keeps its own endpoint access (aws eks update-cluster-config)"
            )
    else:
        given = [k for k, v in zip(cluster_keys, cluster_values, strict=True) if v is not None and ok(k)]
        if given and ok("existingClusterName"):
            problems.append(f"{', '.join(given)}: describe an existing cluster; set existingClusterName too")
    if model.vpc_id is not None and ok("vpcId"):
        missing = [key for key, value in (("account", model.account), ("region", model.region)) if value is None]
        if missing and ok(*missing):
            problems.append(
                f"vpcId={model.vpc_id!r}: an existing VPC is looked up at synth in one account and region; "
                f"set {' and '.join(missing)} too (-c account=<12 digits> -c region=<name>)"
            )
    if model.private_subnet_ids is not None and model.vpc_id is None and ok("privateSubnetIds", "vpcId"):
        problems.append("privateSubnetIds: names subnets of an existing VPC; set vpcId too, or leave it unset")
    return problems

# --- rules across fields: each skips inputs that were already refused ------------------

def problems_across_fields(model: SettingsModel, refused: set[str], team_indexes: list[int] | None = None) -> list[str]:
    """Every rule across fields that fails. `team_indexes`: where each team stood in the
    context when teams refused on their own were left out."""
    problems: list[str] = []

    def ok(*keys: str) -> bool:
        return not refused.intersection(keys)

    model_known = ok("modelId", "modelWeightsGb")
    if model_known:
        try:
            model.served_model()
        except ValueError as problem:
            problems.append(str(problem))
            model_known = False
    if model_known and ok("accelerator", "acceleratorInstanceTypes"):
        problems += _instance_type_problems(model)
    if ok("acceleratorMinNodes", "acceleratorMaxNodes") and model.accelerator_min_nodes > model.accelerator_max_nodes:
        problems.append(
            f"acceleratorMinNodes={model.accelerator_min_nodes}: must not exceed acceleratorMaxNodes "
            f"({model.accelerator_max_nodes})"
        )
    if ok("servingCapacityType", "onDemandReplicas", "acceleratorMinNodes"):
        problems += _floor_problems(model)
    if ok("gcsStoreEngine", "gcsStoreEngineVersion"):
        problems += _engine_version_problems(model)
    if model.pipeline and ok("pipeline"):
        for key, value in (("account", model.account), ("region", model.region),
                           ("pipelineRepository", model.pipeline_repository),
                           ("pipelineConnectionArn", model.pipeline_connection_arn)):
            if value is None and ok(key):
                problems.append(f"{key}: must be set when pipeline=true")
    team_problems = []
    if ok("batchTeams", "capacityMode"):
        team_problems = _team_problems(model, team_indexes or list(range(len(model.batch_teams))))
        problems += team_problems
    if model_known and not team_problems and ok("batchTeams", "capacityMode", "accelerator", "acceleratorNodeDiskGib",
                                                "acceleratorMinNodes", "acceleratorMaxNodes"):
        problems += _node_problems(model)
    problems += _existing_infrastructure_problems(model, ok)
    return problems

def _instance_type_problems(model: SettingsModel) -> list[str]:
    key, accelerator = "acceleratorInstanceTypes", ACCELERATORS[model.accelerator]
    problems = []
    for instance_type in model.instance_types:
        if instance_type not in accelerator.instance_types:
            other = accelerator_of_instance_type(instance_type)
            why = f" ({instance_type} is a {other.name} instance type)" if other else ""
            problems.append(
                f"{key}={instance_type!r}: is not a {accelerator.name} instance type{why}; allowed for "
                f"accelerator={accelerator.name}: {', '.join(accelerator.instance_types)}"
            )
            continue
        reason = accelerator.unfit_reason(instance_type, model.served_model())
        if reason:
            problems.append(f"{key}={instance_type!r}: cannot serve the model: {reason}")
    return problems

def _floor_problems(model: SettingsModel) -> list[str]:
    """With spot replicas, the on-demand floor leaves at least one replica to spot: the spot
    deployment gets traffic in proportion to its replicas, so it could never scale up from none."""
    if model.serving_capacity_type != ServingCapacityType.MIXED:
        return []
    floor, least = model.on_demand_replicas, model.accelerator_min_nodes
    if 1 <= floor < least:
        return []
    why = (
        "a floor of 0 is no floor: a spot interruption could take every replica"
        if floor == 0
        else f"acceleratorMinNodes={least} replicas leave none to spot, and acceleratorMaxNodes="
        f"{model.accelerator_max_nodes} would add spot replicas only under load the router never sends them"
    )
    return [
        f"onDemandReplicas={floor}: with servingCapacityType=mixed it must be from 1 to acceleratorMinNodes - 1 "
        f"({least - 1}); {why}. Raise acceleratorMinNodes, lower onDemandReplicas, or use "
        "servingCapacityType=on-demand"
    ]


def _engine_version_problems(model: SettingsModel) -> list[str]:
    engine, version = model.gcs_store_engine, model.engine_version
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

def _team_problems(model: SettingsModel, indexes: list[int]) -> list[str]:
    problems = []
    for index, team in zip(indexes, model.batch_teams, strict=False):
        where = f"batchTeams[{index}]"
        problem = team.team_problem()
        if problem is None and model.capacity_mode == CapacityMode.NODE_GROUPS and team.cpus is not None:
            problem = _node_group_fit_problem(team)
        if problem:
            problems.append(f"{where}: {problem}")
    if not problems and (clash := distinct_teams_problem([(t.name, t.namespace) for t in model.batch_teams])):
        problems.append(f"batchTeams: {clash}")
    return problems

# --- what the nodes must hold ----------------------------------------------------------

def _node_problems(model: SettingsModel) -> list[str]:
    problems = []
    accelerator = ACCELERATORS[model.accelerator]
    need = accelerator_node_disk(accelerator, model.served_model())
    if model.accelerator_node_disk_gib is not None and model.accelerator_node_disk_gib < need.min_gib:
        problems.append(
            f"acceleratorNodeDiskGib={model.accelerator_node_disk_gib}: a {need.role} keeps {need.explain()}; "
            f"set at least {need.min_gib}, or leave it unset"
        )
    if model.capacity_mode == CapacityMode.AUTO_MODE:
        # Team pools use Auto Mode's default NodeClass, whose disk this project does not set.
        for index, team in enumerate(model.batch_teams):
            team_disk = team_node_disk(team.name, team_image(team))
            if team_disk.min_gib > AUTO_MODE_DEFAULT_DISK_GIB:
                problems.append(
                    f"batchTeams[{index}]: a {team_disk.role} keeps {team_disk.explain()}, more than the "
                    f"{AUTO_MODE_DEFAULT_DISK_GIB} GiB of EKS Auto Mode's default NodeClass"
                )
    else:
        nodes, head = model.capacity().system_nodes, team_head("head")
        if nodes.max_nodes > MAX_SYSTEM_NODES:
            problems.append(
                f"batchTeams: {len(model.batch_teams)} teams need {nodes.max_nodes} {nodes.instance_type} system "
                f"nodes for their Ray heads (a head of {head.cpu_milli / 1000:g} CPUs and "
                f"{head.memory_mib / 1024:g} GiB each, plus the serving head, an upgrade's second head, the chat "
                f"UI and the operators); a managed node group holds at most {MAX_SYSTEM_NODES}: use fewer teams, "
                "or capacityMode=auto-mode"
            )
    return problems


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
