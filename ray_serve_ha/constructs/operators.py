"""The operators the serving system runs on a cluster, from pinned Helm charts: KubeRay,
External Secrets (with its Pod Identity role) and, for managed node groups, the Cluster
Autoscaler. The device plugins' charts are accelerator facts, pinned in
ray_serve_ha/charts/accelerators.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.capacity import DEFAULT_CAPACITY_MODE, CapacityMode
from ray_serve_ha.charts.helm import HelmChartRef

KUBERAY_OPERATOR = HelmChartRef(
    repository="https://ray-project.github.io/kuberay-helm/",
    chart="kuberay-operator",
    version="1.7.2",
)
EXTERNAL_SECRETS = HelmChartRef(
    repository="https://charts.external-secrets.io",
    chart="external-secrets",
    version="2.9.0",
)
# node-groups mode only: scales the managed node groups to pending pods (EKS Auto Mode's
# Karpenter does that itself). Chart 9.59.0 ships Cluster Autoscaler 1.35.
CLUSTER_AUTOSCALER = HelmChartRef(
    repository="https://kubernetes.github.io/autoscaler",
    chart="cluster-autoscaler",
    version="9.59.0",
)
# The Cluster Autoscaler minor must match the cluster's Kubernetes minor: the latest patch of
# each (kubernetes/autoscaler tags cluster-autoscaler-1.3x.y, 2026-08).
CLUSTER_AUTOSCALER_IMAGE_TAGS = {
    "1.32": "v1.32.7",
    "1.33": "v1.33.6",
    "1.34": "v1.34.5",
    "1.35": "v1.35.2",
    "1.36": "v1.36.1",
}


def install_chart(
    cluster: eks.ICluster,
    construct_id: str,
    ref: HelmChartRef,
    namespace: str,
    values: dict[str, Any] | None = None,
    wait: bool = False,
    scope: Construct | None = None,
) -> eks.HelmChart:
    """A pinned chart as a Helm release named after the chart, under the cluster (or under
    `scope`, a construct of another stack)."""
    options: dict[str, Any] = dict(
        repository=ref.repository,
        chart=ref.chart,
        # A stable release name: what `helm list -A` shows and upgrades target.
        release=ref.chart,
        version=ref.version,
        namespace=namespace,
        create_namespace=True,
        values=values,
        wait=wait,
    )
    if scope is None:
        return cluster.add_helm_chart(construct_id, **options)
    return eks.HelmChart(scope, construct_id, cluster=cluster, **options)


def install_kuberay_operator(cluster: eks.ICluster) -> eks.HelmChart:
    """The KubeRay operator, waited for: the RayService needs it running."""
    return install_chart(cluster, "KubeRayOperator", KUBERAY_OPERATOR, constants.KUBERAY_NAMESPACE, wait=True)


@dataclass(frozen=True)
class ExternalSecretsOperatorProps:
    """cluster: where it runs. capacity_mode: Auto Mode runs the EKS Pod Identity agent itself.
    pod_identity_agent: add the agent's add-on (None: where the nodes are managed node groups;
    False for an imported cluster, which brings its own: a second add-on would fail)."""

    cluster: eks.ICluster
    capacity_mode: CapacityMode = DEFAULT_CAPACITY_MODE
    pod_identity_agent: bool | None = None


class ExternalSecretsOperator(Construct):
    """External Secrets Operator with an EKS Pod Identity role that starts with no
    permissions: each secret the project syncs is granted to `role` where it is defined."""

    def __init__(self, scope: Construct, construct_id: str, props: ExternalSecretsOperatorProps) -> None:
        super().__init__(scope, construct_id)
        cluster, pod_identity_agent = props.cluster, props.pod_identity_agent
        self.role = iam.Role(
            self,
            "Role",
            description="External Secrets Operator: reads this project's secrets only",
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
        )
        association = eks.CfnPodIdentityAssociation(
            self,
            "PodIdentity",
            cluster_name=cluster.cluster_name,
            namespace=constants.EXTERNAL_SECRETS_NAMESPACE,
            service_account=constants.EXTERNAL_SECRETS_SERVICE_ACCOUNT,
            role_arn=self.role.role_arn,
        )
        self.pod_identity_agent: eks.Addon | None = None
        if pod_identity_agent is None:
            pod_identity_agent = props.capacity_mode != CapacityMode.AUTO_MODE
        if pod_identity_agent:
            # Auto Mode runs the Pod Identity agent itself; managed node groups need the add-on.
            self.pod_identity_agent = eks.Addon(
                self, "PodIdentityAgent", cluster=cluster, addon_name="eks-pod-identity-agent"
            )
            association.node.add_dependency(self.pod_identity_agent)
        self.chart = install_chart(
            cluster,
            "ExternalSecretsOperator",
            EXTERNAL_SECRETS,
            constants.EXTERNAL_SECRETS_NAMESPACE,
            values={"serviceAccount": {"name": constants.EXTERNAL_SECRETS_SERVICE_ACCOUNT}},
            # Its admission webhook must answer before the serving stack creates ExternalSecrets.
            wait=True,
        )
        # Pod Identity credentials are injected at pod start: associate before the pods exist.
        self.chart.node.add_dependency(association)


@dataclass(frozen=True)
class ClusterAutoscalerProps:
    """cluster, cluster_name, kubernetes_version: the cluster (the image follows its minor).
    pod_identity_agent: the agent's add-on, when this app adds it (associated after it)."""

    cluster: eks.ICluster
    cluster_name: str
    kubernetes_version: str
    pod_identity_agent: eks.Addon | None = None


