"""Batch teams: schemas, team isolation (taints, tolerations, labels), autoscaling, RayJobs on
the team cluster, the node-group variant, and refusals of bad team inputs."""

from __future__ import annotations

import copy
import shlex
from dataclasses import replace

import cdk8s
import pytest

from batch import pytorch_benchmark, xgboost_benchmark
from ray_serve_ha.assets import asset_path
from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import NEURON, NVIDIA
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
    PyTorchBenchmark,
    XGBoostBenchmark,
    pytorch_rayjob,
    xgboost_rayjob,
)
from ray_serve_ha.charts.batch_teams import (
    TEAM_LABEL,
    TEAM_TAINT_KEY,
    AcceleratorWorkerShape,
    BatchTeam,
    CpuWorkerShape,
    NodeTaint,
    check_distinct_teams,
    dashboard_url,
    raycluster_name,
    team_node_group_capacity_type,
    team_node_group_labels,
    team_node_group_taint,
    team_node_group_taints,
)
from tests.conftest import ROOT
from tests.crd_schemas import schema_errors

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


# --- RayJobs ---------------------------------------------------------------------------

@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
@pytest.mark.parametrize("make_job", [xgboost_rayjob, pytorch_rayjob], ids=["xgboost", "pytorch"])
def test_rayjobs_run_on_the_team_cluster_which_outlives_them(team, make_job):
    job = make_job(team)
    spec = job["spec"]
    assert job["metadata"]["namespace"] == team.namespace
    assert spec["clusterSelector"] == {"ray.io/cluster": raycluster_name(team)}
    assert team_raycluster(team)["metadata"]["name"] == raycluster_name(team)
    assert "rayClusterSpec" not in spec
    # The operator's rules for clusterSelector jobs (ValidateRayJobSpec): no SidecarMode, no
    # suspend, and no TTL unless the cluster is shut down with the job.
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is False
    assert "ttlSecondsAfterFinished" not in spec and "suspend" not in spec
    # Without entrypoint resources the driver runs on the head, which mounts the scripts.
    assert not {"entrypointNumCpus", "entrypointNumGpus", "entrypointResources"} & set(spec)
    assert spec["backoffLimit"] == 0
    assert len(job["metadata"]["name"]) <= 47


@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
def test_rayjob_entrypoints_run_a_mounted_script_with_arguments_it_accepts(team):
    for job, script in ((xgboost_rayjob(team), xgboost_benchmark), (pytorch_rayjob(team), pytorch_benchmark)):
        python, path, *args = shlex.split(job["spec"]["entrypoint"])
        assert python == "python"
        assert path.startswith(f"{SCRIPTS_MOUNT_PATH}/") and path.rsplit("/", 1)[1] in team_job_scripts(team)["data"]
        parsed = script.parse_args(args)
        # One Ray Train worker per worker pod, taking the pod's CPUs.
        assert parsed.workers == team.max_workers
        assert parsed.cpus_per_worker == int(worker_spec(team)["containers"][0]["resources"]["limits"]["cpu"])


def test_data_size_and_epochs_are_configurable():
    xgb = xgboost_rayjob(
        CPU_TEAM, XGBoostBenchmark(rows=5_000_000, features=50, rounds=200, workers=2, cpus_per_worker=2)
    )
    parsed = xgboost_benchmark.parse_args(shlex.split(xgb["spec"]["entrypoint"])[2:])
    assert (parsed.rows, parsed.features, parsed.rounds, parsed.workers, parsed.cpus_per_worker) == (
        5_000_000, 50, 200, 2, 2,
    )  # fmt: skip
    torch_job = pytorch_rayjob(NEURON_TEAM, PyTorchBenchmark(rows=1_000_000, epochs=10, batch_size=512))
    parsed = pytorch_benchmark.parse_args(shlex.split(torch_job["spec"]["entrypoint"])[2:])
    assert (parsed.rows, parsed.epochs, parsed.batch_size, parsed.use_gpu) == (1_000_000, 10, 512, False)


