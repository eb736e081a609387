"""ClusterStack's capacity per settings: Auto Mode's node pools and node classes, managed node
groups with their AMIs, the device plugins and the Cluster Autoscaler, and what each node
keeps on its disk."""

from __future__ import annotations

import copy
import json

import pytest
from aws_cdk.assertions import Match

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import NEURON, NVIDIA
from ray_serve_ha.charts.node_pool import accelerator_node_pool
from tests.cluster_objects import helm_charts, manifests
from tests.conftest import synthesize
from tests.crd_schemas import schema_errors


def test_auto_mode_enables_the_built_in_system_and_general_purpose_pools(default_system):
    default_system.cluster.has_resource_properties(
        "AWS::EKS::Cluster",
        {"ComputeConfig": Match.object_like({"Enabled": True, "NodePools": ["system", "general-purpose"]})},
    )
    default_system.cluster.resource_count_is("AWS::EKS::Nodegroup", 0)


@pytest.mark.parametrize(
    "system_fixture,accelerator,family",
    [("default_system", NEURON, "inf2"), ("auto_mode_nvidia", NVIDIA, "g6e")],
)
def test_auto_mode_adds_an_on_demand_accelerator_node_pool(request, system_fixture, accelerator, family):
    pools = {m["metadata"]["name"]: m for m in manifests(request.getfixturevalue(system_fixture).cluster)
             if m["kind"] == "NodePool"}
    assert sorted(pools) == sorted([constants.accelerator_pool_name(accelerator.name), constants.HEADS_POOL])
    pool = pools[constants.accelerator_pool_name(accelerator.name)]
    assert schema_errors(pool) == []
    template = pool["spec"]["template"]
    assert template["metadata"]["labels"] == {constants.ACCELERATOR_LABEL: accelerator.name}
    assert template["spec"]["taints"] == [{"key": accelerator.taint_key, "effect": "NoSchedule"}]
    # A NodeClass of its own (its disk: test_auto_mode_node_classes_size_their_disks_from_the_image_table).
    assert template["spec"]["nodeClassRef"] == {
        "group": "eks.amazonaws.com", "kind": "NodeClass", "name": constants.accelerator_node_class(accelerator.name)
    }
    requirements = {r["key"]: r["values"] for r in template["spec"]["requirements"]}
    assert requirements["eks.amazonaws.com/instance-family"] == [family]
    assert requirements["karpenter.sh/capacity-type"] == ["on-demand"]


def test_node_pool_limits_hold_the_max_nodes_and_an_upgrades_new_cluster():
    pool = accelerator_node_pool(NEURON, ("inf2.8xlarge",), max_nodes=6, upgrade_surge_nodes=2)
    # inf2.8xlarge: 32 vCPU, 128 GiB; 6 nodes plus 2 for a NewCluster upgrade's workers.
    assert pool["spec"]["limits"] == {"cpu": "256", "memory": "1024Gi"}


def accelerator_pool(synthesized) -> dict:
    (pool,) = [m for m in manifests(synthesized.cluster)
               if m["kind"] == "NodePool" and m["metadata"]["name"] != constants.HEADS_POOL]
    return pool


def test_a_default_deploy_can_upgrade_in_auto_mode(default_system):
    # min 2 / max 4 workers: a NewCluster upgrade at full scale needs 4 + 2 nodes.
    pool = accelerator_pool(default_system)
    assert pool["spec"]["limits"] == {"cpu": str(6 * 32), "memory": f"{6 * 128}Gi"}


def test_node_churn_replaces_one_accelerator_node_at_a_time(default_system):
    pool = accelerator_pool(default_system)
    assert schema_errors(pool) == []
    disruption = pool["spec"]["disruption"]
    # One budget, no reasons: it governs Empty, Drifted (a new Auto Mode AMI) and
    # Underutilized alike.
    assert disruption["budgets"] == [{"nodes": "1"}]
    assert disruption["consolidationPolicy"] == "WhenEmpty"
    # Expiry is not budgeted in Karpenter v1: the drain waits on the workers' PDB (whose
    # workers are Ready only while their replica serves) for up to a day.
    spec = pool["spec"]["template"]["spec"]
    assert (spec["expireAfter"], spec["terminationGracePeriod"]) == ("336h", "24h")


