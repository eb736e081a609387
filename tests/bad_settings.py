"""Bad settings, one per rule, each with the one message `cdk synth` prints for it (the
settings tests' table: tests/test_settings.py runs every case through app.py)."""

from __future__ import annotations

import json

from ray_serve_ha.charts.accelerators import ACCELERATORS

# From the accelerator table, in its order.
ACCELERATOR_NAMES = ", ".join(ACCELERATORS)
NEURON_TYPES = ", ".join(ACCELERATORS["neuron"].instance_types)
NVIDIA_TYPES = ", ".join(ACCELERATORS["nvidia"].instance_types)
ALL_TYPES = ", ".join(t for a in ACCELERATORS.values() for t in a.instance_types)
DEFAULT_TYPES = ", ".join(f"{a.name}: {a.default_instance_type}" for a in ACCELERATORS.values())
CLUSTER_NAME_RULE = (
    "must be 1-40 lowercase letters, digits or hyphens, starting with a letter and ending with "
    "a letter or digit (a valid EKS cluster name and Kubernetes label value)"
)
ARN_RULE = "must be an IAM role or user ARN, arn:aws:iam::<12-digit account>:role/<name> or :user/<name>"
NODE_FAMILIES = "m7g, m6g, m5, m4, t4g, t3, r7g, r6g, r5, r4"
EMPTY_TYPES = (
    "must name at least one instance type; leave it unset for the accelerator's default "
    f"({DEFAULT_TYPES})"
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
    "a request limit of zero": (
        {"apiRateLimitPerMinute": "0"}, "apiRateLimitPerMinute=0: must be from 1 to 10000000",
    ),
    "a negative token limit": (
        {"apiTokenLimitPerMinute": -5}, "apiTokenLimitPerMinute=-5: must be from 1 to 10000000",
    ),
    "a negative queue bound": (
        {"maxQueuedRequests": -1}, "maxQueuedRequests=-1: must be from 0 to 10000",
    ),
    "a queue bound that is no number": (
        {"maxQueuedRequests": "lots"}, "maxQueuedRequests='lots': must be a whole number from 0 to 10000",
    ),
    "a model the table lacks, without its size": (
        {"modelId": "acme/big-model"},
        "modelId='acme/big-model': is not in the models table (mistralai/Mistral-7B-Instruct-v0.2, "
        "meta-llama/Llama-3.1-8B-Instruct); set modelWeightsGb to the size of its weights in GB (bf16: 2 × its "
        "parameters in billions) to serve it",
    ),
    "a size for a model the table knows": (
        {"modelWeightsGb": 20},
        "modelWeightsGb=20: the models table already knows mistralai/Mistral-7B-Instruct-v0.2 (14.5 GB); "
        "leave it unset",
    ),
    "a model too large for the devices of one node": (
        {"modelId": "acme/big-model", "modelWeightsGb": 24, "accelerator": "nvidia",
         "acceleratorInstanceTypes": "g5.2xlarge"},
        "acceleratorInstanceTypes='g5.2xlarge': cannot serve the model: g5.2xlarge has 1 device(s); one replica "
        "shards acme/big-model over 2 GPUs (2 device(s))",
    ),
    "model weights of no size": (
        {"modelId": "acme/big-model", "modelWeightsGb": 0},
        "modelWeightsGb=0: Input should be greater than 0",
    ),
    "unknown accelerator": (
        {"accelerator": "tpu"},
        f"accelerator='tpu': must be one of: {ACCELERATOR_NAMES}",
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
        "memory; a worker there may request 12 GiB, too little to load mistralai/Mistral-7B-Instruct-v0.2's "
        "≈14.5 GB of bf16 weights",
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
        "batchTeams[0]='analytics': must be a team object (see docs/settings.md)",
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
        f"batchTeams[0]: instanceType='m5.large' is not an accelerator instance type; allowed: {ALL_TYPES}",
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
