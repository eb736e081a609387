"""BatchStack: per-team Ray clusters and benchmark RayJobs on the cluster, with capacity
only each team's workers tolerate, in both capacity modes."""

from __future__ import annotations

import json

import pytest

from ray_serve_ha.charts.node_sizing import cpu_instance_type
from stacks.settings import Settings, SettingsError
from tests.conftest import context, synthesize
from tests.crd_schemas import schema_errors

TEAMS = [
    {"name": "analytics", "namespace": "team-analytics", "cpus": 4, "memoryGib": 16, "maxWorkers": 4,
     "capacityType": "spot"},
    {"name": "vision", "namespace": "team-vision", "instanceType": "inf2.xlarge", "maxWorkers": 2},
]
TEAM_KEY = "ray-serve-ha.dev/team"


@pytest.fixture(scope="module")
def auto_mode():
    return synthesize(batchTeams=json.dumps(TEAMS))


@pytest.fixture(scope="module")
def node_groups():
    return synthesize(batchTeams=TEAMS, capacityMode="node-groups")


def batch_objects(synthesized) -> dict[str, list[dict]]:
    template = synthesized.system.batch
    from aws_cdk.assertions import Template

    found = {}
    resources = Template.from_stack(template).find_resources("Custom::AWSCDK-EKS-KubernetesResource")
    for logical_id, resource in resources.items():
        manifest = resource["Properties"]["Manifest"]
        if isinstance(manifest, dict):  # image URI token inside
            parts = manifest["Fn::Join"][1]
            manifest = "".join(p if isinstance(p, str) else "registry.example/batch:1" for p in parts)
        found[logical_id] = json.loads(manifest)
    return found


def of_kind(objects: dict[str, list[dict]], kind: str) -> list[dict]:
    return [o for group in objects.values() for o in group if o["kind"] == kind]


def test_no_teams_no_batch_stack(default_system):
    assert default_system.system.batch is None


def test_every_batch_object_is_valid(auto_mode):
    objects = [o for group in batch_objects(auto_mode).values() for o in group]
    assert {o["kind"] for o in objects} >= {"Namespace", "NodePool", "ConfigMap", "RayCluster", "RayJob"}
    assert {f"{o['kind']}/{o['metadata']['name']}": schema_errors(o) for o in objects if schema_errors(o)} == {}


def test_teams_are_isolated_by_taint_and_label(auto_mode):
    objects = batch_objects(auto_mode)
    pools = {p["metadata"]["name"]: p["spec"]["template"] for p in of_kind(objects, "NodePool")}
    assert len(pools) == 2
    for cluster in of_kind(objects, "RayCluster"):
        team = cluster["metadata"]["namespace"].removeprefix("team-")
        (group,) = cluster["spec"]["workerGroupSpecs"]
        pod = group["template"]["spec"]
        team_tolerations = [t for t in pod["tolerations"] if t["key"] == TEAM_KEY]
        assert team_tolerations == [{"key": TEAM_KEY, "operator": "Equal", "value": team, "effect": "NoSchedule"}]
        assert pod["nodeSelector"][TEAM_KEY] == team
        assert cluster["spec"]["enableInTreeAutoscaling"] is True
    capacity = {
        name: next(r["values"] for r in t["spec"]["requirements"] if r["key"] == "karpenter.sh/capacity-type")
        for name, t in pools.items()
    }
    assert sorted(capacity.values()) == [["on-demand"], ["spot"]]


def test_jobs_run_on_their_team_cluster(auto_mode):
    objects = batch_objects(auto_mode)
    clusters = {c["metadata"]["namespace"]: c["metadata"]["name"] for c in of_kind(objects, "RayCluster")}
    jobs = of_kind(objects, "RayJob")
    assert len(jobs) == 4  # xgboost and pytorch per team
    for job in jobs:
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": clusters[job["metadata"]["namespace"]]}


def test_rayclusters_come_after_the_kuberay_operator(auto_mode):
    system = auto_mode.system
    assert system.cluster.stack_name in {s.stack_name for s in system.batch.dependencies}


