"""cdk-nag AwsSolutions checks over the whole app, and every acknowledged finding with its
reason, in one place. An unacknowledged finding fails synth."""

from __future__ import annotations

import json
from typing import cast

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

from ray_serve_ha.constructs.artifact_cache import ARTIFACTS_PREFIX
from stacks.pipeline import PipelineStack
from stacks.serving_system import ServingSystem

EKS_SERVICE_POLICIES = (
    "AWS managed policies EKS documents for this role (cluster role with Auto Mode: cluster, "
    "compute, block storage, load balancing, networking; node roles: worker node, CNI, ECR "
    "read-only). AWS updates them as the service changes; a hand-written copy would drift."
)

# Action wildcards of CDK's own grant helpers (bucket read/write, KMS key use).
CDK_GRANT_ACTIONS = (
    "Action::kms:GenerateDataKey*",
    "Action::kms:ReEncrypt*",
    "Action::s3:GetBucket*",
    "Action::s3:GetObject*",
    "Action::s3:List*",
)

KUBECTL_PROVIDER = (
    "The kubectl provider is aws_eks_v2's own custom-resource Lambda; its execution role "
    "(basic + VPC execution, ECR read-only for chart pulls) is defined by the library."
)

VPC_CIDR_INGRESS = (
    "The VPC interface endpoints admit HTTPS from the VPC's own CIDR block only; for a VPC this app creates, "
    "the block is a deploy-time attribute the rule cannot read."
)
LAMBDA_EXECUTION = (
    "Lambda execution roles: AWSLambdaBasicExecutionRole (its own log streams) and "
    "AWSLambdaVPCAccessExecutionRole (ENIs in the VPC), as the Lambda documentation prescribes."
)


def enable_nag(app: cdk.Stage, system: ServingSystem, pipeline: PipelineStack | None = None) -> None:
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    acknowledge_findings(system)
    if pipeline is not None:
        acknowledge_pipeline_findings(pipeline)


def _acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=f"AwsSolutions::{rule}", reason=reason))


