"""The Amazon CloudWatch Observability EKS add-on in its OTel Container Insights
configuration, with an EKS Pod Identity role: it scrapes every Ray node's metrics port
(Ray core, Ray Serve, vLLM) from KubeRay clusters and sends the series to CloudWatch, where
PromQL alarms and Query Studio read them.

Sources (AWS CloudWatch docs): "Collecting Ray metrics with OTel Container Insights"
(container-insights-eks-otel-ray: Ray collection is on by default from add-on version 8.0.0
with OTel Container Insights enabled); "Quick start: OTel Container Insights on Amazon EKS"
(the configuration `{"otelContainerInsights": {"enabled": true}}` is required, the add-on
is not in OTel mode by default); "Deploy OTel Container Insights with CloudFormation" (a Pod
Identity role for the `cloudwatch-agent` service account in `amazon-cloudwatch` with the
`CloudWatchAgentServerPolicy` managed policy)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

ADD_ON_NAME = "amazon-cloudwatch-observability"
# The first release that scrapes Ray, Ray Serve and vLLM metrics from KubeRay clusters.
ADD_ON_VERSION = "v8.0.0-eksbuild.1"
NAMESPACE = "amazon-cloudwatch"
SERVICE_ACCOUNT = "cloudwatch-agent"
MANAGED_POLICY = "CloudWatchAgentServerPolicy"
CONFIGURATION = {
    # OTel Container Insights: metrics over OTLP with their source names, queryable in PromQL.
    "otelContainerInsights": {"enabled": True},
}


@dataclass(frozen=True)
class CloudWatchObservabilityProps:
    """cluster: where the add-on runs. pod_identity_agent: the agent's add-on when this app
    adds it (the association waits for it); Auto Mode and an existing cluster run their own."""

    cluster: eks.ICluster
    pod_identity_agent: eks.Addon | None = None


class CloudWatchObservability(Construct):
    """The add-on, pinned, and the role its agent assumes through EKS Pod Identity."""

    def __init__(self, scope: Construct, construct_id: str, props: CloudWatchObservabilityProps) -> None:
        super().__init__(scope, construct_id)
        cluster = props.cluster
        self.role = iam.Role(
            self,
            "Role",
            description="CloudWatch agent of the amazon-cloudwatch-observability add-on: sends the cluster's metrics",
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(MANAGED_POLICY)],
        )
        self.pod_identity = eks.CfnPodIdentityAssociation(
            self,
            "PodIdentity",
            cluster_name=cluster.cluster_name,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            role_arn=self.role.role_arn,
        )
        if props.pod_identity_agent is not None:
            self.pod_identity.node.add_dependency(props.pod_identity_agent)
        self.add_on = eks.Addon(
            self,
            "AddOn",
            cluster=cluster,
            addon_name=ADD_ON_NAME,
            addon_version=ADD_ON_VERSION,
            configuration_values=CONFIGURATION,
        )
        # Pod Identity credentials are injected at pod start: associate before the agent runs.
        self.add_on.node.add_dependency(self.pod_identity)
