"""An existing EKS cluster (settings existingCluster*): imported with aws_eks_v2, nothing of
the cluster itself created; a kubectl provider with its access entry, the accelerator
capacity, KubeRay and External Secrets added; the GCS store and the helpers on the
cluster's security group; unsupported combinations refused with one message."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from stacks.settings import Settings, SettingsError
from tests.conftest import EXISTING_CLUSTER_SETTINGS, EXISTING_VPC_SETTINGS, context, existing_cluster, synthesize

NAME = EXISTING_CLUSTER_SETTINGS["existingClusterName"]
SECURITY_GROUP = EXISTING_CLUSTER_SETTINGS["existingClusterSecurityGroupId"]
ENDPOINT = EXISTING_CLUSTER_SETTINGS["existingClusterEndpoint"]
PRIVATE = ["subnet-0bbb00000000000a2", "subnet-0bbb00000000000b2", "subnet-0bbb00000000000c2"]
DESCRIBE = ("existingClusterSecurityGroupId", "existingClusterEndpoint", "existingClusterCertificateAuthorityData")


def settings_problems(**overrides) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        Settings.from_context(context(**overrides))
    return raised.value.problems


BAD_SETTINGS = {
    "only the name": (
        {**EXISTING_VPC_SETTINGS, "clusterName": NAME, "existingClusterName": NAME},
        [f"existingClusterName='{NAME}': set {', '.join(DESCRIBE)} too (from aws eks describe-cluster)"],
    ),
    "no VPC": (
        {**EXISTING_CLUSTER_SETTINGS},
        [f"existingClusterName='{NAME}': set vpcId to the cluster's VPC (and account and region)"],
    ),
    "public endpoint CIDRs": (
        {**EXISTING_VPC_SETTINGS, **EXISTING_CLUSTER_SETTINGS, "endpointPublicAccessCidrs": "203.0.113.0/24"},
        [f"existingClusterName='{NAME}': endpointPublicAccessCidrs configures a cluster this app creates; an "
         "existing cluster keeps its own endpoint access (aws eks update-cluster-config)"],
    ),
    "another name than clusterName": (
        {**EXISTING_VPC_SETTINGS, **EXISTING_CLUSTER_SETTINGS, "clusterName": "ray-serve-ha"},
        [f"existingClusterName='{NAME}': set clusterName to the same name (the kubeconfig and drill commands "
         "and the stack names use it; clusterName='ray-serve-ha')"],
    ),
    "attributes without a name": (
        {**EXISTING_VPC_SETTINGS, "existingClusterSecurityGroupId": SECURITY_GROUP},
        ["existingClusterSecurityGroupId: describe an existing cluster; set existingClusterName too"],
    ),
    "security group shape": (
        {**EXISTING_VPC_SETTINGS, **EXISTING_CLUSTER_SETTINGS, "existingClusterSecurityGroupId": "sg-1"},
        ["existingClusterSecurityGroupId='sg-1': must be a security group id: sg- and 8 or 17 hex digits "
         "(sg-0a1b2c3d4e5f60718)"],
    ),
    "endpoint not EKS": (
        {**EXISTING_VPC_SETTINGS, **EXISTING_CLUSTER_SETTINGS, "existingClusterEndpoint": "https://example.com"},
        ["existingClusterEndpoint='https://example.com': must be the cluster's API endpoint, "
         "https://<id>.<zone>.<region>.eks.amazonaws.com (aws eks describe-cluster --query cluster.endpoint)"],
    ),
    "unsupported version": (
        {**EXISTING_VPC_SETTINGS, **EXISTING_CLUSTER_SETTINGS, "kubernetesVersion": "1.30"},
        ["kubernetesVersion='1.30': must be a Kubernetes minor EKS can create, written as a string: "
         "1.32, 1.33, 1.34, 1.35, 1.36"],
    ),
    "unsupported capacity mode": (
        {**EXISTING_VPC_SETTINGS, **EXISTING_CLUSTER_SETTINGS, "capacityMode": "fargate"},
        ["capacityMode='fargate': must be one of: auto-mode, node-groups"],
    ),
}


@pytest.mark.parametrize("overrides,expected", BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_incomplete_or_unsupported_imports_are_refused(overrides, expected):
    assert settings_problems(**overrides) == expected


@pytest.fixture(scope="module")
def auto_mode(in_existing_cluster):
    return in_existing_cluster


@pytest.fixture(scope="module")
def node_groups():
    return synthesize(**existing_cluster(capacityMode="node-groups", accelerator="nvidia"))


def test_nothing_of_the_cluster_itself_is_created(auto_mode):
    cluster = auto_mode.cluster
    for resource_type in ("AWS::EKS::Cluster", "AWS::KMS::Key", "AWS::EKS::Addon", "AWS::EC2::SecurityGroup"):
        cluster.resource_count_is(resource_type, 0)
    assert auto_mode.network is None


def test_a_kubectl_provider_of_its_own_reaches_the_private_endpoint_with_an_access_entry(auto_mode):
    cluster = auto_mode.cluster
    handlers = [f for f in cluster.find_resources("AWS::Lambda::Function").values()
                if f["Properties"].get("Description") == "onEvent handler for EKS kubectl resource provider"]
    (handler,) = handlers
    assert handler["Properties"]["VpcConfig"] == {"SubnetIds": PRIVATE, "SecurityGroupIds": [SECURITY_GROUP]}
    # The kubectl provider's (the other one lets the Auto Mode NodeClasses' nodes join).
    (entry,) = cluster.find_resources("AWS::EKS::AccessEntry", {"Properties": {"Type": Match.absent()}}).values()
    assert entry["Properties"]["ClusterName"] == NAME
    assert entry["Properties"]["PrincipalArn"] == handler["Properties"]["Role"]
    assert [p["PolicyArn"] for p in entry["Properties"]["AccessPolicies"]] == [{"Fn::Join": ["", [
        "arn:", {"Ref": "AWS::Partition"}, ":eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"]]}]


def test_operators_and_the_node_pool_are_added_after_the_access_entry(auto_mode):
    cluster = auto_mode.cluster
    (entry_id,) = cluster.find_resources("AWS::EKS::AccessEntry", {"Properties": {"Type": Match.absent()}})
    charts = cluster.find_resources("Custom::AWSCDK-EKS-HelmChart")
    assert sorted(c["Properties"]["Chart"] for c in charts.values()) == ["external-secrets", "kuberay-operator"]
    (pool,) = cluster.find_resources("Custom::AWSCDK-EKS-KubernetesResource").values()
    assert '"kind":"NodePool"' in json.dumps(pool["Properties"]["Manifest"]).replace('\\"', '"')
    for resource in [*charts.values(), pool]:
        assert resource["Properties"]["ClusterName"] == NAME
        assert entry_id in resource["DependsOn"]
    (association,) = cluster.find_resources("AWS::EKS::PodIdentityAssociation").values()
    assert association["Properties"]["ClusterName"] == NAME


def test_node_groups_join_the_existing_cluster_which_brings_its_pod_identity_agent(node_groups):
    cluster = node_groups.cluster
    groups = cluster.find_resources("AWS::EKS::Nodegroup")
    assert len(groups) == 2 and all(g["Properties"]["ClusterName"] == NAME for g in groups.values())
    assert all(g["Properties"]["Subnets"] == PRIVATE for g in groups.values())
    cluster.resource_count_is("AWS::EKS::Addon", 0)
    charts = cluster.find_resources("Custom::AWSCDK-EKS-HelmChart")
    assert "nvidia-device-plugin" in {c["Properties"]["Chart"] for c in charts.values()}


def test_the_gcs_store_admits_the_clusters_security_group(auto_mode):
    ((group_id, group),) = auto_mode.gcs_store.find_resources("AWS::EC2::SecurityGroup").items()
    assert "SecurityGroupIngress" not in group["Properties"]
    # The only rule into the store: a resource of its own, since the cluster's group is imported.
    (ingress,) = auto_mode.gcs_store.find_resources("AWS::EC2::SecurityGroupIngress").values()
    assert ingress["Properties"] == {
        "IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "SourceSecurityGroupId": SECURITY_GROUP,
        "GroupId": {"Fn::GetAtt": [group_id, "GroupId"]}, "Description": "Redis (TLS) from Ray pods and nodes",
    }


def test_the_readiness_gate_polls_the_existing_endpoint(auto_mode):
    (gate,) = auto_mode.serving.find_resources("Custom::RayServiceReady").values()
    assert gate["Properties"]["ClusterName"] == NAME
    assert gate["Properties"]["Endpoint"] == ENDPOINT
    ingress = auto_mode.serving.find_resources("AWS::EC2::SecurityGroupIngress")
    assert {r["Properties"]["GroupId"] for r in ingress.values()} == {SECURITY_GROUP}