def test_nvidia_teams_train_pytorch_on_their_gpus():
    team = BatchTeam(
        name="speech",
        namespace="team-speech",
        ray_image="111122223333.dkr.ecr.us-east-2.amazonaws.com/ray-batch:nvidia",
        worker_shape=AcceleratorWorkerShape(accelerator=NVIDIA, instance_type="g5.12xlarge"),
        max_workers=2,
    )
    parsed = pytorch_benchmark.parse_args(shlex.split(pytorch_rayjob(team)["spec"]["entrypoint"])[2:])
    # g5.12xlarge: 4 GPUs and 47 CPUs per worker pod; one Ray Train worker per GPU.
    assert (parsed.use_gpu, parsed.workers, parsed.cpus_per_worker) == (True, 8, 11)
    assert schema_errors(team_raycluster(team)) == [] and schema_errors(pytorch_rayjob(team)) == []


# --- refusals --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Analytics", "1team", "team-", "team.a", "team_a", ""])
def test_a_team_name_that_is_not_a_dns_1035_label_is_refused(name):
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, name=name)
    assert str(error.value) == (
        f"team name {name!r} is not a DNS-1035 label: use lowercase letters, digits and '-', "
        "starting with a letter and ending with a letter or digit"
    )


def test_a_39_character_team_name_is_accepted_and_40_refused():
    team = replace(CPU_TEAM, name="a" * 39)
    assert len(pytorch_rayjob(team)["metadata"]["name"]) == 47
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, name="a" * 40)
    assert str(error.value) == (
        f"team name {'a' * 40!r} is 40 characters long; at most 39 are allowed because the team's "
        "RayCluster and RayJob names are made from it"
    )


@pytest.mark.parametrize("namespace", ["Team", "team_a", "-team", "a" * 64])
def test_a_namespace_that_is_not_a_dns_1123_label_is_refused(namespace):
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, namespace=namespace)
    assert str(error.value) == (
        f"team 'analytics' namespace {namespace!r} is not a DNS-1123 label: at most 63 lowercase letters, "
        "digits and '-', starting and ending with a letter or digit"
    )


@pytest.mark.parametrize("namespace", ["ray-serving", "kube-system", "default"])
def test_a_shared_namespace_is_refused(namespace):
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, namespace=namespace)
    assert str(error.value) == (
        f"team 'analytics' namespace {namespace!r} is reserved; a team needs a namespace of its own, not one of: "
        "default, external-secrets, kube-node-lease, kube-public, kube-system, kuberay-system, neuron-system, "
        "nvidia-device-plugin, ray-serving"
    )


def test_min_workers_above_max_workers_is_refused():
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, min_workers=5, max_workers=4)
    assert str(error.value) == "team 'analytics' min_workers=5 is above max_workers=4"


@pytest.mark.parametrize(("min_workers", "max_workers"), [(-1, 2), (0, 0)])
def test_negative_or_no_workers_are_refused(min_workers, max_workers):
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, min_workers=min_workers, max_workers=max_workers)
    assert str(error.value) == (
        f"team 'analytics' min_workers={min_workers}, max_workers={max_workers}: min_workers must be at least 0 "
        "and max_workers at least 1"
    )


def test_an_unknown_capacity_type_is_refused():
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, capacity_type="preemptible")
    assert str(error.value) == "team 'analytics' capacity_type 'preemptible' must be one of: on-demand, spot"


def test_an_empty_image_and_a_shape_of_the_wrong_type_are_refused():
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, ray_image="")
    assert str(error.value) == "team 'analytics' ray_image '' must be an image reference"
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, worker_shape={"cpu": "4"})
    assert str(error.value) == (
        "team 'analytics' worker_shape must be a CpuWorkerShape or an AcceleratorWorkerShape, got dict"
    )