def acknowledge_findings(system: ServingSystem) -> None:
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
    existing_network = getattr(system.cluster, "existing_network", None)
    for endpoints in (system.network.endpoints if system.network else None,
                      existing_network.endpoints if existing_network else None):
        if endpoints is not None and endpoints.interfaces:
            _acknowledge(endpoints, "AwsSolutions-EC23", VPC_CIDR_INGRESS)
    # The node role of the Auto Mode NodeClasses: what EKS documents for Auto Mode nodes.
    if system.cluster.accelerator_pool is not None:
        for policy in ("AmazonEKSWorkerNodeMinimalPolicy", "AmazonEC2ContainerRegistryPullOnly"):
            _acknowledge(system.cluster.accelerator_pool.node_role, _managed_policy(policy), EKS_SERVICE_POLICIES)
    node_group_scopes = [system.cluster.node_groups, *(system.batch.node_groups.values() if system.batch else [])]
    for scope in filter(None, node_group_scopes):
        for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"):
            _acknowledge(scope, _managed_policy(policy), EKS_SERVICE_POLICIES)

    provider = cluster.kubectl_provider
    # The cluster is made with kubectl provider options (stacks/cluster.py), so it has one.
    assert provider is not None
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
    # The dashboard's graphs run outside the VPC (they call CloudWatch's public endpoint).
    _acknowledge(serving.serve_graphs.function, _managed_policy("service-role/AWSLambdaBasicExecutionRole"),
                 LAMBDA_EXECUTION)
    gate_provider = serving.readiness.node.find_child("Provider")
    _acknowledge(gate_provider, _managed_policy("service-role/AWSLambdaBasicExecutionRole"), LAMBDA_EXECUTION)
    for child in serving.readiness.node.find_all():
        if isinstance(child, cdk.aws_lambda.CfnFunction):
            _acknowledge(
                gate_provider,
                f"AwsSolutions-IAM5[Resource::<{_logical_id(child)}.Arn>:*]",
                "The custom resource Provider framework invokes any version of the readiness gate's "
                "own functions (<function ARN>:*); the wildcard covers versions, not other functions.",
            )

    _acknowledge(
        gate_provider,
        "AwsSolutions-SF2",
        "The Provider framework's waiter state machine has no X-Ray option; its executions are "
        "logged (level ALL) instead.",
    )
    _acknowledge(
        gate_provider,
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

    _acknowledge(
        serving.serve_graphs.function,
        "AwsSolutions-IAM5[Resource::*]",
        "The dashboard's PromQL graphs call CloudWatch's QueryMetrics, which requires "
        "cloudwatch:GetMetricData and cloudwatch:ListMetrics; neither action has resource-level "
        "permissions, and the role holds nothing else.",
    )

    cache = serving.artifact_cache
    if cache is not None:
        _acknowledge(
            cache.role,
            f"AwsSolutions-IAM5[Resource::<{_logical_id(cache.bucket)}.Arn>/{ARTIFACTS_PREFIX}/*]",
            "The Ray workers read and publish compiled artifacts under their prefix; object names "
            "(one folder per compiled configuration) are made by the engine at run time.",
        )
        _acknowledge(
            cache.bucket,
            "AwsSolutions-S1",
            "A cache of derived, re-creatable compiler output, read and written by one Pod "
            "Identity role; its API calls are recorded by CloudTrail (object-level data events "
            "where the account enables them). Access logs would cost more than the data.",
        )

    _acknowledge(
        serving.api_keys,
        "AwsSolutions-SMG4",
        "API keys are added and revoked by editing the keys secret's JSON (the Serve replicas reread "
        "it within a minute); a scheduled rotation would cut off every client holding a key. The "
        "generated seeds are read only to add a consumer's missing entry.",
    )
    keys = serving.api_keys
    for scope in (keys.add_missing, keys.provider):
        _acknowledge(scope, _managed_policy("service-role/AWSLambdaBasicExecutionRole"), LAMBDA_EXECUTION)
    _acknowledge(
        keys.provider,
        f"AwsSolutions-IAM5[Resource::<{_logical_id(keys.add_missing)}.Arn>:*]",
        "The custom resource Provider framework invokes any version of the API keys' own function "
        "(<function ARN>:*); the wildcard covers versions, not other functions.",
    )

    drill = serving.ha_drill
    project = _logical_id(drill.project)
    partition, region, account = _environment(drill)
    for finding in (
        *CDK_GRANT_ACTIONS,
        f"Resource::arn:{partition}:s3:::cdk-hnb659fds-assets-{account}-{region}/*",
        f"Resource::arn:{partition}:codebuild:{region}:{account}:report-group/<{project}>-*",
        f"Resource::arn:{partition}:logs:{region}:{account}:log-group:/aws/codebuild/<{project}>:*",
    ):
        _acknowledge(
            drill,
            f"AwsSolutions-IAM5[{finding}]",
            "CDK's grants to the HA drill's CodeBuild role: read of its source asset, its own "
            "KMS key, log group and report groups; each wildcard is bounded by that resource.",
        )
    for finding in (
        "Resource::*",
        # CDK writes this ARN with pseudo parameters even in an environment-aware stack.
        "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*",
    ):
        _acknowledge(
            drill,
            f"AwsSolutions-IAM5[{finding}]",
            "CodeBuild in a VPC manages its ENIs (ec2:CreateNetworkInterface, Describe*), which "
            "have no resource-level permissions before the interface exists.",
        )

    autoscaler = system.cluster.cluster_autoscaler
    if autoscaler is not None:
        _acknowledge(
            autoscaler.role,
            "AwsSolutions-IAM5[Resource::*]",
            "Cluster Autoscaler: the Auto Scaling and EC2 Describe* reads have no resource-level "
            "permissions; SetDesiredCapacity and TerminateInstanceInAutoScalingGroup are limited "
            "to groups tagged k8s.io/cluster-autoscaler/<cluster>=owned by a condition.",
        )
        partition, region, account = _environment(autoscaler)
        _acknowledge(
            autoscaler.role,
            f"AwsSolutions-IAM5[Resource::arn:{partition}:eks:{region}:{account}:nodegroup/{autoscaler.cluster_name}/*]",
            "Cluster Autoscaler reads the labels and taints of this cluster's managed node groups "
            "(eks:DescribeNodegroup), whose names and ids are generated.",
        )

    observability = system.cluster.observability
    if observability is not None:
        _acknowledge(
            observability.role,
            _managed_policy("CloudWatchAgentServerPolicy"),
            "The CloudWatch agent of the amazon-cloudwatch-observability add-on: the managed policy AWS's "
            "CloudWatch docs prescribe for it, which AWS updates as the agent changes.",
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


def _environment(scope: IConstruct) -> tuple[str, str, str]:
    """Partition, region and account as cdk-nag writes them in finding ids: each literal
    where the stack knows it (a region alone also fixes the partition), an <AWS::…>
    placeholder where it does not."""
    stack = cdk.Stack.of(scope)

    def shown(value: str, pseudo: str) -> str:
        return f"<AWS::{pseudo}>" if cdk.Token.is_unresolved(value) else value

    return shown(stack.partition, "Partition"), shown(stack.region, "Region"), shown(stack.account, "AccountId")


def _managed_policy(name: str) -> str:
    return f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{name}]"


def _logical_id(construct: IConstruct) -> str:
    # An L2 construct's default child is its CfnResource; the others passed here (a
    # CfnCondition, a CfnProject) are CloudFormation elements themselves.
    resource = cast(cdk.CfnElement, construct.node.default_child or construct)
    return cdk.Stack.of(construct).get_logical_id(resource)


def _conditional_ecr_public_policy(provider: IConstruct) -> str:
    # The handler attaches ECR Public read-only only in partitions that have ECR Public;
    # cdk-nag names the finding by the whole Fn::If.
    condition = next(c for c in provider.node.find_all() if isinstance(c, cdk.CfnCondition))
    arn = {
        "Fn::Join": [
            "",
            ["arn:", {"Ref": "AWS::Partition"}, ":iam::aws:policy/AmazonElasticContainerRegistryPublicReadOnly"],
        ]
    }
    finding = {"Fn::If": [_logical_id(condition), arn, {"Ref": "AWS::NoValue"}]}
    return f"AwsSolutions-IAM4[Policy::{json.dumps(finding, separators=(',', ':'))}]"


def acknowledge_pipeline_findings(pipeline_stack: PipelineStack) -> None:
    """Findings on what CDK Pipelines builds for itself: its roles, artifact bucket and
    CodeBuild projects (synth, self-mutation, asset publishing, the drill trigger)."""
    partition, region, account = _environment(pipeline_stack)
    reason = (
        "CDK Pipelines' own grants: artifact bucket and KMS key use, its CodeBuild projects' "
        "logs and reports, and assuming the CDK bootstrap roles (cdk-*) to deploy and publish."
    )
    codepipeline = pipeline_stack.pipeline.pipeline
    findings = [
        *CDK_GRANT_ACTIONS,
        "Action::s3:Abort*",
        "Action::s3:DeleteObject*",
        "Resource::*",
        f"Resource::<{_logical_id(codepipeline.artifact_bucket)}.Arn>/*",
        f"Resource::arn:*:iam::{account}:role/*",
        f"Resource::arn:{partition}:codebuild:{region}:{account}:report-group/*",
        f"Resource::arn:{partition}:logs:{region}:{account}:log-group:/aws/codebuild/*",
    ]
    for project in pipeline_stack.node.find_all():
        if isinstance(project, cdk.aws_codebuild.CfnProject):
            name = _logical_id(project)
            findings += [
                f"Resource::arn:{partition}:codebuild:{region}:{account}:report-group/<{name}>-*",
                f"Resource::arn:{partition}:logs:{region}:{account}:log-group:/aws/codebuild/<{name}>:*",
            ]
    for finding in findings:
        _acknowledge(pipeline_stack, f"AwsSolutions-IAM5[{finding}]", reason)
    _acknowledge(
        codepipeline.artifact_bucket,
        "AwsSolutions-S1",
        "The pipeline's artifact bucket is private, encrypted with the pipeline's KMS key and "
        "only written by the pipeline; its access is recorded by CloudTrail.",
    )