def test_budgets_for_expiry_are_refused_by_the_karpenter_crd():
    # Karpenter v1 budgets know Underutilized, Empty and Drifted only; "Expired" is not one.
    pool = copy.deepcopy(accelerator_node_pool(NEURON, ("inf2.8xlarge",), max_nodes=4, upgrade_surge_nodes=2))
    pool["spec"]["disruption"]["budgets"] = [{"nodes": "1", "reasons": ["Drifted", "Expired"]}]
    assert any("'Expired' is not one of" in e for e in schema_errors(pool))


def test_node_groups_mode_runs_a_pinned_cluster_autoscaler_for_upgrades(node_groups_neuron):
    template = node_groups_neuron.cluster
    chart = helm_charts(template)["cluster-autoscaler"]
    assert (chart["Repository"], chart["Version"], chart["Namespace"]) == (
        "https://kubernetes.github.io/autoscaler", "9.59.0", "kube-system",
    )
    values = json.loads(chart["Values"]) if isinstance(chart["Values"], str) else None
    if values is None:  # the region is a token: render it
        separator, parts = chart["Values"]["Fn::Join"]
        values = json.loads(separator.join(p if isinstance(p, str) else "us-east-2" for p in parts))
    # Auto-discovery by the tags EKS puts on every managed node group's Auto Scaling group.
    assert values["autoDiscovery"] == {"clusterName": "ray-serve-ha"}
    # The autoscaler's minor matches the cluster's (1.35).
    assert values["image"]["tag"].startswith("v1.35.")
    assert values["nodeSelector"] == {constants.NODE_ROLE_LABEL: constants.SYSTEM_NODE_ROLE}
    template.has_resource_properties(
        "AWS::EKS::PodIdentityAssociation",
        {"Namespace": "kube-system", "ServiceAccount": values["rbac"]["serviceAccount"]["name"]},
    )
    statements = [
        s for p in template.find_resources("AWS::IAM::Policy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if "autoscaling:SetDesiredCapacity" in s["Action"]
    ]
    # It may resize only this cluster's groups.
    assert statements == [
        {
            "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
            "Condition": {"StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/ray-serve-ha": "owned"}},
            "Effect": "Allow",
            "Resource": "*",
        }
    ]


def test_auto_mode_needs_no_cluster_autoscaler(default_system):
    assert "cluster-autoscaler" not in helm_charts(default_system.cluster)


def test_node_pool_schema_check_catches_a_broken_pool():
    pool = copy.deepcopy(accelerator_node_pool(NEURON, ("inf2.8xlarge",), max_nodes=4, upgrade_surge_nodes=2))
    del pool["spec"]["template"]["spec"]["nodeClassRef"]
    pool["spec"]["template"]["spec"]["taints"][0]["effect"] = "Sometimes"
    errors = schema_errors(pool)
    assert any("'nodeClassRef' is a required property" in e for e in errors)
    assert any("'Sometimes' is not one of" in e for e in errors)


@pytest.mark.parametrize(
    "system_fixture,accelerator,ami_type,instance_type",
    [
        ("node_groups_neuron", NEURON, "AL2023_x86_64_NEURON", "inf2.8xlarge"),
        ("node_groups_nvidia", NVIDIA, "AL2023_x86_64_NVIDIA", "g6e.xlarge"),
    ],
)
def test_node_groups_mode_adds_a_tainted_accelerator_group_with_the_al2023_ami(
    request, system_fixture, accelerator, ami_type, instance_type
):
    template = request.getfixturevalue(system_fixture).cluster
    template.has_resource_properties(
        "AWS::EKS::Cluster", {"ComputeConfig": {"Enabled": False}}
    )
    template.resource_count_is("AWS::EKS::Nodegroup", 2)
    template.has_resource_properties(
        "AWS::EKS::Nodegroup",
        {
            "AmiType": ami_type,
            "InstanceTypes": [instance_type],
            "CapacityType": "ON_DEMAND",
            "Labels": {constants.ACCELERATOR_LABEL: accelerator.name},
            "Taints": [{"Effect": "NO_SCHEDULE", "Key": accelerator.taint_key}],
            # Max: the workers' maximum (4) plus an upgrade's new cluster at its minimum (2).
            "ScalingConfig": {"MinSize": 2, "DesiredSize": 2, "MaxSize": 6},
            # An AMI update replaces one node at a time, never past the workers' PDB, and with
            # MINIMAL adds no node first (DEFAULT would add up to two per AZ: six inf2 nodes).
            "UpdateConfig": {"MaxUnavailable": 1, "UpdateStrategy": "MINIMAL"},
            "ForceUpdateEnabled": False,
            # What the Cluster Autoscaler needs to add a node before one exists.
            "Tags": {f"k8s.io/cluster-autoscaler/node-template/resources/{accelerator.device_resource}": "1"},
        },
    )
    template.has_resource_properties(
        "AWS::EKS::Nodegroup",
        {"AmiType": "AL2023_x86_64_STANDARD", "Labels": {constants.NODE_ROLE_LABEL: constants.SYSTEM_NODE_ROLE}},
    )
    # Managed node groups need the Pod Identity agent that Auto Mode has built in.
    template.has_resource_properties("AWS::EKS::Addon", {"AddonName": "eks-pod-identity-agent"})


