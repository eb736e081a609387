"""ClusterStack: the EKS cluster, with what the serving system adds to it (the library's
`ServingAddOns`: accelerator capacity, KubeRay, External Secrets) and, for managed node
groups, the Cluster Autoscaler."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from ray_serve_ha.charts.capacity import ServingCapacity
from ray_serve_ha.constructs.add_ons import ServingAddOns, ServingAddOnsProps
from ray_serve_ha.constructs.operators import ClusterAutoscaler, ClusterAutoscalerProps
from stacks.existing_network import ExistingNetwork
from stacks.settings import ClusterSettings, NetworkSettings, SecretsSettings


class ClusterStack(cdk.Stack):
    """An `aws_eks_v2` cluster with envelope-encrypted secrets, every control-plane log type,
    access entries for the configured admins, accelerator capacity per settings, and the
    KubeRay and External Secrets operators."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_settings: ClusterSettings,
        capacity: ServingCapacity,
        secrets: SecretsSettings,
        vpc: ec2.IVpc | None = None,
        subnets: Sequence[ec2.ISubnet] | None = None,
        existing_network: NetworkSettings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # An existing VPC (instead of vpc and subnets) is looked up in this stack, the first
        # that needs it; the stacks after it share what it found.
        self.existing_network: ExistingNetwork | None = None
        if existing_network is not None:
            self.existing_network = ExistingNetwork(self, "ExistingVpc", settings=existing_network)
            vpc, subnets = self.existing_network.vpc, self.existing_network.private_subnets
        if vpc is None or subnets is None:
            raise ValueError("ClusterStack needs vpc and subnets, or existing_network")
        subnet_selection = ec2.SubnetSelection(subnets=list(subnets))
        secrets_key = kms.Key(
            self,
            "SecretsKey",
            description=f"Envelope encryption of Kubernetes secrets in EKS cluster {cluster_settings.name}",
            enable_key_rotation=True,
        )
        cluster = eks.Cluster(
            self,
            "Cluster",
            cluster_name=cluster_settings.name,
            version=eks.KubernetesVersion.of(cluster_settings.kubernetes_version),
            kubectl_provider_options=eks.KubectlProviderOptions(
                kubectl_layer=kubectl_layer(self, cluster_settings)
            ),
            vpc=vpc,
            vpc_subnets=[subnet_selection],
            endpoint_access=_endpoint_access(cluster_settings.endpoint_public_access_cidrs),
            secrets_encryption_key=secrets_key,
            cluster_logging=[
                eks.ClusterLoggingTypes.API,
                eks.ClusterLoggingTypes.AUDIT,
                eks.ClusterLoggingTypes.AUTHENTICATOR,
                eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
                eks.ClusterLoggingTypes.SCHEDULER,
            ],
            default_capacity_type=(
                eks.DefaultCapacityType.AUTOMODE if capacity.auto_mode else eks.DefaultCapacityType.NODEGROUP
            ),
            # node-groups mode adds its own groups below; no default m5.large group.
            default_capacity=None if capacity.auto_mode else 0,
            compute=(
                eks.ComputeConfig(node_pools=["system", "general-purpose"]) if capacity.auto_mode else None
            ),
        )
        for index, arn in enumerate(cluster_settings.admin_principal_arns):
            cluster.grant_access(
                f"Admin{index}",
                arn,
                [
                    eks.AccessPolicy.from_access_policy_name(
                        "AmazonEKSClusterAdminPolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                    )
                ],
            )
        # aws-cdk-lib's Python `Cluster` implements ICluster through jsii but its class lacks
        # the interface's `kubectl_provider_options` member, so mypy does not match it.
        self.cluster: eks.ICluster = cluster  # type: ignore[assignment]

        add_ons = ServingAddOns(self, ServingAddOnsProps(
            cluster=self.cluster, capacity=capacity, subnets=subnet_selection,
            hugging_face_token_secret_name=secrets.hugging_face_token_secret_name,
        ))
        self.accelerator_pool = add_ons.accelerator_pool
        self.node_groups = add_ons.node_groups
        self.kuberay_operator = add_ons.kuberay_operator
        self.external_secrets = add_ons.external_secrets
        self.observability = add_ons.observability
        self.cluster_autoscaler: ClusterAutoscaler | None = None
        if not capacity.auto_mode:
            # Managed node groups do not follow pending pods: without an autoscaler a
            # NewCluster upgrade's second set of workers (and batch teams' workers) would wait
            # for nodes forever.
            self.cluster_autoscaler = ClusterAutoscaler(self, "ClusterAutoscaler", ClusterAutoscalerProps(
                cluster=self.cluster,
                cluster_name=cluster_settings.name,
                kubernetes_version=cluster_settings.kubernetes_version,
                pod_identity_agent=self.external_secrets.pod_identity_agent,
            ))

    @property
    def cluster_security_group(self) -> ec2.ISecurityGroup:
        """The EKS-created security group on the control plane, Auto Mode and managed nodes."""
        return self.cluster.cluster_security_group


def kubectl_layer(scope: Construct, cluster_settings: ClusterSettings) -> lambda_.ILayerVersion:
    minor = cluster_settings.kubernetes_version.split(".")[1]
    module = importlib.import_module(cluster_settings.kubectl_layer_module)
    layer: lambda_.ILayerVersion = getattr(module, f"KubectlV{minor}Layer")(scope, "KubectlLayer")
    return layer


def _endpoint_access(public_cidrs: tuple[str, ...]) -> eks.EndpointAccess:
    if not public_cidrs:
        return eks.EndpointAccess.PRIVATE
    return eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*public_cidrs)
