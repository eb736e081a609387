"""ExistingClusterStack: an EKS cluster the user already runs, imported (`aws_eks_v2`), with
what the serving system needs added to it, in place of the cluster stack.

Supported: the Kubernetes minors the settings allow (`kubernetesVersion`, which must be the
cluster's version: the kubectl layer follows it) and both capacity modes, as the cluster
runs them: `auto-mode` (Auto Mode enabled on the cluster; the accelerator NodePool is
added) and `node-groups` (managed node groups and the device plugin are added; the cluster
must already run the eks-pod-identity-agent add-on and the autoscaler it scales its node
groups with: a second Cluster Autoscaler would fight the first, so none is added). Ray
Serve's metrics reach CloudWatch where the cluster runs the amazon-cloudwatch-observability
add-on (≥ 8.0.0, OTel Container Insights) itself: it is not added (a second would fail). Not touched: the cluster's own
configuration (version, endpoint access, logging, encryption, access entries).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from ray_serve_ha.charts.capacity import ServingCapacity
from ray_serve_ha.constructs.add_ons import ServingAddOns, ServingAddOnsProps
from ray_serve_ha.constructs.operators import ClusterAutoscaler
from stacks.cluster import ClusterStack, kubectl_layer
from stacks.existing_network import ExistingNetwork
from stacks.settings import (
    ClusterSettings,
    ExistingClusterSettings,
    NetworkSettings,
    SecretsSettings,
)


class ExistingClusterStack(cdk.Stack):
    """The imported cluster (`cluster`), a kubectl provider of this stack with a cluster-admin
    access entry, the accelerator capacity, and the KubeRay and External Secrets operators:
    the same attributes as `ClusterStack`, so the stacks after it do not tell them apart."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        existing: ExistingClusterSettings,
        cluster_settings: ClusterSettings,
        capacity: ServingCapacity,
        secrets: SecretsSettings,
        existing_network: NetworkSettings,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.existing_network = ExistingNetwork(self, "ExistingVpc", settings=existing_network)
        subnets = self.existing_network.private_subnets

        def imported(construct_id: str, provider: eks.IKubectlProvider | None = None) -> eks.ICluster:
            return eks.Cluster.from_cluster_attributes(
                self,
                construct_id,
                cluster_name=existing.name,
                vpc=self.existing_network.vpc,
                cluster_security_group_id=existing.security_group_id,
                cluster_endpoint=existing.endpoint,
                cluster_certificate_authority_data=existing.certificate_authority_data,
                kubectl_provider=provider,
            )

        # The provider is built against the cluster, and the cluster is then imported with it.
        # In the private subnets with the cluster security group: a private endpoint answers
        # from the VPC only.
        self.kubectl_provider = eks.KubectlProvider(
            self,
            "KubectlProvider",
            cluster=imported("ClusterForProvider"),
            kubectl_layer=kubectl_layer(self, cluster_settings),
            private_subnets=subnets,
        )
        self.cluster = imported("Cluster", self.kubectl_provider)
        assert self.kubectl_provider.role is not None  # the provider makes its own role
        # Helm and manifests run as the provider's role: it needs the cluster (API mode access entries).
        self.kubectl_access = eks.AccessEntry(
            self,
            "KubectlProviderAccess",
            cluster=self.cluster,
            principal=self.kubectl_provider.role.role_arn,
            access_policies=[
                eks.AccessPolicy.from_access_policy_name(
                    "AmazonEKSClusterAdminPolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                )
            ],
        )
        # No Pod Identity add-on: the imported cluster runs its own agent (see the docstring).
        add_ons = ServingAddOns(self, ServingAddOnsProps(
            cluster=self.cluster, capacity=capacity, subnets=ec2.SubnetSelection(subnets=list(subnets)),
            hugging_face_token_secret_name=secrets.hugging_face_token_secret_name, pod_identity_agent=False,
            cloudwatch_observability=False,
        ))
        self.accelerator_pool = add_ons.accelerator_pool
        self.node_groups = add_ons.node_groups
        self.kuberay_operator = add_ons.kuberay_operator
        self.external_secrets = add_ons.external_secrets
        self.observability = add_ons.observability
        # The cluster's own autoscaler resizes the added node group (see the module docstring).
        self.cluster_autoscaler: ClusterAutoscaler | None = None
        # Every chart and manifest applied through the provider (all under the imported
        # cluster) waits for its access entry, and goes before it on delete.
        self.cluster.node.add_dependency(self.kubectl_access)

    @property
    def cluster_security_group(self) -> ec2.ISecurityGroup:
        """The cluster security group EKS created, as the settings name it."""
        return self.cluster.cluster_security_group


# What the stacks after the cluster take: the cluster stack, or an imported cluster's.
AnyClusterStack = ClusterStack | ExistingClusterStack