def test_node_groups_mode_gives_each_team_a_tainted_node_group(node_groups):
    from aws_cdk.assertions import Template

    template = Template.from_stack(node_groups.system.batch)
    groups = {g["Properties"]["Labels"][TEAM_KEY]: g["Properties"]
              for g in template.find_resources("AWS::EKS::Nodegroup").values()}
    assert groups["analytics"]["InstanceTypes"] == ["m7i.2xlarge"]
    assert groups["analytics"]["CapacityType"] == "SPOT"
    assert groups["analytics"]["Taints"] == [{"Effect": "NO_SCHEDULE", "Key": TEAM_KEY, "Value": "analytics"}]
    assert groups["vision"]["AmiType"] == "AL2023_x86_64_NEURON"
    # The Cluster Autoscaler's instance table knows no Neuron devices: the group's own tag
    # tells it, so the team's group can grow from zero nodes for a pending Neuron worker.
    assert groups["vision"]["Tags"] == {"k8s.io/cluster-autoscaler/node-template/resources/aws.amazon.com/neuron": "1"}
    assert "Tags" not in groups["analytics"]
    assert {"Effect": "NO_SCHEDULE", "Key": "aws.amazon.com/neuron"} in groups["vision"]["Taints"]
    assert not of_kind(batch_objects(node_groups), "NodePool")
    # The Cluster Autoscaler grows a team's group from its minimum as the Ray autoscaler adds workers.
    assert groups["analytics"]["ScalingConfig"] == {"MinSize": 0, "DesiredSize": 0, "MaxSize": 4}
    # Disks hold the team's image and Ray's spill space (EKS's default would be 20 GiB):
    # batch (cpu) 3.5 + 10 + 1.5 + 10 = 25 GB -> 40 GiB; the Neuron team runs the CPU image too.
    assert (groups["analytics"]["DiskSize"], groups["vision"]["DiskSize"]) == (40, 40)
    # Accelerator instances are replaced without a surge of extra nodes; CPU ones as EKS's default.
    assert groups["vision"]["UpdateConfig"] == {"UpdateStrategy": "MINIMAL"}
    assert "UpdateConfig" not in groups["analytics"]


def test_node_groups_mode_sizes_the_system_group_for_the_team_heads(node_groups):
    from aws_cdk.assertions import Template

    system = next(g["Properties"] for g in Template.from_stack(node_groups.system.cluster).find_resources(
        "AWS::EKS::Nodegroup").values() if g["Properties"]["Labels"].get("ray-serve-ha.dev/node-role") == "system")
    # Three heads (serving and two teams), one per m7i.xlarge; at most a node for an upgrade's
    # head and one for the small pods the scheduler may have spread over the others.
    assert system["ScalingConfig"] == {"MinSize": 3, "DesiredSize": 3, "MaxSize": 5}
    # Their images: ray-serve (neuron) twice (an upgrade), the CPU batch image, the UI, operators,
    # DaemonSets and the OS: 79.1 GB x 1.25 / 0.85 = 108.3 GiB -> 110.
    assert system["DiskSize"] == 110


def test_a_gpu_team_next_to_neuron_serving_gets_the_nvidia_device_plugin():
    from aws_cdk.assertions import Template

    gpu_team = {"name": "llm-ft", "namespace": "team-llm-ft", "instanceType": "g6e.xlarge", "maxWorkers": 2}
    synthesized = synthesize(batchTeams=[gpu_team, TEAMS[1]], capacityMode="node-groups")
    charts = {
        r["Properties"]["Chart"]: r["Properties"]
        for r in Template.from_stack(synthesized.system.batch).find_resources("Custom::AWSCDK-EKS-HelmChart").values()
    }
    # The Neuron plugin comes with the serving capacity (cluster stack); the team's g6e
    # nodes need NVIDIA's, pinned, on its accelerator label, tolerating the team taint.
    assert set(charts) == {"nvidia-device-plugin"}
    values = json.loads(charts["nvidia-device-plugin"]["Values"])
    assert charts["nvidia-device-plugin"]["Version"] == "0.19.3"
    assert {"key": TEAM_KEY, "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "ray-serve-ha.dev/accelerator", "operator": "In", "values": ["nvidia"]}]}
    ]


def test_cpu_node_size_leaves_room_for_the_node_itself():
    assert cpu_instance_type(1, 4) == "m7i.large"
    assert cpu_instance_type(4, 16) == "m7i.2xlarge"
    assert cpu_instance_type(100, 4) is None


@pytest.mark.parametrize("teams,expected", [
    ([{"name": "Bad_Team", "namespace": "team-a", "cpus": 2, "memoryGib": 4}],
     "batchTeams[0]: team name 'Bad_Team' is not a DNS-1035 label: use lowercase letters, digits and '-', "
     "starting with a letter and ending with a letter or digit"),
    ([{"name": "a", "namespace": "team-a", "cpus": 2, "memoryGib": 4, "instanceType": "inf2.xlarge"}],
     "batchTeams[0]: give either cpus and memoryGib (CPU workers) or instanceType (accelerator workers)"),
    ([{"name": "a", "namespace": "team-a", "cpus": 2, "memoryGib": 4, "gpus": 1}],
     "batchTeams[0]: unknown field(s) gpus; allowed: name, namespace, cpus, memoryGib, instanceType, "
     "minWorkers, maxWorkers, capacityType, rayImage"),
    ([{"name": "a", "namespace": "team-a", "cpus": 2, "memoryGib": 4, "minWorkers": 3, "maxWorkers": 1}],
     "batchTeams[0]: team 'a' min_workers=3 is above max_workers=1"),
])
def test_bad_teams_are_refused(teams, expected):
    with pytest.raises(SettingsError) as raised:
        Settings.from_context(context(batchTeams=teams))
    assert raised.value.problems == [expected]
