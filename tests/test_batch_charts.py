"""Batch teams: schemas, team isolation (taints, tolerations, labels), the node pools and node
groups, and the team Ray cluster (autoscaling, job scripts, dashboard)."""

from __future__ import annotations

import copy

import cdk8s
import pytest

from ray_serve_ha.assets import asset_path
from ray_serve_ha.charts import constants
from ray_serve_ha.charts.batch import (
    SCRIPTS_MOUNT_PATH,
    BatchTeamChart,
    team_job_scripts,
    team_namespace,
    team_node_pool,
    team_raycluster,
)
from ray_serve_ha.charts.batch_jobs import (
    BatchJobsChart,
    xgboost_rayjob,
)
from ray_serve_ha.charts.batch_teams import (
    TEAM_LABEL,
    TEAM_TAINT_KEY,
    NodeTaint,
    dashboard_url,
    team_node_group_capacity_type,
    team_node_group_labels,
    team_node_group_taint,
    team_node_group_taints,
)
from tests.batch_team_inputs import (
    ALL_OBJECTS,
    CPU_TEAM,
    NEURON_TEAM,
    TEAMS,
    node_pool_labels,
    node_pool_taints,
    other,
    requirement,
    team_objects,
    tolerates,
    worker_spec,
)
from tests.conftest import ROOT
from tests.crd_schemas import schema_errors


@pytest.fixture(scope="module")
def synthesized() -> dict[str, list[dict]]:
    app = cdk8s.App()
    return {
        team.name: BatchTeamChart(app, f"batch-team-{team.name}", team=team).to_json()
        + BatchJobsChart(app, f"batch-jobs-{team.name}", team=team).to_json()
        for team in TEAMS
    }


# --- schemas ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "obj",
    ALL_OBJECTS,
    ids=[f"{o['kind']}-{o['metadata'].get('namespace', '')}-{o['metadata']['name']}" for o in ALL_OBJECTS],
)
def test_every_object_validates_against_its_schema(obj):
    assert schema_errors(obj) == []


@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
def test_charts_emit_exactly_the_spec_functions_output_namespace_first(synthesized, team):
    def key(o: dict) -> tuple:
        return (o["kind"], o["metadata"]["name"])

    emitted = synthesized[team.name]
    assert sorted(emitted, key=key) == sorted(team_objects(team), key=key)
    # kubectl applies a manifest in order: the namespace before anything in it, and the
    # scripts before the head that mounts them.
    kinds = [o["kind"] for o in emitted]
    assert kinds.index("Namespace") < min(i for i, o in enumerate(emitted) if "namespace" in o["metadata"])
    assert kinds.index("ConfigMap") < kinds.index("RayCluster")


def test_node_groups_mode_emits_no_node_pool():
    objects = BatchTeamChart(cdk8s.App(), "team", team=CPU_TEAM, node_pool=False).to_json()
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "Namespace", "RayCluster"]


@pytest.mark.parametrize(
    ("mutate", "expected_path"),
    [
        (lambda o: o["spec"].update(enableInTreeAutoScaling=True), "spec"),
        (lambda o: o["spec"]["workerGroupSpecs"][0].update(maxReplicas="4"), "spec/workerGroupSpecs/0/maxReplicas"),
    ],
    ids=["misspelled-field", "wrong-type"],
)
def test_a_broken_raycluster_fails_the_schema_check(mutate, expected_path):
    broken = copy.deepcopy(team_raycluster(CPU_TEAM))
    mutate(broken)
    errors = schema_errors(broken)
    assert errors and all(e.startswith(f"{expected_path}: ") for e in errors), errors


def test_a_broken_node_pool_and_rayjob_fail_the_schema_check():
    pool = copy.deepcopy(team_node_pool(NEURON_TEAM))
    pool["spec"]["template"]["spec"]["taints"][0]["effect"] = "NoScheduleAtAll"
    job = copy.deepcopy(xgboost_rayjob(CPU_TEAM))
    job["spec"]["clusterSelector"] = {"ray.io/cluster": 1}
    assert schema_errors(pool) != []
    assert schema_errors(job) != []


