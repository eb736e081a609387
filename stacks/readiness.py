"""The readiness gate: `cdk deploy` returns only once the RayService reports Ready=True, or
fails with its conditions and recent events when it does not become Ready in time."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import custom_resources as cr
from constructs import Construct

from charts.rbac import RAYSERVICE_READERS_GROUP, rayservice_reader_rbac

HANDLER_DIR = Path(__file__).resolve().parent.parent / "lambda" / "rayservice_ready"
# The handlers use only the standard library and the runtime's boto3: no bundling, no Docker.
RUNTIME = lambda_.Runtime.PYTHON_3_14
POLL_INTERVAL = cdk.Duration.seconds(30)


class RayServiceReadiness(Construct):
    """A custom resource (Provider framework, onEvent + isComplete) that polls the
    RayService through the Kubernetes API with an EKS token. Its role gets a view access
    entry scoped to the serving namespace, nothing more."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        namespace: str,
        rayservice_name: str,
        timeout: cdk.Duration,
        vpc: ec2.IVpc,
        subnets: list[ec2.ISubnet],
        security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        common = dict(
            runtime=RUNTIME,
            code=lambda_.Code.from_asset(str(HANDLER_DIR), exclude=["__pycache__"]),
            # A private API endpoint is reachable from the VPC only: run in it, in the
            # cluster security group (which admits its own members on 443).
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnets=subnets),
            security_groups=[security_group],
            timeout=cdk.Duration.seconds(60),
            memory_size=256,
        )
        self.on_event = lambda_.Function(
            self, "OnEvent", handler="index.on_event",
            description="RayService readiness gate: records when the wait started",
            log_group=_log_group(self, "OnEventLogs"), **common,
        )
        self.is_complete = lambda_.Function(
            self, "IsComplete", handler="index.is_complete",
            description="RayService readiness gate: Ready=True yet?",
            log_group=_log_group(self, "IsCompleteLogs"), **common,
        )
        # EKS's view policy covers built-in kinds only; the Kubernetes group gets a Role
        # that may read RayServices and their events in this namespace (charts/rbac.py).
        self.access = eks.CfnAccessEntry(
            self,
            "ViewAccess",
            cluster_name=cluster.cluster_name,
            principal_arn=self.is_complete.role.role_arn,
            type="STANDARD",
            kubernetes_groups=[RAYSERVICE_READERS_GROUP],
            access_policies=[
                eks.CfnAccessEntry.AccessPolicyProperty(
                    policy_arn=f"arn:{cdk.Aws.PARTITION}:eks::aws:cluster-access-policy/AmazonEKSViewPolicy",
                    access_scope=eks.CfnAccessEntry.AccessScopeProperty(type="namespace", namespaces=[namespace]),
                )
            ],
        )
        self.rbac = eks.KubernetesManifest(
            self, "Rbac", cluster=cluster, manifest=rayservice_reader_rbac(namespace)
        )
        provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=self.on_event,
            is_complete_handler=self.is_complete,
            query_interval=POLL_INTERVAL,
            total_timeout=timeout,
            # Every poll of a slow first start shows up in the waiter's execution history.
            disable_waiter_state_machine_logging=False,
            waiter_state_machine_log_options=cr.LogOptions(
                destination=_log_group(self, "WaiterLogs"), level=sfn.LogLevel.ALL, include_execution_data=False
            ),
        )
        self.resource = cdk.CustomResource(
            self,
            "Resource",
            service_token=provider.service_token,
            resource_type="Custom::RayServiceReady",
            properties={
                "ClusterName": cluster.cluster_name,
                "Endpoint": cluster.cluster_endpoint,
                "CertificateAuthority": cluster.cluster_certificate_authority_data,
                "Namespace": namespace,
                "RayServiceName": rayservice_name,
                # Short of the Provider's own timeout, so the handler's message (conditions
                # and events) is what CloudFormation shows, not a generic time-out.
                "TimeoutSeconds": str(int(timeout.to_seconds() - 2 * POLL_INTERVAL.to_seconds())),
            },
        )
        # The handler must be allowed in before it asks.
        self.resource.node.add_dependency(self.access, self.rbac)


def _log_group(scope: Construct, construct_id: str) -> logs.LogGroup:
    return logs.LogGroup(
        scope, construct_id, retention=logs.RetentionDays.ONE_MONTH, removal_policy=cdk.RemovalPolicy.DESTROY
    )