def test_node_groups_mode_installs_the_pinned_neuron_chart_not_the_legacy_plugin(node_groups_neuron):
    charts = helm_charts(node_groups_neuron.cluster)
    assert charts["neuron-helm-chart"]["Repository"] == "oci://public.ecr.aws/neuron/neuron-helm-chart"
    assert charts["neuron-helm-chart"]["Version"] == "1.10.0"
    # add_nodegroup_capacity would add an outdated device-plugin DaemonSet manifest.
    assert not [m for m in manifests(node_groups_neuron.cluster) if m["kind"] == "DaemonSet"]


def test_nvidia_device_plugin_is_pinned_and_targets_the_accelerator_label(node_groups_nvidia):
    chart = helm_charts(node_groups_nvidia.cluster)["nvidia-device-plugin"]
    assert chart["Version"] == "0.19.3"
    terms = json.loads(chart["Values"])["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": constants.ACCELERATOR_LABEL, "operator": "In", "values": ["nvidia"]}]}
    ]


def test_auto_mode_installs_no_device_plugin(default_system):
    assert set(helm_charts(default_system.cluster)) == {"kuberay-operator", "external-secrets"}


@pytest.mark.parametrize(
    ("fixture", "chart", "path"),
    [
        ("node_groups_neuron", "neuron-helm-chart", ("devicePlugin",)),
        ("node_groups_nvidia", "nvidia-device-plugin", ()),
    ],
)
def test_device_plugins_tolerate_batch_team_taints(request, fixture, chart, path):
    values = json.loads(helm_charts(request.getfixturevalue(fixture).cluster)[chart]["Values"])
    for key in path:
        values = values[key]
    # Team nodes of this accelerator carry the team's taint too: the plugin must run there.
    assert {"key": constants.TEAM_LABEL, "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]





# --- what each node keeps on its disk, and the system nodes' count -------------------------

def node_classes(synthesized) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in manifests(synthesized.cluster) if m["kind"] == "NodeClass"}


@pytest.mark.parametrize(
    ("system_fixture", "accelerator", "accelerator_gib"),
    # neuron: 31 GB image + 14.5 GB weights + 16 GB compile scratch + 1.5 + 10 = 73 GB
    # x 1.25 / 0.85 = 107.4 GB = 100.0 GiB; nvidia: 51 GB -> 70 GiB (ray_serve_ha/charts/capacity_plan.py).
    [("default_system", NEURON, 100), ("auto_mode_nvidia", NVIDIA, 70)],
)
def test_auto_mode_node_classes_size_their_disks_from_the_image_table(
    request, system_fixture, accelerator, accelerator_gib
):
    synthesized = request.getfixturevalue(system_fixture)
    classes = node_classes(synthesized)
    name = constants.accelerator_node_class(accelerator.name)
    assert sorted(classes) == sorted([name, constants.HEADS_NODE_CLASS])
    for node_class in classes.values():
        assert schema_errors(node_class) == []
        spec = node_class["spec"]
        # Like the built-in NodeClass: the cluster's private subnets and its security group.
        assert len(spec["subnetSelectorTerms"]) == 3
        assert spec["securityGroupSelectorTerms"] == [{"id": "sg-0123456789abcdef0"}]
    assert classes[name]["spec"]["ephemeralStorage"] == {"size": f"{accelerator_gib}Gi"}
    assert classes[name]["spec"]["ephemeralStorage"] != {"size": "80Gi"} or accelerator_gib == 80
    # The heads' nodes: the serving image twice (an upgrade's new head beside the old), the UI,
    # operators, DaemonSets and the OS: neuron 75.6 GB -> 110 GiB.
    heads = classes[constants.HEADS_NODE_CLASS]["spec"]["ephemeralStorage"]["size"]
    assert heads == ("110Gi" if accelerator is NEURON else "80Gi")