def test_bad_worker_shapes_are_refused():
    with pytest.raises(ValueError) as error:
        AcceleratorWorkerShape(accelerator=NEURON, instance_type="g5.2xlarge")
    assert str(error.value) == (
        "instance type 'g5.2xlarge' is not a neuron instance type: inf2.xlarge, inf2.8xlarge, inf2.24xlarge, "
        "inf2.48xlarge"
    )
    with pytest.raises(ValueError) as error:
        CpuWorkerShape(cpus=0, memory_gib=4)
    assert str(error.value) == "CPU worker shape cpus=0, memory_gib=4: both must be at least 1"


def test_teams_sharing_a_name_or_namespace_are_refused():
    check_distinct_teams(TEAMS)
    with pytest.raises(ValueError) as error:
        check_distinct_teams([CPU_TEAM, replace(NEURON_TEAM, namespace=CPU_TEAM.namespace)])
    assert str(error.value) == "two teams have the namespace 'team-analytics'; each team needs its own"
    with pytest.raises(ValueError) as error:
        check_distinct_teams([CPU_TEAM, replace(NEURON_TEAM, name=CPU_TEAM.name)])
    assert str(error.value) == "two teams have the name 'analytics'; each team needs its own"


def test_a_job_larger_than_the_team_cluster_is_refused():
    with pytest.raises(ValueError) as error:
        xgboost_rayjob(CPU_TEAM, XGBoostBenchmark(workers=5))
    assert str(error.value) == (
        "5 Ray Train workers of 4 CPUs do not fit on team 'analytics''s 4 worker pods of 4 CPUs"
    )
    with pytest.raises(ValueError) as error:
        pytorch_rayjob(CPU_TEAM, PyTorchBenchmark(cpus_per_worker=8))
    assert str(error.value) == (
        "4 Ray Train workers of 8 CPUs do not fit on team 'analytics''s 4 worker pods of 4 CPUs"
    )


def test_bad_job_inputs_are_refused():
    with pytest.raises(ValueError) as error:
        XGBoostBenchmark(rows=0)
    assert str(error.value) == "XGBoost benchmark rows=0 must be at least 1"
    with pytest.raises(ValueError) as error:
        PyTorchBenchmark(epochs=0)
    assert str(error.value) == "PyTorch benchmark epochs=0 must be at least 1"
    with pytest.raises(ValueError) as error:
        xgboost_rayjob(CPU_TEAM, XGBoostBenchmark(rows=2))
    assert str(error.value) == "2 rows are fewer than the 4 Ray Train workers: every worker needs rows"
    with pytest.raises(ValueError) as error:
        xgboost_rayjob(CPU_TEAM, name="Nightly_XGBoost")
    assert str(error.value) == "RayJob name 'Nightly_XGBoost' must be a DNS-1035 label of at most 47 characters"


# --- the job registry ------------------------------------------------------------------

def test_every_job_script_has_a_registry_entry():
    from ray_serve_ha.charts.batch_jobs import JOBS
    from ray_serve_ha.charts.job_args import JOB_ARGUMENTS

    assert set(JOBS) == set(JOB_ARGUMENTS)
    assert all(JOBS[name].spec is spec for name, spec in JOB_ARGUMENTS.items())
    assert all((asset_path("batch") / job.script).is_file() for job in JOBS.values())


@pytest.mark.parametrize(
    ("script", "make_job"), [(xgboost_benchmark, xgboost_rayjob), (pytorch_benchmark, pytorch_rayjob)],
    ids=["xgboost", "pytorch"],
)
def test_the_chart_and_the_script_read_one_argument_spec(script, make_job):
    # A RayJob with no arguments runs what the script runs by default (workers, CPUs and GPUs
    # excepted: the team's pods decide those).
    from ray_serve_ha.charts.job_args import PLACEMENT

    def chosen(args):
        return {k: v for k, v in vars(args).items() if k not in PLACEMENT}

    by_default = script.parse_args([])
    from_rayjob = script.parse_args(shlex.split(make_job(CPU_TEAM)["spec"]["entrypoint"])[2:])
    assert chosen(from_rayjob) == chosen(by_default)
    assert by_default.rows == 100_000


