"""Settings: one default per key (the model), parsing of `-c` strings, one clear message per
bad value or rule across values, and README's table equal to the model."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import aws_cdk as cdk
import pytest

from app import main
from ray_serve_ha.charts.accelerators import ACCELERATORS, NEURON, NVIDIA
from ray_serve_ha.charts.job_args import JOB_ARGUMENTS
from ray_serve_ha.constructs.gcs_store_engine import ELASTICACHE_NODE_TYPES
from ray_serve_ha.constructs.readiness import READINESS_TIMEOUT_MAX_MINUTES
from stacks.settings import (
    SETTING_KEYS,
    Settings,
    SettingsError,
    settings_table,
)
from tests.conftest import CDK_JSON_CONTEXT, ROOT, context


def settings(**overrides) -> Settings:
    return Settings.from_context(context(**overrides))


def problems(**overrides) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        settings(**overrides)
    return raised.value.problems


def test_defaults_come_from_the_model_and_cdk_json_holds_only_feature_flags():
    # A key in cdk.json would be a second default; it holds only what a user changes.
    assert [key for key in CDK_JSON_CONTEXT if key in SETTING_KEYS] == []
    s = settings()
    assert s.cluster.name == "ray-serve-ha"
    assert s.cluster.kubernetes_version == "1.35"
    assert s.cluster.endpoint_public_access_cidrs == ()
    assert s.capacity.accelerator is NEURON
    assert s.capacity.mode == "auto-mode"
    assert s.capacity.instance_types == ("inf2.8xlarge",)
    assert (s.capacity.min_nodes, s.capacity.max_nodes) == (2, 4)
    assert (s.gcs_store.engine, s.gcs_store.engine_version, s.gcs_store.node_type) == (
        "redis",
        "7.1",
        "cache.r7g.large",
    )
    assert s.operations.readiness_timeout_minutes == READINESS_TIMEOUT_MAX_MINUTES == 55
    assert s.environment.account is None and s.environment.region is None
    assert s.pipeline.enabled is False and s.batch_teams == ()


def test_readme_settings_table_is_the_models():
    # Keys, defaults and allowed values: `python -m stacks.settings` prints the table.
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    assert table == settings_table()
    assert [re.match(r"\| `(\w+)`", row).group(1) for row in settings_table().splitlines()[2:]] == list(SETTING_KEYS)


def test_null_means_the_default():
    s = settings(acceleratorInstanceTypes=None, clusterName=None)
    assert s.capacity.instance_types == ("inf2.8xlarge",) and s.cluster.name == "ray-serve-ha"


def test_cli_strings_are_parsed_like_json_values():
    # `cdk synth -c key=value` passes every value as a string.
    s = settings(
        acceleratorMinNodes="3",
        acceleratorMaxNodes=" 6 ",
        adminPrincipalArns='["arn:aws:iam::123456789012:role/Admin"]',
        endpointPublicAccessCidrs="203.0.113.0/24, 198.51.100.7/32",
        acceleratorInstanceTypes="inf2.8xlarge,inf2.24xlarge",
        availabilitySloPercent="99.5",
        readinessTimeoutMinutes="30",
        pipeline="False",
        batchTeams='[{"name": "analytics", "namespace": "team-analytics", "cpus": 4, "memoryGib": 16}]',
    )
    assert (s.capacity.min_nodes, s.capacity.max_nodes) == (3, 6)
    assert s.cluster.admin_principal_arns == ("arn:aws:iam::123456789012:role/Admin",)
    assert s.cluster.endpoint_public_access_cidrs == ("203.0.113.0/24", "198.51.100.7/32")
    assert s.capacity.instance_types == ("inf2.8xlarge", "inf2.24xlarge")
    assert s.operations.availability_slo_percent == 99.5 and s.operations.readiness_timeout_minutes == 30
    assert s.pipeline.enabled is False
    (team,) = s.batch_teams
    assert (team.name, team.cpus, team.memory_gib, team.max_workers) == ("analytics", 4, 16, 2)


def test_accelerator_picks_its_default_instance_type():
    s = settings(accelerator="nvidia")
    assert s.capacity.accelerator is NVIDIA
    assert s.capacity.instance_types == ("g6e.xlarge",)


def test_valkey_gets_a_valkey_version_by_default():
    assert settings(gcsStoreEngine="valkey").gcs_store.engine_version == "8.0"


def test_account_and_region_make_the_stacks_environment_aware():
    s = settings(account="123456789012", region="us-east-2")
    assert (s.environment.account, s.environment.region) == ("123456789012", "us-east-2")


def test_the_smallest_inferentia_is_refused_for_its_host_memory():
    assert "16 GiB" in NEURON.unfit_reason("inf2.xlarge")


def test_every_instance_type_but_the_smallest_inferentia_can_serve_the_model():
    unfit = {t: a.unfit_reason(t) for a in ACCELERATORS.values() for t in a.instance_types if a.unfit_reason(t)}
    assert list(unfit) == ["inf2.xlarge"]
    for accelerator in ACCELERATORS.values():
        s = settings(accelerator=accelerator.name, acceleratorInstanceTypes=[
            t for t in accelerator.instance_types if t not in unfit
        ])
        assert set(s.capacity.instance_types) == set(accelerator.instance_types) - set(unfit)


def test_every_listed_elasticache_node_type_is_accepted():
    for family, sizes in ELASTICACHE_NODE_TYPES.items():
        for size in sizes:
            assert settings(gcsStoreNodeType=f"cache.{family}.{size}").gcs_store.node_type == f"cache.{family}.{size}"


def test_elasticache_node_types_match_their_source():
    # The table's source: the ElastiCache API Reference's CacheNode text, which botocore
    # ships. Current generation, less T2 (no new T2 clusters, per the user guide).
    botocore_session = pytest.importorskip("botocore.session")
    model = botocore_session.get_session().get_service_model("elasticache")
    text = re.sub(r"<[^>]+>", " ", model.shape_for("CacheNode").documentation)
    current = [part.split("Previous generation")[0] for part in text.split("Current generation")[1:]]
    listed: dict[str, list[str]] = {}
    for node_type in re.findall(r"cache\.([a-z0-9]+)\.([a-z0-9]+)", " ".join(current)):
        listed.setdefault(node_type[0], []).append(node_type[1])
    del listed["t2"]
    assert {f: tuple(s) for f, s in listed.items()} == ELASTICACHE_NODE_TYPES


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
NODE_FAMILIES = "m7g, m6g, m5, m4, t4g, t3, r7g, r6g, r5, r4"
EMPTY_TYPES = (
    "must name at least one instance type; leave it unset for the accelerator's default "
    "(neuron: inf2.8xlarge, nvidia: g6e.xlarge)"
)
# What a worker may request on each team node-group size (Karpenter's allocatable estimate
# less DaemonSets and margin, ray_serve_ha/charts/accelerators.py).
CPU_SIZES = (
    "m7i.large (1 CPU, 5 GiB for a worker), m7i.xlarge (3 CPU, 12 GiB for a worker), m7i.2xlarge (7 CPU, "
    "26 GiB for a worker), m7i.4xlarge (15 CPU, 53 GiB for a worker), m7i.8xlarge (31 CPU, 110 GiB for a "
    "worker), m7i.16xlarge (63 CPU, 219 GiB for a worker)"
)


def team(**fields) -> str:
    """batchTeams with one CPU team, as `-c batchTeams=` passes it."""
    return json.dumps([{"name": "analytics", "namespace": "team-analytics", "cpus": 4, "memoryGib": 16, **fields}])


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
        "acceleratorInstanceTypes='m5.large': is not a neuron instance type; "
        f"allowed for accelerator=neuron: {NEURON_TYPES}",
    ),
    "inferentia too small for the model": (
        {"acceleratorInstanceTypes": "inf2.xlarge,inf2.8xlarge"},
        "acceleratorInstanceTypes='inf2.xlarge': cannot serve the model: inf2.xlarge has 16 GiB of host "
        "memory; a worker there may request 12 GiB, too little to load the model's ≈14.5 GB of bf16 "
        "weights (Mistral-7B)",
    ),
    "empty JSON list of instance types": (
        {"acceleratorInstanceTypes": "[]"},
        f"acceleratorInstanceTypes='[]': {EMPTY_TYPES}",
    ),
    "empty string of instance types": (
        {"acceleratorInstanceTypes": ""},
        f"acceleratorInstanceTypes='': {EMPTY_TYPES}",
    ),
    "empty list of instance types in cdk.json": (
        {"acceleratorInstanceTypes": []},
        f"acceleratorInstanceTypes=[]: {EMPTY_TYPES}",
    ),
    "instance types not strings": (
        {"acceleratorInstanceTypes": [8]},
        "acceleratorInstanceTypes=[8]: must be a list of strings (JSON list or comma-separated)",
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
    "nodes as a boolean": (
        {"acceleratorMaxNodes": True},
        "acceleratorMaxNodes=true: must be a whole number from 2 to 100",
    ),
    "nodes as a fraction": (
        {"acceleratorMaxNodes": 2.5},
        "acceleratorMaxNodes=2.5: must be a whole number from 2 to 100",
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
        "gcsStoreEngineVersion='5.0.6': must be one of 7.0, 7.1 for gcsStoreEngine=redis",
    ),
    "redis version without TLS-required mode": (
        {"gcsStoreEngineVersion": "6.2"},
        "gcsStoreEngineVersion='6.2': the GCS store requires TLS (transit encryption mode 'required'), "
        "which needs redis 7.0 or later; use one of 7.0, 7.1",
    ),
    "redis version for valkey": (
        {"gcsStoreEngine": "valkey", "gcsStoreEngineVersion": "7.1"},
        "gcsStoreEngineVersion='7.1': must be one of 7.2, 8.0, 8.1 for gcsStoreEngine=valkey",
    ),
    "node type without cache prefix": (
        {"gcsStoreNodeType": "r7g.large"},
        "gcsStoreNodeType='r7g.large': must be an ElastiCache node type, cache.<family>.<size>, "
        "such as cache.r7g.large",
    ),
    "node type of no family": (
        {"gcsStoreNodeType": "cache.zz9.mega"},
        f"gcsStoreNodeType='cache.zz9.mega': 'zz9' is not an ElastiCache node family; families: {NODE_FAMILIES} "
        "(such as cache.r7g.large)",
    ),
    "node type of a size the family lacks": (
        {"gcsStoreNodeType": "cache.r7g.24xlarge"},
        "gcsStoreNodeType='cache.r7g.24xlarge': cache.r7g comes in sizes: large, xlarge, 2xlarge, 4xlarge, "
        "8xlarge, 12xlarge, 16xlarge",
    ),
    "node type of a previous generation": (
        {"gcsStoreNodeType": "cache.t2.micro"},
        "gcsStoreNodeType='cache.t2.micro': cache.t2 is a previous generation ElastiCache no longer creates "
        f"clusters on; use a current family ({NODE_FAMILIES}), such as cache.r7g.large",
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
    "readiness longer than a custom resource can wait": (
        {"readinessTimeoutMinutes": "60"},
        "readinessTimeoutMinutes=60: must be from 5 to 55",
    ),
    "SLO not a number": (
        {"availabilitySloPercent": "high"},
        "availabilitySloPercent='high': must be a number from 50 to 99.99",
    ),
    "SLO out of range": (
        {"availabilitySloPercent": "100"},
        "availabilitySloPercent=100: must be from 50 to 99.99",
    ),
    "pipeline not a boolean": (
        {"pipeline": "yes"},
        "pipeline='yes': must be true or false",
    ),
    "misspelt setting": (
        {"accelerater": "nvidia"},
        "accelerater: unknown setting; did you mean 'accelerator'?",
    ),
    "team bigger than any node group size": (
        {"capacityMode": "node-groups", "batchTeams": team(cpus=64, memoryGib=300)},
        "batchTeams[0]: cpus=64, memoryGib=300: no node-group instance type holds this worker once the "
        f"node's own reservations are taken (capacityMode=node-groups); sizes: {CPU_SIZES}",
    ),
    "team cpus a fraction": (
        {"batchTeams": team(cpus=2.5)},
        "batchTeams[0].cpus=2.5: must be a whole number from 1 to 192",
    ),
    "team cpus a boolean": (
        {"batchTeams": team(cpus=True)},
        "batchTeams[0].cpus=true: must be a whole number from 1 to 192",
    ),
    "team cpus a string": (
        {"batchTeams": team(cpus="4")},
        "batchTeams[0].cpus='4': must be a whole number from 1 to 192 (a JSON number, not a string)",
    ),
    "team workers huge": (
        {"batchTeams": team(maxWorkers=1e9)},
        "batchTeams[0].maxWorkers=1000000000.0: must be a whole number from 1 to 100",
    ),
    "team workers a string": (
        {"batchTeams": team(maxWorkers="2")},
        "batchTeams[0].maxWorkers='2': must be a whole number from 1 to 100 (a JSON number, not a string)",
    ),
    "team workers out of range": (
        {"batchTeams": team(maxWorkers=101)},
        "batchTeams[0].maxWorkers=101: must be from 1 to 100",
    ),
    "team capacity type": (
        {"batchTeams": team(capacityType="reserved")},
        "batchTeams[0].capacityType='reserved': must be one of: on-demand, spot",
    ),
    "team field misspelt": (
        {"batchTeams": team(memoryGiB=16)},
        "batchTeams[0]: unknown field(s) memoryGiB (did you mean 'memoryGib'?); allowed: name, namespace, "
        "cpus, memoryGib, instanceType, minWorkers, maxWorkers, capacityType, rayImage",
    ),
    "team without a namespace": (
        {"batchTeams": [{"name": "analytics", "cpus": 4, "memoryGib": 16}]},
        "batchTeams[0].namespace: required",
    ),
    "team not an object": (
        {"batchTeams": '["analytics"]'},
        "batchTeams[0]='analytics': must be a team object (see README, Settings)",
    ),
    "teams not a list": (
        {"batchTeams": '{"name": "analytics"}'},
        'batchTeams=\'{"name": "analytics"}\': must be a JSON list of team objects',
    ),
    "teams not JSON": (
        {"batchTeams": "[{name: analytics}]"},
        "batchTeams='[{name: analytics}]': is not a valid JSON list",
    ),
    "team on a type of no accelerator": (
        {"batchTeams": json.dumps([{"name": "vision", "namespace": "team-vision", "instanceType": "m5.large"}])},
        f"batchTeams[0]: instanceType='m5.large' is not an accelerator instance type; allowed: {NEURON_TYPES}, "
        f"{NVIDIA_TYPES}",
    ),
    "team name too long for its RayJobs": (
        {"batchTeams": team(name="a" * 40)},
        f"batchTeams[0]: name='{'a' * 40}' is 40 characters; at most 39: the team's RayJob "
        f"'{'a' * 40}-xgboost' must stay within KubeRay's 47 characters",
    ),
    "team name not a DNS label": (
        {"batchTeams": team(name="Analytics")},
        "batchTeams[0]: team name 'Analytics' is not a DNS-1035 label: use lowercase letters, digits and '-', "
        "starting with a letter and ending with a letter or digit",
    ),
    "a serving disk too small for its image": (
        {"acceleratorNodeDiskGib": "50"},
        "acceleratorNodeDiskGib=50: a neuron serving node keeps ray-serve (neuron) 31 GB + model weights 14.5 GB + "
        "neuron compile scratch 16 GB + DaemonSet images 1.5 GB + OS and logs 10 GB = 73 GB; with 25% for "
        "estimates, below the kubelet's 85% image GC threshold: 100 GiB; set at least 100, or leave it unset",
    ),
    "a disk below EKS's minimum": (
        {"acceleratorNodeDiskGib": 10},
        "acceleratorNodeDiskGib=10: must be from 20 to 16384",
    ),
    "more teams than the system node group can hold": (
        {
            "capacityMode": "node-groups",
            "batchTeams": [{"name": f"t{i}", "namespace": f"team-{i}", "cpus": 1, "memoryGib": 1} for i in range(448)],
        },
        "batchTeams: 448 teams need 451 m7i.xlarge system nodes for their Ray heads (a head of 2.5 CPUs and "
        "8.5 GiB each, plus the serving head, an upgrade's second head, the chat UI and the operators); a "
        "managed node group holds at most 450: use fewer teams, or capacityMode=auto-mode",
    ),
    "an unknown VPC endpoint choice": (
        {"vpcEndpoints": "all"},
        "vpcEndpoints='all': must be one of: none, s3, s3+ecr",
    ),
    "two teams in one namespace": (
        {
            "batchTeams": json.dumps(
                [
                    {"name": "a", "namespace": "team-x", "cpus": 2, "memoryGib": 4},
                    {"name": "b", "namespace": "team-x", "cpus": 2, "memoryGib": 4},
                ]
            )
        },
        "batchTeams: two teams have the namespace 'team-x'; each team needs its own",
    ),
}


@pytest.mark.parametrize("overrides,expected", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_value_is_refused_with_one_message_and_nothing_synthesized(tmp_path, capsys, overrides, expected):
    # What app.py does with the settings `cdk synth` passes it: one message, exit 1, no stack.
    assert main(cdk.App(context=context(**overrides), outdir=str(tmp_path))) == 1
    assert capsys.readouterr().err == (
        "error: Invalid settings (1 problem). Fix them in cdk.json or with -c key=value:\n"
        f"  - {expected}\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_every_problem_is_reported_in_one_message():
    with pytest.raises(SettingsError) as raised:
        settings(accelerator="tpu", acceleratorMinNodes=9, clusterName="X", gcsStoreEngineVersion="6.2",
                 batchTeams=team(cpus=2.5))
    assert str(raised.value) == (
        "Invalid settings (5 problems). Fix them in cdk.json or with -c key=value:\n"
        f"  - clusterName='X': {CLUSTER_NAME_RULE}\n"
        "  - accelerator='tpu': must be one of: neuron, nvidia\n"
        "  - batchTeams[0].cpus=2.5: must be a whole number from 1 to 192\n"
        "  - acceleratorMinNodes=9: must not exceed acceleratorMaxNodes (4)\n"
        "  - gcsStoreEngineVersion='6.2': the GCS store requires TLS (transit encryption mode 'required'), "
        "which needs redis 7.0 or later; use one of 7.0, 7.1"
    )


def test_a_rule_across_values_is_not_reported_for_a_value_already_refused():
    # A bad accelerator says so once; its instance types are not then judged against a guess.
    assert problems(accelerator="tpu", acceleratorInstanceTypes="g6e.xlarge") == [
        "accelerator='tpu': must be one of: neuron, nvidia"
    ]


def test_team_name_limit_follows_the_longest_job(monkeypatch):
    longest = max(len(job) for job in JOB_ARGUMENTS)
    at_limit = "a" * (47 - 1 - longest)
    assert settings(batchTeams=team(name=at_limit)).batch_teams[0].name == at_limit
    # A new job with a longer name shortens what a team name may be, with no other change.
    sweep = replace(JOB_ARGUMENTS["xgboost"], job="hyperparameter-sweep")
    monkeypatch.setitem(JOB_ARGUMENTS, sweep.job, sweep)
    assert problems(batchTeams=team(name=at_limit)) == [
        f"batchTeams[0]: name='{at_limit}' is {len(at_limit)} characters; at most 26: the team's RayJob "
        f"'{at_limit}-hyperparameter-sweep' must stay within KubeRay's 47 characters"
    ]


def test_a_team_that_fits_a_node_group_is_accepted():
    s = settings(capacityMode="node-groups", batchTeams=team(cpus=63, memoryGib=219))
    assert (s.batch_teams[0].cpus, s.batch_teams[0].memory_gib) == (63, 219)


def test_feature_flags_and_cli_keys_are_not_mistaken_for_settings():
    s = settings(**{"@aws-cdk/core:newStyleStackSynthesis": True, "aws:cdk:enable-path-metadata": True})
    assert s.cluster.name == "ray-serve-ha"


def test_teams_that_pass_on_their_own_are_still_judged_against_the_capacity():
    assert problems(capacityMode="node-groups", batchTeams=json.dumps([
        {"name": "a", "namespace": "team-a", "cpus": 64, "memoryGib": 300},
        {"name": "b", "namespace": "team-b", "cpus": True, "memoryGib": 8},
    ])) == [
        "batchTeams[1].cpus=true: must be a whole number from 1 to 192",
        "batchTeams[0]: cpus=64, memoryGib=300: no node-group instance type holds this worker once the "
        f"node's own reservations are taken (capacityMode=node-groups); sizes: {CPU_SIZES}",
    ]


@pytest.mark.parametrize(("teams", "min_nodes", "max_nodes"), [(0, 2, 3), (1, 2, 4), (3, 4, 6)])
def test_the_system_node_group_holds_every_head_and_an_upgrades_second(teams, min_nodes, max_nodes):
    # One head (2.5 CPUs, 8.5 GiB with its autoscaler sidecar) per m7i.xlarge, whose pods may
    # request 3.17 CPUs and 12.3 GiB by Karpenter's estimate: the serving head and each team's
    # in steady state (two nodes at least, the small pods beside the heads), and a NewCluster
    # upgrade's second serving head on a node of its own: the scheduler spreads the small pods
    # (UI, operator, CoreDNS), which may leave no node with room for a head, so they get theirs.
    found = settings(capacityMode="node-groups", batchTeams=[
        {"name": f"t{i}", "namespace": f"team-{i}", "cpus": 1, "memoryGib": 1} for i in range(teams)
    ]).capacity.system_nodes
    assert (found.instance_type, found.min_nodes, found.max_nodes) == ("m7i.xlarge", min_nodes, max_nodes)


def test_a_head_fits_a_system_node_by_the_schedulers_estimate_and_two_do_not():
    from ray_serve_ha.charts.accelerators import CPU_INSTANCE_TYPES
    from ray_serve_ha.charts.capacity_plan import serving_head, team_head

    node = CPU_INSTANCE_TYPES["m7i.xlarge"]
    head = serving_head(autoscaling=True)
    assert (head.cpu_milli, head.memory_mib) == (2500, 8704)
    assert (team_head("a").cpu_milli, team_head("a").memory_mib) == (2500, 8704)
    assert head.cpu_milli <= node.pods_cpu_milli < 2 * head.cpu_milli
    assert head.memory_mib <= node.pods_memory_mib < 2 * head.memory_mib


def test_vpc_endpoints_default_to_s3_for_a_new_vpc_and_none_for_an_existing_one():
    from tests.conftest import existing_vpc

    assert settings().network.endpoints == "s3"
    assert settings(**existing_vpc()).network.endpoints == "none"
    assert settings(**existing_vpc(vpcEndpoints="s3+ecr")).network.endpoints == "s3+ecr"


def test_settings_read_no_kubernetes_library():
    # Teams are checked with the library's pure rules (batch_teams.py), not by building charts.
    import subprocess
    import sys

    code = "import sys, stacks.settings; sys.exit(any(m in sys.modules for m in ('cdk8s', 'cdk8s_plus_28')))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0


def test_settings_defaults_are_the_librarys():
    from ray_serve_ha.charts.capacity import DEFAULT_CAPACITY_MODE, DEFAULT_MAX_NODES, DEFAULT_MIN_NODES
    from ray_serve_ha.charts.profiles import EksDeployment
    from ray_serve_ha.constructs.availability import DEFAULT_SLO_PERCENT
    from ray_serve_ha.constructs.gcs_store_engine import GcsStoreEngine
    from ray_serve_ha.constructs.readiness import DEFAULT_READINESS_TIMEOUT_MINUTES

    s = settings()
    assert (s.capacity.mode, s.capacity.min_nodes, s.capacity.max_nodes) == (
        DEFAULT_CAPACITY_MODE, DEFAULT_MIN_NODES, DEFAULT_MAX_NODES
    ) == (EksDeployment.capacity_mode, EksDeployment.min_workers, EksDeployment.max_workers)
    assert s.gcs_store == GcsStoreEngine()
    assert s.operations.readiness_timeout_minutes == DEFAULT_READINESS_TIMEOUT_MINUTES
    assert s.operations.availability_slo_percent == DEFAULT_SLO_PERCENT
    assert (s.serving.model_id, s.secrets.hugging_face_token_secret_name) == (
        EksDeployment.model_id, EksDeployment.hugging_face_token_secret
    )
