"""cdk-nag AwsSolutions checks over the whole app, and every acknowledged finding with its
reason, in one place. An unacknowledged finding fails synth."""

from __future__ import annotations

import json

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

EKS_SERVICE_POLICIES = (
    "AWS managed policies EKS documents for this role (cluster role with Auto Mode: cluster, "
    "compute, block storage, load balancing, networking; node roles: worker node, CNI, ECR "
    "read-only). AWS updates them as the service changes; a hand-written copy would drift."
)

KUBECTL_PROVIDER = (
    "The kubectl provider is aws_eks_v2's own custom-resource Lambda; its execution role "
    "(basic + VPC execution, ECR read-only for chart pulls) is defined by the library."
)

LAMBDA_EXECUTION = (
    "Lambda execution roles: AWSLambdaBasicExecutionRole (its own log streams) and "
    "AWSLambdaVPCAccessExecutionRole (ENIs in the VPC), as the Lambda documentation prescribes."
)


def enable_nag(app: cdk.Stage, system) -> None:
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    acknowledge_findings(system)


def _acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason))


def acknowledge_findings(system) -> None:
    cluster = system.cluster.cluster
    # The cluster role and Auto Mode's node role.
    for policy in (
        "AmazonEKSClusterPolicy",
        "AmazonEKSComputePolicy",
        "AmazonEKSBlockStoragePolicy",
        "AmazonEKSLoadBalancingPolicy",
        "AmazonEKSNetworkingPolicy",
        "AmazonEKSWorkerNodePolicy",
        "AmazonEC2ContainerRegistryReadOnly",
    ):
        _acknowledge(cluster, _managed_policy(policy), EKS_SERVICE_POLICIES)
    if system.cluster.node_groups is not None:
        for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"):
            _acknowledge(system.cluster.node_groups, _managed_policy(policy), EKS_SERVICE_POLICIES)

    provider = cluster.kubectl_provider
    for policy in (
        "AmazonEC2ContainerRegistryReadOnly",
        "service-role/AWSLambdaBasicExecutionRole",
        "service-role/AWSLambdaVPCAccessExecutionRole",
    ):
        _acknowledge(provider, _managed_policy(policy), KUBECTL_PROVIDER)
    _acknowledge(provider, _conditional_ecr_public_policy(provider), KUBECTL_PROVIDER)
    handler = _logical_id(provider.node.find_child("Handler"))
    _acknowledge(
        provider,
        f"AwsSolutions-IAM5[Resource::<{handler}.Arn>:*]",
        "The provider framework may invoke any version of its own handler function "
        "(<handler ARN>:*); the wildcard is limited to that one function.",
    )
    _acknowledge(
        provider,
        "AwsSolutions-L1",
        "The kubectl handler's runtime is set by aws_eks_v2 to match the kubectl layer; "
        "it moves with aws-cdk-lib upgrades.",
    )

    serving = system.serving
    lambda_roles = [serving.readiness.on_event, serving.readiness.is_complete, serving.probe.function]
    for function in lambda_roles:
        for policy in ("service-role/AWSLambdaBasicExecutionRole", "service-role/AWSLambdaVPCAccessExecutionRole"):
            _acknowledge(function, _managed_policy(policy), LAMBDA_EXECUTION)
    provider = serving.readiness.node.find_child("Provider")
    _acknowledge(provider, _managed_policy("service-role/AWSLambdaBasicExecutionRole"), LAMBDA_EXECUTION)
    for function in serving.readiness.node.find_all():
        if isinstance(function, cdk.aws_lambda.CfnFunction):
            _acknowledge(
                provider,
                f"AwsSolutions-IAM5[Resource::<{_logical_id(function)}.Arn>:*]",
                "The custom resource Provider framework invokes any version of the readiness gate's "
                "own functions (<function ARN>:*); the wildcard covers versions, not other functions.",
            )

    _acknowledge(
        provider,
        "AwsSolutions-SF2",
        "The Provider framework's waiter state machine has no X-Ray option; its executions are "
        "logged (level ALL) instead.",
    )
    _acknowledge(
        provider,
        "AwsSolutions-IAM5[Resource::*]",
        "Step Functions log delivery (logs:CreateLogDelivery, PutResourcePolicy and the like) "
        "has no resource-level permissions; CDK grants it for the waiter's execution logs.",
    )
    _acknowledge(
        serving.probe.function,
        "AwsSolutions-IAM5[Resource::*]",
        "cloudwatch:PutMetricData has no resource-level permissions; the statement is limited "
        "to the probe's own metric namespace by a cloudwatch:namespace condition.",
    )

    gcs_store = system.gcs_store
    _acknowledge(
        gcs_store.auth_token,
        "AwsSolutions-SMG4",
        "Rotating the ElastiCache AUTH token needs a coordinated ROTATE/SET on the replication "
        "group and a restart of the Ray head to pick the new password up; rotation is an "
        "operator action, not a schedule.",
    )
    _acknowledge(
        gcs_store.replication_group,
        "AwsSolutions-AEC5",
        "Port 6379 is what Ray and KubeRay document; a non-default port is obscurity, not a "
        "control. Access is limited to the cluster security group, with TLS and AUTH.",
    )


def _managed_policy(name: str) -> str:
    return f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{name}]"


def _logical_id(construct: IConstruct) -> str:
    resource = construct.node.default_child or construct
    return cdk.Stack.of(construct).get_logical_id(resource)


def _conditional_ecr_public_policy(provider: IConstruct) -> str:
    # The handler attaches ECR Public read-only only in partitions that have ECR Public;
    # cdk-nag names the finding by the whole Fn::If.
    condition = next(c for c in provider.node.find_all() if isinstance(c, cdk.CfnCondition))
    arn = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":iam::aws:policy/AmazonElasticContainerRegistryPublicReadOnly"]]}
    finding = {"Fn::If": [_logical_id(condition), arn, {"Ref": "AWS::NoValue"}]}
    return f"AwsSolutions-IAM4[Policy::{json.dumps(finding, separators=(',', ':'))}]"
