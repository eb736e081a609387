"""The API keys secret in the templates: its SecretString is its initial value, pinned to
what every deployed stack already has (a change would make CloudFormation write the secret
anew and lose every key an operator added), and consumers reach it through the
`Custom::ApiKeyEntries` resource, whose function may read the seeds and read and write the
keys secret, nothing more, and which the readers of the keys are created after.
The handler's behaviour against Secrets Manager: tests/test_staged_lambdas.py."""

from __future__ import annotations

import re

import aws_cdk as cdk
import pytest
from aws_cdk import assertions

from ray_serve_ha.constructs.api_keys import CONSUMERS, INITIAL_CONSUMERS, ApiKeys, ApiKeysProps
from ray_serve_ha.constructs.lambda_code import HANDLERS, PYTHON_RUNTIME

# The keys secret's SecretString as every release since the API keys were introduced wrote
# it (chat-ui, serve-probe, ha-drill, operator): byte for byte, never to change.
INITIAL_SECRET_STRING = {"Fn::Join": ["", [
    '{"chat-ui":"{{resolve:secretsmanager:', {"Ref": "ApiKeysSeedChatUiDC2693E4"},
    ':SecretString:::}}","serve-probe":"{{resolve:secretsmanager:', {"Ref": "ApiKeysSeedServeProbeD34D62F2"},
    ':SecretString:::}}","ha-drill":"{{resolve:secretsmanager:', {"Ref": "ApiKeysSeedHaDrillF8EB2B45"},
    ':SecretString:::}}","operator":"{{resolve:secretsmanager:', {"Ref": "ApiKeysSeedOperatorD9631BBE"},
    ':SecretString:::}}"}',
]]}
SEED_IDS = {
    "chat-ui": "ApiKeysSeedChatUiDC2693E4",
    "serve-probe": "ApiKeysSeedServeProbeD34D62F2",
    "ha-drill": "ApiKeysSeedHaDrillF8EB2B45",
    "operator": "ApiKeysSeedOperatorD9631BBE",
    "readiness-gate": "ApiKeysSeedReadinessGate17E2F409",
}


@pytest.fixture(scope="module")
def resources(default_system) -> dict:
    return default_system.serving.to_json()["Resources"]


def of_type(resources: dict, resource_type: str) -> dict:
    return {k: r for k, r in resources.items() if r["Type"] == resource_type}


def test_the_keys_secret_keeps_its_initial_value_on_every_deploy(resources):
    secret = resources["ApiKeys279AF7D5"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    assert secret["Properties"]["SecretString"] == INITIAL_SECRET_STRING
    assert INITIAL_CONSUMERS == ("chat-ui", "serve-probe", "ha-drill", "operator")
    # Every seed keeps its logical id (a new one would be a new key).
    seeds = {k: r for k, r in of_type(resources, "AWS::SecretsManager::Secret").items()
             if "GenerateSecretString" in r["Properties"]}
    assert set(seeds) == set(SEED_IDS.values())
    assert set(SEED_IDS) == set(CONSUMERS)


def test_the_entries_resource_lists_every_consumer_with_its_seed(resources):
    ((entries_id, entries),) = of_type(resources, "Custom::ApiKeyEntries").items()
    properties = entries["Properties"]
    assert properties["KeysSecretArn"] == {"Ref": "ApiKeys279AF7D5"}
    assert properties["Consumers"] == [{"Name": name, "SeedArn": {"Ref": SEED_IDS[name]}} for name in CONSUMERS]
    # Provider framework, onEvent only: no waiter.
    assert not [k for k in of_type(resources, "AWS::StepFunctions::StateMachine") if k.startswith("ApiKeys")]
    assert entries_id.startswith("ApiKeysEntries")


def function_of(resources: dict) -> tuple[str, dict]:
    ((found),) = [(k, r) for k, r in of_type(resources, "AWS::Lambda::Function").items()
                  if r["Properties"].get("Handler") == "index.add_missing_entries"]
    return found


def test_the_function_runs_the_handler_on_the_lambda_runtime_with_a_log_group(resources):
    _, function = function_of(resources)
    properties = function["Properties"]
    assert properties["Runtime"] == PYTHON_RUNTIME.name
    assert (HANDLERS / "api_keys_merge" / "index.py").is_file()
    group = resources[properties["LoggingConfig"]["LogGroup"]["Ref"]]
    assert group["Properties"]["RetentionInDays"] == 30


def test_the_functions_role_reads_the_seeds_and_reads_and_writes_the_keys_only(resources):
    _, function = function_of(resources)
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = [r["Properties"] for r in of_type(resources, "AWS::IAM::Policy").values()
                if {"Ref": role} in r["Properties"]["Roles"]]
    (policy,) = policies
    assert policy["Roles"] == [{"Ref": role}]
    assert policy["PolicyDocument"]["Statement"] == [
        {"Action": "secretsmanager:GetSecretValue", "Effect": "Allow",
         "Resource": [{"Ref": seed} for seed in sorted(SEED_IDS[name] for name in CONSUMERS)]},
        {"Action": ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"], "Effect": "Allow",
         "Resource": {"Ref": "ApiKeys279AF7D5"}},
    ]
    # The secrets are encrypted with the AWS managed key: no KMS grant is needed.
    assert not [r for r in of_type(resources, "AWS::SecretsManager::Secret").values() if "KmsKeyId" in r["Properties"]]


def test_the_readers_of_the_keys_come_after_the_entries(resources):
    (entries_id,) = of_type(resources, "Custom::ApiKeyEntries")
    readers = {
        "readiness gate": of_type(resources, "Custom::RayServiceReady"),
        "probe schedule": of_type(resources, "AWS::Events::Rule"),
        "drill": of_type(resources, "AWS::CodeBuild::Project"),
        # The secrets chart (External Secrets' ExternalSecrets of the keys).
        "synced secrets": {k: r for k, r in of_type(resources, "Custom::AWSCDK-EKS-KubernetesResource").items()
                           if k.startswith("SecretsChart")},
    }
    for reader, found in readers.items():
        (resource,) = found.values()
        assert entries_id in resource["DependsOn"], reader


def test_the_initial_value_does_not_follow_the_consumers():
    """A library user's own consumer list changes the entries resource, never the secret."""
    stack = cdk.Stack(cdk.App(), "Parts")
    ApiKeys(stack, "Keys", ApiKeysProps(consumers=("chat-ui", "team-a")))
    template = assertions.Template.from_stack(stack).to_json()["Resources"]
    (secret,) = [r for r in template.values() if "SecretString" in r.get("Properties", {})]
    parts = secret["Properties"]["SecretString"]["Fn::Join"][1]
    text = "".join(p for p in parts if isinstance(p, str))
    assert re.findall(r'"([a-z-]+)":"\{\{resolve:secretsmanager:', text) == list(INITIAL_CONSUMERS)
    (entries,) = [r for r in template.values() if r["Type"] == "Custom::ApiKeyEntries"]
    assert [c["Name"] for c in entries["Properties"]["Consumers"]] == ["chat-ui", "team-a"]
    seeds = [r for r in template.values() if "GenerateSecretString" in r.get("Properties", {})]
    assert len(seeds) == 5  # the four initial ones and team-a's