class ClusterAutoscaler(Construct):
    """The Cluster Autoscaler (pinned chart, image matching the cluster's minor) for managed
    node groups, found by the tags EKS puts on their Auto Scaling groups, with an EKS Pod
    Identity role that may resize only this cluster's groups."""

    def __init__(self, scope: Construct, construct_id: str, props: ClusterAutoscalerProps):
        super().__init__(scope, construct_id)
        cluster, pod_identity_agent = props.cluster, props.pod_identity_agent
        name = self.cluster_name = props.cluster_name
        self.role = iam.Role(
            self,
            "Role",
            description=f"Cluster Autoscaler of EKS cluster {name}: resizes its managed node groups",
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
        )
        # Reads have no resource-level permissions (AWS documents "*" for them).
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                ],
                resources=["*"],
            )
        )
        # Labels and taints of a group scaled to zero, from its managed node group.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["eks:DescribeNodegroup"],
                resources=[
                    cdk.Stack.of(self).format_arn(
                        service="eks", resource="nodegroup", resource_name=f"{name}/*",
                    )
                ],
            )
        )
        # Changes only to groups EKS tagged as this cluster's.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                resources=["*"],
                conditions={"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{name}": "owned"}},
            )
        )
        association = eks.CfnPodIdentityAssociation(
            self,
            "PodIdentity",
            cluster_name=cluster.cluster_name,
            namespace=constants.CLUSTER_AUTOSCALER_NAMESPACE,
            service_account=constants.CLUSTER_AUTOSCALER_SERVICE_ACCOUNT,
            role_arn=self.role.role_arn,
        )
        if pod_identity_agent is not None:
            association.node.add_dependency(pod_identity_agent)
        self.chart = install_chart(
            cluster,
            "ClusterAutoscaler",
            CLUSTER_AUTOSCALER,
            constants.CLUSTER_AUTOSCALER_NAMESPACE,
            values=cluster_autoscaler_values(name, props.kubernetes_version, cdk.Stack.of(self).region),
        )
        # Pod Identity credentials are injected at pod start: associate before the pod exists.
        self.chart.node.add_dependency(association)


def cluster_autoscaler_values(cluster_name: str, kubernetes_version: str, region: str) -> dict[str, Any]:
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        # Finds the groups tagged k8s.io/cluster-autoscaler/enabled and
        # k8s.io/cluster-autoscaler/<cluster> (EKS tags every managed node group so).
        "autoDiscovery": {"clusterName": cluster_name},
        "image": {"tag": CLUSTER_AUTOSCALER_IMAGE_TAGS[kubernetes_version]},
        "rbac": {"serviceAccount": {"name": constants.CLUSTER_AUTOSCALER_SERVICE_ACCOUNT}},
        # On the system nodes, never on the accelerator or team nodes it scales.
        "nodeSelector": {constants.NODE_ROLE_LABEL: constants.SYSTEM_NODE_ROLE},
        "extraArgs": {
            # Several accelerator instance types: add the node that wastes least.
            "expander": "least-waste",
            # Replicas spread over zones: keep same-shaped groups balanced.
            "balance-similar-node-groups": "true",
        },
    }
