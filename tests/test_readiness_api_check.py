"""The readiness gate's API check in the templates: the gate resource carries the API keys
secret, its own entry's name, the serve Service and port and the grace for a refused key;
the isComplete role may read that one secret; the gate's group reaches the serve port in
the VPC and Secrets Manager; and its entry and the grant exist before the gate polls. The
library's constructs refuse a key name the secret lacks and keys given twice."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks

from ray_serve_ha.charts.constants import SERVE_PORT
from ray_serve_ha.charts.key_propagation import API_KEY_PROPAGATION_S
from ray_serve_ha.constructs.api_keys import CONSUMERS, READINESS_GATE, ApiKeys, ApiKeysProps
from ray_serve_ha.constructs.rayservice import FaultTolerantRayService, FaultTolerantRayServiceProps
from ray_serve_ha.constructs.readiness import POLL_INTERVAL, RayServiceReadiness, RayServiceReadinessProps
from tests.test_library import example  # noqa: F401  (the library's example app, no API keys)

API_PROPERTIES = {"ServeServiceName", "ServePort", "ApiKeysSecretArn", "ApiKeyName", "ApiKeyGraceSeconds"}


@pytest.fixture(scope="module")
def resources(default_system) -> dict:
    return default_system.serving.to_json()["Resources"]


def one(resources: dict, resource_type: str) -> tuple[str, dict]:
    (found,) = [(k, r) for k, r in resources.items() if r["Type"] == resource_type]
    return found


def keys_secret_id(resources: dict) -> str:
    (found,) = [k for k, r in resources.items()
                if r["Type"] == "AWS::SecretsManager::Secret" and "SecretString" in r["Properties"]]
    return found


def handler_role(resources: dict, handler: str) -> str:
    (function,) = [r for r in resources.values()
                   if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == handler]
    return function["Properties"]["Role"]["Fn::GetAtt"][0]


def test_the_gates_key_is_added_to_the_keys_secret_by_the_entries_resource(resources):
    assert READINESS_GATE in CONSUMERS
    _, entries = one(resources, "Custom::ApiKeyEntries")
    assert READINESS_GATE in [c["Name"] for c in entries["Properties"]["Consumers"]]


def test_the_gate_checks_the_api_with_its_own_entry_of_the_keys_secret(resources):
    _, gate = one(resources, "Custom::RayServiceReady")
    properties = gate["Properties"]
    assert properties["ApiKeysSecretArn"] == {"Ref": keys_secret_id(resources)}
    assert properties["ApiKeyName"] == "readiness-gate"
    assert properties["ServeServiceName"] == "ray-serve-llm-serve-svc"
    assert properties["ServePort"] == str(SERVE_PORT) == "8000"
    # A refused key is waited out as long as a key takes to reach the replicas, plus a poll.
    assert properties["ApiKeyGraceSeconds"] == str(API_KEY_PROPAGATION_S + int(POLL_INTERVAL.to_seconds())) == "155"
    # The teardown wait does not call the API.
    _, gone = one(resources, "Custom::RayServiceGone")
    assert not API_PROPERTIES & set(gone["Properties"])


def test_only_the_is_complete_role_may_read_the_keys_secret_and_nothing_else(resources):
    keys = {"Ref": keys_secret_id(resources)}
    is_complete, on_event = handler_role(resources, "index.is_complete"), handler_role(resources, "index.on_event")
    policies = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::IAM::Policy"]
    (grant,) = [p for p in policies if {"Ref": is_complete} in p["Roles"] and "secretsmanager" in json.dumps(p)]
    assert grant["Roles"] == [{"Ref": is_complete}]
    assert grant["PolicyDocument"]["Statement"] == [{
        "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
        "Effect": "Allow",
        "Resource": keys,
    }]
    assert not [p for p in policies if {"Ref": on_event} in p["Roles"] and "secretsmanager" in json.dumps(p)]


def test_the_secret_and_its_grant_exist_before_the_first_poll(resources):
    _, gate = one(resources, "Custom::RayServiceReady")
    is_complete = handler_role(resources, "index.is_complete")
    (grant_id,) = [k for k, r in resources.items() if r["Type"] == "AWS::IAM::Policy"
                   and r["Properties"]["Roles"] == [{"Ref": is_complete}] and "secretsmanager" in json.dumps(r)]
    entries_id, _ = one(resources, "Custom::ApiKeyEntries")
    # The gate's own entry is added by the entries resource (not in the secret's initial value).
    assert {entries_id, grant_id} <= set(gate["DependsOn"])


def test_the_gates_group_reaches_the_serve_port_in_the_vpc_and_aws_apis(resources):
    (function,) = [r for r in resources.values()
                   if r["Type"] == "AWS::Lambda::Function" and r["Properties"].get("Handler") == "index.is_complete"]
    (group,) = function["Properties"]["VpcConfig"]["SecurityGroupIds"]
    egress = resources[group["Fn::GetAtt"][0]]["Properties"]["SecurityGroupEgress"]
    (serve,) = [r for r in egress if r["FromPort"] == SERVE_PORT]
    assert (serve["IpProtocol"], serve["ToPort"]) == ("tcp", SERVE_PORT)
    assert "CidrBlock" in json.dumps(serve["CidrIp"])  # the VPC's range, where the internal NLB lives
    assert serve["Description"] == "the serve Service's internal load balancer"
    # Secrets Manager through NAT (no interface endpoint), as the probe reaches CloudWatch.
    assert {"CidrIp": "0.0.0.0/0", "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
            "Description": "AWS service endpoints through NAT"} in egress


def test_without_api_keys_the_library_gate_calls_only_the_kubernetes_api(example):  # noqa: F811
    (gate,) = [r for r in example.to_json()["Resources"].values() if r["Type"] == "Custom::RayServiceReady"]
    assert not API_PROPERTIES & set(gate["Properties"])


# ---------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------


@pytest.fixture
def stack_parts():
    app = cdk.App()
    stack = cdk.Stack(app, "Parts", env=cdk.Environment(account="111122223333", region="us-east-2"))
    vpc = ec2.Vpc.from_vpc_attributes(stack, "Vpc", vpc_id="vpc-1", availability_zones=["us-east-2a"],
                                      private_subnet_ids=["subnet-1"], vpc_cidr_block="10.0.0.0/16")
    cluster = eks.Cluster.from_cluster_attributes(stack, "Cluster", cluster_name="c", vpc=vpc)
    group = ec2.SecurityGroup.from_security_group_id(stack, "Group", "sg-1")
    return stack, vpc, cluster, group


def test_a_gate_key_the_secret_does_not_generate_is_refused_at_synth(stack_parts):
    stack, vpc, cluster, group = stack_parts
    keys = ApiKeys(stack, "Keys", ApiKeysProps(consumers=("chat-ui", "operator")))
    with pytest.raises(ValueError) as raised:
        RayServiceReadiness(stack, "Gate", RayServiceReadinessProps(
            cluster=cluster, namespace="serving", rayservice_name="llm", rayservice_manifest={}, vpc=vpc,
            subnets=vpc.private_subnets, security_group=group, api_keys=keys))
    assert str(raised.value) == (
        "the readiness gate's API key 'readiness-gate' is not one the API keys generate (chat-ui, operator): "
        "add it to ApiKeysProps.consumers, or set api_key_name to one of them"
    )


def test_api_keys_given_twice_are_refused(stack_parts):
    from ray_serve_ha.charts.accelerators import ACCELERATORS
    from ray_serve_ha.charts.profiles import EksDeployment

    stack, vpc, cluster, group = stack_parts
    neuron = ACCELERATORS["neuron"]
    with pytest.raises(ValueError, match=r"^the API keys are given twice: as FaultTolerantRayServiceProps.api_keys "
                                         r"and as EksDeployment.api_keys_secret; give only api_keys"):
        FaultTolerantRayService(stack, "RayService", FaultTolerantRayServiceProps(
            cluster=cluster, vpc=vpc, subnets=vpc.private_subnets, cluster_security_group=group,
            api_keys=ApiKeys(stack, "Keys"),
            deployment=EksDeployment(
                accelerator=neuron, instance_types=(neuron.default_instance_type,), region="us-east-2",
                redis_endpoint="redis.example", redis_port=6379, gcs_store_auth_secret="arn:aws:secretsmanager:x",
                ray_image="ray:1", gradio_image="gradio:1", api_keys_secret="arn:aws:secretsmanager:y")))