# --- isolation -------------------------------------------------------------------------

@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
def test_workers_tolerate_every_taint_of_their_team_nodes_and_no_other_team_taint(team):
    tolerations = worker_spec(team)["tolerations"]
    for taint in node_pool_taints(team):
        assert any(tolerates(t, taint) for t in tolerations), f"{team.name} workers cannot land on their nodes"
    other_team_taint = {"key": TEAM_TAINT_KEY, "value": other(team).name, "effect": "NoSchedule"}
    assert not any(tolerates(t, other_team_taint) for t in tolerations)
    # By value: a toleration of the key alone would let the workers onto every team's nodes.
    (team_toleration,) = [t for t in tolerations if t["key"] == TEAM_TAINT_KEY]
    assert team_toleration == {"key": TEAM_TAINT_KEY, "operator": "Equal", "value": team.name, "effect": "NoSchedule"}


@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
def test_workers_select_their_team_nodes_and_never_another_team_nodes(team):
    selector = worker_spec(team)["nodeSelector"]
    assert selector[TEAM_LABEL] == team.name
    assert selector.items() <= node_pool_labels(team).items()
    assert selector.items() <= team_node_group_labels(team).items()
    assert not selector.items() <= node_pool_labels(other(team)).items()


@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
def test_head_holds_no_work_and_stays_off_team_nodes(team):
    head = team_raycluster(team)["spec"]["headGroupSpec"]
    assert head["rayStartParams"] == {"num-cpus": "0"}
    spec = head["template"]["spec"]
    assert "tolerations" not in spec and "nodeSelector" not in spec
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    as_sets = [{(e["key"], tuple(e["values"])) for e in t["matchExpressions"]} for t in terms]
    assert as_sets == [
        {("karpenter.sh/nodepool", (constants.HEADS_POOL,)), ("karpenter.sh/capacity-type", ("on-demand",))},
        {(constants.NODE_ROLE_LABEL, ("system",)), ("eks.amazonaws.com/capacityType", ("ON_DEMAND",))},
    ]
    assert head["template"]["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}


@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
def test_everything_of_a_team_is_in_its_namespace_and_labelled(team):
    objects = team_objects(team)
    namespaced = [o for o in objects if o["kind"] not in ("Namespace", "NodePool")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {team.namespace}
    assert all(o["metadata"]["labels"][TEAM_LABEL] == team.name for o in objects)
    assert team_namespace(team)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"


def test_two_teams_share_no_names():
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in ALL_OBJECTS]
    assert len(names) == len(set(names))
    assert team_node_pool(CPU_TEAM)["metadata"]["name"] != team_node_pool(NEURON_TEAM)["metadata"]["name"]


# --- node pools and node groups --------------------------------------------------------

def test_cpu_team_node_pool_is_on_demand_general_purpose_with_the_team_taint():
    pool = team_node_pool(CPU_TEAM)
    assert pool["spec"]["template"]["spec"]["nodeClassRef"] == {
        "group": "eks.amazonaws.com",
        "kind": "NodeClass",
        "name": "default",
    }
    assert requirement(CPU_TEAM, "karpenter.sh/capacity-type")["values"] == ["on-demand"]
    assert requirement(CPU_TEAM, "eks.amazonaws.com/instance-category")["values"] == ["c", "m", "r"]
    assert node_pool_taints(CPU_TEAM) == [{"key": TEAM_TAINT_KEY, "value": "analytics", "effect": "NoSchedule"}]
    assert node_pool_labels(CPU_TEAM) == {TEAM_LABEL: "analytics"}
    # Twice the workers' requests (4 workers x 4 CPUs, 16 GiB).
    assert pool["spec"]["limits"] == {"cpu": "32", "memory": "128Gi"}


def test_neuron_team_node_pool_is_spot_inf2_with_team_and_neuron_taints():
    pool = team_node_pool(NEURON_TEAM)
    assert requirement(NEURON_TEAM, "karpenter.sh/capacity-type")["values"] == ["spot"]
    assert requirement(NEURON_TEAM, "eks.amazonaws.com/instance-family")["values"] == ["inf2"]
    assert requirement(NEURON_TEAM, "node.kubernetes.io/instance-type")["values"] == ["inf2.xlarge"]
    assert node_pool_taints(NEURON_TEAM) == [
        {"key": TEAM_TAINT_KEY, "value": "vision", "effect": "NoSchedule"},
        {"key": "aws.amazon.com/neuron", "effect": "NoSchedule"},
    ]
    assert node_pool_labels(NEURON_TEAM) == {TEAM_LABEL: "vision", constants.ACCELERATOR_LABEL: "neuron"}
    # One worker per inf2.xlarge (4 vCPUs, 16 GiB), three workers at most.
    assert pool["spec"]["limits"] == {"cpu": "12", "memory": "48Gi"}
    assert pool["spec"]["disruption"]["consolidationPolicy"] == "WhenEmpty"


@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
def test_node_groups_carry_what_the_node_pool_carries(team):
    assert team_node_group_labels(team) == node_pool_labels(team)
    assert [t.manifest() for t in team_node_group_taints(team)] == node_pool_taints(team)
    assert team_node_group_taint(team) == NodeTaint(key="ray-serve-ha.dev/team", value=team.name, effect="NoSchedule")


def test_node_group_capacity_types_follow_the_team_setting():
    assert team_node_group_capacity_type(CPU_TEAM) == "ON_DEMAND"
    assert team_node_group_capacity_type(NEURON_TEAM) == "SPOT"


# --- the Ray cluster -------------------------------------------------------------------

@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
def test_cluster_autoscales_between_the_team_bounds(team):
    spec = team_raycluster(team)["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == 300
    (group,) = spec["workerGroupSpecs"]
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (
        team.min_workers,
        team.min_workers,
        team.max_workers,
    )
    assert spec["authOptions"] == {"mode": "token"} and spec["rayVersion"] == "2.60.0"


def test_worker_resources_follow_the_shape():
    cpu = worker_spec(CPU_TEAM)["containers"][0]["resources"]
    assert cpu == {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}}
    neuron = worker_spec(NEURON_TEAM)["containers"][0]["resources"]
    # inf2.xlarge sized as the serving workers are (Karpenter's estimate: 3.92 CPU, 13.8 GiB,
    # less DaemonSets and a margin), and its one chip.
    expected = {"cpu": "3", "memory": "12Gi", "aws.amazon.com/neuron": "1"}
    assert neuron == {"requests": expected, "limits": expected}
    (group,) = team_raycluster(NEURON_TEAM)["spec"]["workerGroupSpecs"]
    assert group["resources"] == {"neuron_cores": "2"}


@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
def test_head_mounts_the_job_scripts_from_the_config_map(team):
    spec = team_raycluster(team)["spec"]["headGroupSpec"]["template"]["spec"]
    (mount,) = spec["containers"][0]["volumeMounts"]
    (volume,) = spec["volumes"]
    config_map = team_job_scripts(team)
    assert mount == {"name": volume["name"], "mountPath": SCRIPTS_MOUNT_PATH, "readOnly": True}
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    batch = asset_path("batch")
    assert config_map["data"] == {
        **{name: (batch / name).read_text()
           for name in ("job_runner.py", "pytorch_benchmark.py", "xgboost_benchmark.py")},
        "job_args.py": (ROOT / "ray_serve_ha" / "charts" / "job_args.py").read_text(),
    }
    # The argument spec at its import path (the heads have no ray_serve_ha installed).
    assert {item["key"]: item["path"] for item in volume["configMap"]["items"]} == {
        "job_runner.py": "job_runner.py", "pytorch_benchmark.py": "pytorch_benchmark.py",
        "xgboost_benchmark.py": "xgboost_benchmark.py", "job_args.py": "ray_serve_ha/charts/job_args.py",
    }


def test_dashboard_url_is_the_kuberay_head_service():
    assert dashboard_url(CPU_TEAM) == "http://analytics-ray-head-svc.team-analytics.svc.cluster.local:8265"
