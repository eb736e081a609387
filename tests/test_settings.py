"""Settings: defaults, parsing of `-c` strings, and one clear message per bad value."""

from __future__ import annotations

import pytest

from charts.accelerators import NEURON, NVIDIA
from stacks.settings import Settings, SettingsError
from tests.conftest import context


def settings(**overrides) -> Settings:
    return Settings.from_context(context(**overrides))


def problems(**overrides) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        settings(**overrides)
    return raised.value.problems


def test_defaults_come_from_cdk_json():
    s = settings()
    assert s.cluster.name == "ray-serve-ha"
    assert s.cluster.kubernetes_version == "1.35"
    assert s.cluster.endpoint_public_access_cidrs == ()
    assert s.capacity.accelerator is NEURON
    assert s.capacity.mode == "auto-mode"
    assert s.capacity.instance_types == ("inf2.8xlarge",)
    assert (s.capacity.min_nodes, s.capacity.max_nodes) == (2, 4)
    assert (s.gcs_store.engine, s.gcs_store.engine_version) == ("redis", "7.1")
    assert s.environment.account is None and s.environment.region is None


def test_cli_strings_are_parsed_like_json_values():
    # `cdk synth -c key=value` passes every value as a string.
    s = settings(
        acceleratorMinNodes="3",
        acceleratorMaxNodes="6",
        adminPrincipalArns='["arn:aws:iam::123456789012:role/Admin"]',
        endpointPublicAccessCidrs="203.0.113.0/24, 198.51.100.7/32",
    )
    assert (s.capacity.min_nodes, s.capacity.max_nodes) == (3, 6)
    assert s.cluster.admin_principal_arns == ("arn:aws:iam::123456789012:role/Admin",)
    assert s.cluster.endpoint_public_access_cidrs == ("203.0.113.0/24", "198.51.100.7/32")


def test_accelerator_picks_its_default_instance_type():
    s = settings(accelerator="nvidia")
    assert s.capacity.accelerator is NVIDIA
    assert s.capacity.instance_types == ("g6e.xlarge",)


def test_valkey_gets_a_valkey_version_by_default():
    assert settings(gcsStoreEngine="valkey").gcs_store.engine_version == "8.0"


def test_account_and_region_make_the_stacks_environment_aware():
    s = settings(account="123456789012", region="us-east-2")
    assert (s.environment.account, s.environment.region) == ("123456789012", "us-east-2")


NEURON_TYPES = "inf2.xlarge, inf2.8xlarge, inf2.24xlarge, inf2.48xlarge"
NVIDIA_TYPES = (
    "g6e.xlarge, g6e.2xlarge, g6e.4xlarge, g6e.12xlarge, g6.2xlarge, g6.4xlarge, "
    "g5.2xlarge, g5.4xlarge, g5.12xlarge"
)
CLUSTER_NAME_RULE = (
    "must be 1-40 lowercase letters, digits or hyphens, starting with a letter and ending with "
    "a letter or digit (a valid EKS cluster name and Kubernetes label value)"
)
ARN_RULE = "must be an IAM role or user ARN, arn:aws:iam::<12-digit account>:role/<name> or :user/<name>"

