"""ClusterStack: version and kubectl layer, access, logging, encryption, capacity per
settings, and the pinned operators."""

from __future__ import annotations

import json

from aws_cdk.assertions import Match

from ray_serve_ha.charts import constants
from tests.cluster_objects import helm_charts
from tests.conftest import synthesize

ADMIN_ROLE = "arn:aws:iam::123456789012:role/PlatformAdmin"


def test_cluster_runs_kubernetes_1_35_with_a_matching_kubectl_layer(default_system):
    default_system.cluster.has_resource_properties("AWS::EKS::Cluster", {"Version": "1.35"})
    default_system.cluster.has_resource_properties(
        "AWS::Lambda::LayerVersion", {"Description": Match.string_like_regexp(r"kubectl 1\.35\.")}
    )


def test_all_control_plane_log_types_are_enabled(default_system):
    default_system.cluster.has_resource_properties(
        "AWS::EKS::Cluster",
        {
            "Logging": {
                "ClusterLogging": {
                    "EnabledTypes": [
                        {"Type": t}
                        for t in ("api", "audit", "authenticator", "controllerManager", "scheduler")
                    ]
                }
            }
        },
    )


def test_secrets_are_envelope_encrypted_with_a_rotating_kms_key(default_system):
    template = default_system.cluster
    key_id = next(iter(template.find_resources("AWS::KMS::Key", {"Properties": {"EnableKeyRotation": True}})))
    template.has_resource_properties(
        "AWS::EKS::Cluster",
        {"EncryptionConfig": [{"Provider": {"KeyArn": {"Fn::GetAtt": [key_id, "Arn"]}}, "Resources": ["secrets"]}]},
    )


def test_endpoint_is_private_unless_public_cidrs_are_given(default_system):
    default_system.cluster.has_resource_properties(
        "AWS::EKS::Cluster",
        {"ResourcesVpcConfig": Match.object_like({"EndpointPrivateAccess": True, "EndpointPublicAccess": False})},
    )


def test_public_endpoint_is_limited_to_the_configured_cidrs():
    template = synthesize(endpointPublicAccessCidrs="203.0.113.0/24").cluster
    template.has_resource_properties(
        "AWS::EKS::Cluster",
        {
            "ResourcesVpcConfig": Match.object_like(
                {"EndpointPrivateAccess": True, "EndpointPublicAccess": True, "PublicAccessCidrs": ["203.0.113.0/24"]}
            )
        },
    )


def test_admins_get_cluster_admin_access_entries():
    template = synthesize(adminPrincipalArns=[ADMIN_ROLE]).cluster
    template.has_resource_properties(
        "AWS::EKS::AccessEntry",
        {
            "PrincipalArn": ADMIN_ROLE,
            "AccessPolicies": [
                {
                    "AccessScope": {"Type": "cluster"},
                    "PolicyArn": {"Fn::Join": ["", [
                        "arn:", {"Ref": "AWS::Partition"},
                        ":eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"]]},
                }
            ],
        },
    )



def test_operators_are_installed_from_pinned_charts(default_system):
    charts = helm_charts(default_system.cluster)
    assert (charts["kuberay-operator"]["Repository"], charts["kuberay-operator"]["Version"]) == (
        "https://ray-project.github.io/kuberay-helm/",
        # 1.7.2: the security fixes after 1.7.0 (and 1.7.1's bug fixes).
        "1.7.2",
    )
    assert charts["kuberay-operator"]["Namespace"] == constants.KUBERAY_NAMESPACE
    assert (charts["external-secrets"]["Repository"], charts["external-secrets"]["Version"]) == (
        "https://charts.external-secrets.io",
        "2.9.0",
    )


def test_external_secrets_runs_with_a_pod_identity_that_reads_only_project_secrets(default_system):
    template = default_system.cluster
    template.has_resource_properties(
        "AWS::EKS::PodIdentityAssociation",
        {
            "Namespace": constants.EXTERNAL_SECRETS_NAMESPACE,
            "ServiceAccount": constants.EXTERNAL_SECRETS_SERVICE_ACCOUNT,
        },
    )
    values = json.loads(helm_charts(template)["external-secrets"]["Values"])
    assert values["serviceAccount"]["name"] == constants.EXTERNAL_SECRETS_SERVICE_ACCOUNT
    role_id = next(iter(template.find_resources(
        "AWS::IAM::Role",
        {"Properties": {"AssumeRolePolicyDocument": {"Statement": [
            Match.object_like({"Action": ["sts:AssumeRole", "sts:TagSession"],
                               "Principal": {"Service": "pods.eks.amazonaws.com"}})]}}},
    )))
    policies = template.find_resources("AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role_id}]}})
    statements = [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    # In this stack: the Hugging Face token, by name, nothing else. (The Redis AUTH token is
    # granted by the GCS store stack.)
    assert statements == [
        {
            "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
            "Effect": "Allow",
            "Resource": {"Fn::Join": ["", [
                "arn:", {"Ref": "AWS::Partition"}, ":secretsmanager:", {"Ref": "AWS::Region"}, ":",
                {"Ref": "AWS::AccountId"}, ":secret:ray-serve-ha/hugging-face-token-??????"]]},
        }
    ]