def test_a_new_job_is_its_spec_and_one_registry_entry(monkeypatch):
    from dataclasses import dataclass as frozen

    from ray_serve_ha.charts.batch_jobs import JOBS, BatchJob
    from ray_serve_ha.charts.job_args import JOB_ARGUMENTS, JobArguments, Option

    spec = JobArguments("echo", "echo_benchmark.py", "Echo", (Option("rows", 10), Option("workers", 1)))

    @frozen(frozen=True)
    class Echo:
        rows: int = spec.default("rows")
        workers: int | None = None
        cpus_per_worker: int | None = None

    monkeypatch.setitem(JOB_ARGUMENTS, "echo", spec)
    monkeypatch.setitem(JOBS, "echo", BatchJob(spec, Echo))
    rayjobs = [o for o in BatchJobsChart(cdk8s.App(), "jobs", team=CPU_TEAM).to_json() if o["kind"] == "RayJob"]
    assert [job["metadata"]["name"] for job in rayjobs] == ["analytics-xgboost", "analytics-pytorch", "analytics-echo"]
    echo = rayjobs[-1]
    assert schema_errors(echo) == []
    # The placement's workers where the spec has the option; no CPUs where it has none.
    assert shlex.split(echo["spec"]["entrypoint"]) == [
        "python",
        f"{SCRIPTS_MOUNT_PATH}/echo_benchmark.py",
        "--rows",
        "10",
        "--workers",
        "4",
    ]


def test_a_chart_of_chosen_jobs_and_their_arguments():
    chart = BatchJobsChart(cdk8s.App(), "jobs", team=CPU_TEAM, jobs={"pytorch": PyTorchBenchmark(epochs=2)})
    (job,) = chart.to_json()
    assert job["metadata"]["name"] == "analytics-pytorch"
    assert "--epochs 2" in job["spec"]["entrypoint"]


def test_unknown_jobs_and_wrong_arguments_are_refused():
    from ray_serve_ha.charts.batch_jobs import rayjob

    with pytest.raises(ValueError, match=r"^unknown job\(s\) lightgbm; jobs: xgboost, pytorch$"):
        BatchJobsChart(cdk8s.App(), "jobs", team=CPU_TEAM, jobs={"lightgbm": None})
    with pytest.raises(ValueError, match=r"^job 'xgboost' takes XGBoostBenchmark, not PyTorchBenchmark$"):
        rayjob(CPU_TEAM, "xgboost", PyTorchBenchmark())


def test_team_names_leave_room_for_the_longest_job_suffix():
    from ray_serve_ha.charts.batch_teams import max_team_name_length
    from ray_serve_ha.charts.job_args import JOB_ARGUMENTS
    from ray_serve_ha.charts.ray_pods import MAX_RAYJOB_NAME_LENGTH

    longest = max(JOB_ARGUMENTS, key=len)
    team = replace(CPU_TEAM, name="t" * max_team_name_length())
    assert len(f"{team.name}-{longest}") == MAX_RAYJOB_NAME_LENGTH
    assert xgboost_rayjob(team) and pytorch_rayjob(team)


def test_the_ray_pod_module_needs_no_cdk8s():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = "import sys, ray_serve_ha.charts.ray_pods; sys.exit('cdk8s' in sys.modules or 'constructs' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_the_rayservice_and_team_clusters_share_their_pod_builders():
    # One builder for each: resources, head group, worker group, autoscaler (ray_serve_ha/charts/ray_pods.py).
    from ray_serve_ha.charts import batch, rayservice
    from ray_serve_ha.charts.ray_pods import autoscaling, container_resources, head_group, worker_group

    for module in (batch, rayservice):
        assert module.container_resources is container_resources
        assert module.head_group is head_group
        assert module.worker_group is worker_group
        assert module.autoscaling is autoscaling
        assert not hasattr(module, "_resources")