BAD_INPUTS = {
    "unknown accelerator": (
        {"accelerator": "tpu"},
        "accelerator='tpu': must be one of: neuron, nvidia",
    ),
    "unknown capacity mode": (
        {"capacityMode": "fargate"},
        "capacityMode='fargate': must be one of: auto-mode, node-groups",
    ),
    "GPU instance for neuron": (
        {"acceleratorInstanceTypes": '["g6e.xlarge"]'},
        "acceleratorInstanceTypes='g6e.xlarge': is not a neuron instance type (g6e.xlarge is a "
        f"nvidia instance type); allowed for accelerator=neuron: {NEURON_TYPES}",
    ),
    "inferentia instance for nvidia": (
        {"accelerator": "nvidia", "acceleratorInstanceTypes": "inf2.8xlarge"},
        "acceleratorInstanceTypes='inf2.8xlarge': is not a nvidia instance type (inf2.8xlarge is "
        f"a neuron instance type); allowed for accelerator=nvidia: {NVIDIA_TYPES}",
    ),
    "instance with no accelerator": (
        {"acceleratorInstanceTypes": ["m5.large"]},
        f"acceleratorInstanceTypes='m5.large': is not a neuron instance type; allowed for accelerator=neuron: {NEURON_TYPES}",
    ),
    "min greater than max": (
        {"acceleratorMinNodes": 5, "acceleratorMaxNodes": 4},
        "acceleratorMinNodes=5: must not exceed acceleratorMaxNodes (4)",
    ),
    "fewer than two nodes": (
        {"acceleratorMinNodes": "1"},
        "acceleratorMinNodes=1: must be from 2 to 100",
    ),
    "max not a number": (
        {"acceleratorMaxNodes": "four"},
        "acceleratorMaxNodes='four': must be a whole number from 2 to 100",
    ),
    "version EKS no longer creates": (
        {"kubernetesVersion": "1.29"},
        "kubernetesVersion='1.29': must be a Kubernetes minor EKS can create, written as a "
        "string: 1.32, 1.33, 1.34, 1.35, 1.36",
    ),
    "version without a kubectl layer": (
        {"kubernetesVersion": "1.34"},
        "kubernetesVersion='1.34': no kubectl layer for 1.34 is installed (add "
        "aws-cdk.lambda-layer-kubectl-v34 to requirements.txt); versions with a layer installed: 1.35",
    ),
    "version as a JSON number": (
        {"kubernetesVersion": 1.35},
        "kubernetesVersion=1.35: must be a string",
    ),
    "malformed admin ARN": (
        {"adminPrincipalArns": ["arn:aws:iam::1234:role/Admin"]},
        f"adminPrincipalArns='arn:aws:iam::1234:role/Admin': {ARN_RULE}",
    ),
    "assumed-role session ARN": (
        {"adminPrincipalArns": "arn:aws:sts::123456789012:assumed-role/Admin/alice"},
        f"adminPrincipalArns='arn:aws:sts::123456789012:assumed-role/Admin/alice': {ARN_RULE} "
        "(an assumed-role session; give the role's ARN, arn:aws:iam::<account>:role/<name>)",
    ),
    "admin ARNs not a JSON list": (
        {"adminPrincipalArns": "[arn:aws:iam::123456789012:role/Admin"},
        "adminPrincipalArns='[arn:aws:iam::123456789012:role/Admin': is not a valid JSON list",
    ),
    "CIDR prefix out of range": (
        {"endpointPublicAccessCidrs": ["203.0.113.0/33"]},
        "endpointPublicAccessCidrs='203.0.113.0/33': must be an IPv4 CIDR such as "
        "203.0.113.0/24 ('203.0.113.0/33' does not appear to be an IPv4 or IPv6 network)",
    ),
    "CIDR with host bits": (
        {"endpointPublicAccessCidrs": "203.0.113.7/24"},
        "endpointPublicAccessCidrs='203.0.113.7/24': must be an IPv4 CIDR such as "
        "203.0.113.0/24 (203.0.113.7/24 has host bits set)",
    ),
    "IPv6 CIDR": (
        {"endpointPublicAccessCidrs": "2001:db8::/32"},
        "endpointPublicAccessCidrs='2001:db8::/32': must be an IPv4 CIDR (EKS public endpoint "
        "access lists are IPv4 only)",
    ),
    "address without prefix": (
        {"endpointPublicAccessCidrs": "203.0.113.7"},
        "endpointPublicAccessCidrs='203.0.113.7': must include a prefix length, e.g. 203.0.113.7/32",
    ),
    "cluster name with capitals and underscore": (
        {"clusterName": "Ray_Cluster"},
        f"clusterName='Ray_Cluster': {CLUSTER_NAME_RULE}",
    ),
    "cluster name too long": (
        {"clusterName": "r" * 41},
        f"clusterName='{'r' * 41}': {CLUSTER_NAME_RULE}",
    ),
    "cluster name starting with a digit": (
        {"clusterName": "1cluster"},
        f"clusterName='1cluster': {CLUSTER_NAME_RULE}",
    ),
    "unknown GCS store engine": (
        {"gcsStoreEngine": "memcached"},
        "gcsStoreEngine='memcached': must be one of: redis, valkey",
    ),
    "redis version Ray does not support": (
        {"gcsStoreEngineVersion": "5.0.6"},
        "gcsStoreEngineVersion='5.0.6': must be one of 6.2, 7.0, 7.1 for gcsStoreEngine=redis",
    ),
    "redis version for valkey": (
        {"gcsStoreEngine": "valkey", "gcsStoreEngineVersion": "7.1"},
        "gcsStoreEngineVersion='7.1': must be one of 7.2, 8.0, 8.1 for gcsStoreEngine=valkey",
    ),
    "node type without cache prefix": (
        {"gcsStoreNodeType": "r7g.large"},
        "gcsStoreNodeType='r7g.large': must be an ElastiCache node type such as cache.r7g.large "
        "(Multi-AZ failover needs a current generation)",
    ),
    "secret name with spaces": (
        {"huggingFaceTokenSecretName": "hf token!"},
        "huggingFaceTokenSecretName='hf token!': must be 1-512 letters, digits or /_+=.@- (a "
        "Secrets Manager secret name)",
    ),
    "short account id": (
        {"account": "1234"},
        "account='1234': must be a 12-digit AWS account id",
    ),
    "unknown region": (
        {"region": "mars"},
        "region='mars': must be an AWS region name such as us-east-2",
    ),
    "model id without organization": (
        {"modelId": "Mistral-7B-Instruct-v0.2"},
        "modelId='Mistral-7B-Instruct-v0.2': must be a Hugging Face model id, <organization>/<model>",
    ),
    "misspelt setting": (
        {"accelerater": "nvidia"},
        "accelerater: unknown setting; did you mean 'accelerator'?",
    ),
}


@pytest.mark.parametrize("overrides,expected", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_value_is_refused_with_key_value_and_what_is_allowed(overrides, expected):
    assert problems(**overrides) == [expected]


def test_every_problem_is_reported_in_one_message():
    with pytest.raises(SettingsError) as raised:
        settings(accelerator="tpu", acceleratorMinNodes=9, clusterName="X")
    assert str(raised.value) == (
        "Invalid settings (3 problems). Fix them in cdk.json or with -c key=value:\n"
        f"  - clusterName='X': {CLUSTER_NAME_RULE}\n"
        "  - accelerator='tpu': must be one of: neuron, nvidia\n"
        "  - acceleratorMinNodes=9: must not exceed acceleratorMaxNodes (4)"
    )


def test_feature_flags_and_cli_keys_are_not_mistaken_for_settings():
    s = settings(**{"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:enable-path-metadata": True})
    assert s.cluster.name == "ray-serve-ha"
