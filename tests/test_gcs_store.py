"""GcsStoreStack: the ElastiCache replication group Ray's GCS fault tolerance relies on."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

from tests.conftest import synthesize


@pytest.fixture(scope="module")
def group(default_system) -> dict:
    groups = default_system.gcs_store.find_resources("AWS::ElastiCache::ReplicationGroup")
    assert len(groups) == 1
    return next(iter(groups.values()))["Properties"]


def test_one_shard_primary_and_replica_with_multi_az_failover(group):
    assert group["NumCacheClusters"] == 2
    assert "NumNodeGroups" not in group  # cluster mode off
    assert group["AutomaticFailoverEnabled"] is True
    assert group["MultiAZEnabled"] is True


def test_encrypted_in_transit_and_at_rest(group):
    assert group["TransitEncryptionEnabled"] is True
    assert group["TransitEncryptionMode"] == "required"
    assert group["AtRestEncryptionEnabled"] is True


def test_engine_version_and_node_type_come_from_settings(group):
    assert (group["Engine"], group["EngineVersion"], group["CacheNodeType"]) == ("redis", "7.1", "cache.r7g.large")
    assert group["Port"] == 6379


def test_valkey_engine_is_passed_through():
    template = synthesize(gcsStoreEngine="valkey", gcsStoreNodeType="cache.m7g.large").gcs_store
    template.has_resource_properties(
        "AWS::ElastiCache::ReplicationGroup",
        {"Engine": "valkey", "EngineVersion": "8.0", "CacheNodeType": "cache.m7g.large"},
    )


def test_auth_token_is_resolved_from_a_generated_secret(default_system, group):
    secrets = default_system.gcs_store.find_resources("AWS::SecretsManager::Secret")
    assert len(secrets) == 1
    secret_id, secret = next(iter(secrets.items()))
    generator = secret["Properties"]["GenerateSecretString"]
    assert generator["ExcludePunctuation"] is True
    assert 16 <= generator["PasswordLength"] <= 128
    assert group["AuthToken"] == {
        "Fn::Join": ["", ["{{resolve:secretsmanager:", {"Ref": secret_id}, ":SecretString:::}}"]]
    }


def test_subnet_group_spans_the_cluster_private_subnets(default_system, group):
    subnet_groups = default_system.gcs_store.find_resources("AWS::ElastiCache::SubnetGroup")
    (subnet_group_id, subnet_group), = subnet_groups.items()
    assert group["CacheSubnetGroupName"] == {"Ref": subnet_group_id}
    cluster_subnets = default_system.cluster.find_resources("AWS::EKS::Cluster")
    (cluster,) = cluster_subnets.values()
    subnet_exports = [ref["Fn::GetStackOutput"]["OutputName"] if "Fn::GetStackOutput" in ref else ref
                      for ref in cluster["Properties"]["ResourcesVpcConfig"]["SubnetIds"]]
    cache_exports = [ref["Fn::GetStackOutput"]["OutputName"] if "Fn::GetStackOutput" in ref else ref
                     for ref in subnet_group["Properties"]["SubnetIds"]]
    assert len(cache_exports) == 3
    assert cache_exports == subnet_exports


def test_only_ingress_is_redis_from_the_cluster_security_group(default_system, group):
    template = default_system.gcs_store
    (sg_id, sg), = template.find_resources("AWS::EC2::SecurityGroup").items()
    assert group["SecurityGroupIds"] == [{"Fn::GetAtt": [sg_id, "GroupId"]}]
    inline = sg["Properties"].get("SecurityGroupIngress", [])
    standalone = [
        r["Properties"]
        for r in template.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [sg_id, "GroupId"]}
    ]
    rules = inline + standalone
    assert len(rules) == 1
    (rule,) = rules
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 6379, 6379)
    assert "CidrIp" not in rule and "CidrIpv6" not in rule
    # The source is the EKS cluster security group, imported from the cluster stack.
    assert "SourceSecurityGroupId" in rule
    assert "ClusterSecurityGroupId" in str(rule["SourceSecurityGroupId"])


def test_cache_opens_no_outbound_connections(default_system):
    (sg,) = default_system.gcs_store.find_resources("AWS::EC2::SecurityGroup").values()
    # CDK's marker rule for "no egress": ICMP type 252 to 255.255.255.255/32.
    assert sg["Properties"]["SecurityGroupEgress"] == [
        {"CidrIp": "255.255.255.255/32", "Description": "Disallow all traffic",
                               "FromPort": 252, "IpProtocol": "icmp", "ToPort": 86}
    ]


def test_external_secrets_may_read_the_auth_token(default_system):
    template = default_system.gcs_store
    (secret_id,) = template.find_resources("AWS::SecretsManager::Secret")
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {"Statement": [{
                "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
                "Effect": "Allow",
                "Resource": {"Ref": secret_id},
            }]},
            "Roles": [Match.any_value()],
        },
    )


def test_typed_properties_for_the_serving_stack(default_system):
    store = default_system.system.gcs_store
    resolved = store.resolve(store.redis_address)
    group_id = store.resolve(store.replication_group.logical_id)
    assert resolved == {"Fn::Join": ["", [
        "rediss://", {"Fn::GetAtt": [group_id, "PrimaryEndPoint.Address"]}, ":",
        {"Fn::GetAtt": [group_id, "PrimaryEndPoint.Port"]}]]}