def test_auto_mode_node_classes_use_a_node_role_with_an_ec2_access_entry(default_system):
    template = default_system.cluster
    roles = template.find_resources("AWS::IAM::Role", {"Properties": {"AssumeRolePolicyDocument": {
        "Statement": [{"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}}]
    }}})
    node_role = next(logical_id for logical_id in roles if "AcceleratorPoolNodeRole" in logical_id)
    template.has_resource_properties("AWS::EKS::AccessEntry", {
        "Type": "EC2",
        "PrincipalArn": {"Fn::GetAtt": [node_role, "Arn"]},
        "AccessPolicies": [{"AccessScope": {"Type": "cluster"}, "PolicyArn": Match.any_value()}],
    })
    entries = template.find_resources("AWS::EKS::AccessEntry", {"Properties": {"Type": "EC2"}})
    (entry,) = entries.values()
    assert "AmazonEKSAutoNodePolicy" in json.dumps(entry["Properties"]["AccessPolicies"])
    (node_pool_resource,) = [
        r for r in template.find_resources("Custom::AWSCDK-EKS-KubernetesResource").values()
        if "NodeClass" in json.dumps(r["Properties"]["Manifest"])
    ]
    # The NodeClass names the role, and is applied only once the role may join the cluster.
    assert {"Ref": node_role} in node_pool_resource["Properties"]["Manifest"]["Fn::Join"][1]
    assert next(iter(entries)) in node_pool_resource["DependsOn"]


def test_ray_heads_run_on_the_heads_pool_in_auto_mode(default_system):
    from tests.test_serving import the_rayservice

    head = the_rayservice(default_system.serving)["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    terms = head["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert {"key": "karpenter.sh/nodepool", "operator": "In", "values": [constants.HEADS_POOL]} in terms[0][
        "matchExpressions"]
    (pool,) = [m for m in manifests(default_system.cluster)
               if m["kind"] == "NodePool" and m["metadata"]["name"] == constants.HEADS_POOL]
    assert schema_errors(pool) == []
    assert pool["spec"]["template"]["spec"]["nodeClassRef"]["name"] == constants.HEADS_NODE_CLASS
    assert pool["spec"]["template"]["spec"]["taints"] == []
    requirements = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert requirements["karpenter.sh/capacity-type"] == ["on-demand"]


@pytest.mark.parametrize(
    ("system_fixture", "accelerator_gib", "system_gib"),
    # The system nodes hold the serving head's image (twice during an upgrade): neuron 110 GiB,
    # nvidia 20 + 20 + 0.6 + 1.5 + 1.5 + 10 = 53.6 GB -> 80 GiB; EKS's default would be 20 GiB.
    [("node_groups_neuron", 100, 110), ("node_groups_nvidia", 70, 80)],
)
def test_node_groups_disks_hold_their_images(request, system_fixture, accelerator_gib, system_gib):
    template = request.getfixturevalue(system_fixture).cluster
    template.has_resource_properties("AWS::EKS::Nodegroup", {
        "Labels": {constants.NODE_ROLE_LABEL: constants.SYSTEM_NODE_ROLE},
        "DiskSize": system_gib,
        "InstanceTypes": ["m7i.xlarge"],
        # The serving head + 2 UI replicas + operators fit one node; two for the operators' sake;
        # an upgrade's second head (2.5 CPUs of the 3.17 a node offers its pods) needs a node of
        # its own where the spread small pods leave none: three at most.
        "ScalingConfig": {"MinSize": 2, "DesiredSize": 2, "MaxSize": 3},
    })
    template.has_resource_properties("AWS::EKS::Nodegroup", {
        "Labels": Match.object_like({constants.ACCELERATOR_LABEL: Match.any_value()}), "DiskSize": accelerator_gib,
    })


def test_an_accelerator_disk_setting_replaces_the_computed_size():
    template = synthesize(capacityMode="node-groups", acceleratorNodeDiskGib=300).cluster
    template.has_resource_properties("AWS::EKS::Nodegroup", {
        "Labels": {constants.ACCELERATOR_LABEL: "neuron"}, "DiskSize": 300,
    })
    classes = node_classes(synthesize(acceleratorNodeDiskGib=300))
    assert classes["ray-neuron"]["spec"]["ephemeralStorage"] == {"size": "300Gi"}
