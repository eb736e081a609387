"""What the serving system adds to an EKS cluster, created by this app or imported: the
accelerator capacity, the KubeRay operator, External Secrets with read access to the
Hugging Face token, and the CloudWatch Observability add-on that collects Ray Serve's metrics.
`FaultTolerantRayService` needs the first three on its cluster."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from ray_serve_ha.charts.capacity import ServingCapacity
from ray_serve_ha.charts.models import DEFAULT_HUGGING_FACE_TOKEN_SECRET
from ray_serve_ha.constructs.capacity import AutoModeAcceleratorPool, CapacityProps, NodeGroupCapacity
from ray_serve_ha.constructs.observability import CloudWatchObservability, CloudWatchObservabilityProps
from ray_serve_ha.constructs.operators import (
    ExternalSecretsOperator,
    ExternalSecretsOperatorProps,
    install_kuberay_operator,
)


@dataclass(frozen=True)
class ServingAddOnsProps:
    """cluster: the cluster, with a kubectl provider. capacity: what the workers and heads run
    on. subnets: the nodes' private subnets. hugging_face_token_secret_name: an existing
    Secrets Manager secret External Secrets may read. pod_identity_agent: whether to add the
    EKS Pod Identity agent's add-on (None: where the nodes are managed node groups; False for
    a cluster that runs its own). cloudwatch_observability: whether to add the CloudWatch
    Observability add-on (False for a cluster that runs its own: a second would fail)."""

    cluster: eks.ICluster
    capacity: ServingCapacity
    subnets: ec2.SubnetSelection
    hugging_face_token_secret_name: str = DEFAULT_HUGGING_FACE_TOKEN_SECRET
    pod_identity_agent: bool | None = None
    cloudwatch_observability: bool = True


class ServingAddOns:
    """The accelerator capacity (Auto Mode NodePools or managed node groups), the KubeRay
    operator (waited for: the RayService needs it running), External Secrets and the
    CloudWatch Observability add-on (Serve's metrics in CloudWatch). Not a
    construct of its own: each part keeps its id directly in `scope` (a stack), where the
    project's cluster stacks have always had them."""

    def __init__(self, scope: Construct, props: ServingAddOnsProps) -> None:
        cluster, capacity = props.cluster, props.capacity
        where = CapacityProps(cluster=cluster, capacity=capacity, subnets=props.subnets)
        self.accelerator_pool: AutoModeAcceleratorPool | None = None
        self.node_groups: NodeGroupCapacity | None = None
        if capacity.auto_mode:
            self.accelerator_pool = AutoModeAcceleratorPool(scope, "AcceleratorPool", where)
        else:
            self.node_groups = NodeGroupCapacity(scope, "NodeGroups", where)
        self.kuberay_operator = install_kuberay_operator(cluster)
        self.external_secrets = ExternalSecretsOperator(scope, "ExternalSecrets", ExternalSecretsOperatorProps(
            cluster=cluster, capacity_mode=capacity.mode, pod_identity_agent=props.pod_identity_agent,
        ))
        hugging_face_token = secretsmanager.Secret.from_secret_name_v2(
            scope, "HuggingFaceToken", props.hugging_face_token_secret_name
        )
        hugging_face_token.grant_read(self.external_secrets.role)
        self.observability: CloudWatchObservability | None = None
        if props.cloudwatch_observability:
            self.observability = CloudWatchObservability(scope, "CloudWatchObservability", CloudWatchObservabilityProps(
                cluster=cluster, pod_identity_agent=self.external_secrets.pod_identity_agent,
            ))
