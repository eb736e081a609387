"""The stacks of one serving system, wired in data-flow order:
settings -> network -> cluster -> GCS store -> serving."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from constructs import Construct

from stacks.batch import BatchStack
from stacks.cluster import ClusterStack
from stacks.existing_cluster import ExistingClusterStack
from stacks.existing_network import Network
from stacks.gcs_store import GcsStoreStack
from stacks.network import NetworkStack
from stacks.serving import ServingStack
from stacks.settings import Settings


@dataclass(frozen=True)
class ServingSystem:
    # None with an existing VPC (settings vpcId): the cluster stack looks it up.
    network: NetworkStack | None
    cluster: ClusterStack | ExistingClusterStack
    gcs_store: GcsStoreStack
    serving: ServingStack
    # Per-team batch Ray clusters, when the settings name teams.
    batch: BatchStack | None = None

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [s for s in (self.network, self.cluster, self.gcs_store, self.serving, self.batch) if s]


def add_serving_system(scope: Construct, settings: Settings) -> ServingSystem:
    """Adds the system's stacks to `scope`: the App itself (so `cdk deploy --all` selects
    them) or a `ServingStage` of a pipeline."""
    env = None
    if settings.environment.account or settings.environment.region:
        env = cdk.Environment(account=settings.environment.account, region=settings.environment.region)
    name = settings.cluster.name
    network_stack: NetworkStack | None = None
    if settings.network.vpc_id is None:
        network_stack = NetworkStack(
            scope, f"{name}-network", cluster_name=name, endpoints=settings.network.endpoints, env=env,
            description="Ray Serve HA on EKS: VPC over three AZs",
        )
    cluster: ClusterStack | ExistingClusterStack
    if settings.existing_cluster is not None:
        cluster = ExistingClusterStack(
            scope,
            f"{name}-cluster",
            existing=settings.existing_cluster,
            cluster_settings=settings.cluster,
            capacity=settings.capacity,
            secrets=settings.secrets,
            existing_network=settings.network,
            env=env,
            description="Ray Serve HA on EKS: an existing EKS cluster with accelerator capacity, KubeRay and "
            "External Secrets added",
        )
    else:
        cluster = ClusterStack(
            scope,
            f"{name}-cluster",
            cluster_settings=settings.cluster,
            capacity=settings.capacity,
            secrets=settings.secrets,
            vpc=network_stack.vpc if network_stack else None,
            subnets=network_stack.private_subnets if network_stack else None,
            existing_network=None if network_stack else settings.network,
            env=env,
            description="Ray Serve HA on EKS: EKS cluster, accelerator capacity, KubeRay and External Secrets",
        )
    network: Network = network_stack or cluster.existing_network  # type: ignore[assignment]
    if network_stack is None:
        # eks_v2 tags the subnets of a VPC it is given for the load balancer controller, but
        # cannot tag those of a looked-up VPC: the owner tags them (docs/operating.md, "Bring your own").
        cdk.Annotations.of(cluster.cluster).acknowledge_warning(
            "@aws-cdk/aws-eks:clusterMustManuallyTagSubnet",
            "an existing VPC's subnets carry their kubernetes.io/role/(internal-)elb tags already",
        )
    gcs_store = GcsStoreStack(
        scope,
        f"{name}-gcs-store",
        settings=settings.gcs_store,
        vpc=network.vpc,
        subnets=network.private_subnets,
        cluster_security_group=cluster.cluster_security_group,
        secret_readers=[cluster.external_secrets.role],
        env=env,
        description="Ray Serve HA on EKS: ElastiCache store for Ray GCS fault tolerance",
    )
    serving = ServingStack(
        scope,
        f"{name}-serving",
        settings=settings,
        network=network,
        cluster=cluster,
        gcs_store=gcs_store,
        env=env,
        description="Ray Serve HA on EKS: fault-tolerant RayService, secrets and the Gradio UI",
    )
    batch = None
    if settings.batch_teams:
        batch = BatchStack(
            scope,
            f"{name}-batch",
            teams=settings.batch_teams,
            capacity=settings.capacity,
            cluster=cluster,
            subnets=network.private_subnets,
            env=env,
            description="Ray on EKS batch: a Ray cluster per team and the benchmark RayJobs",
        )
    return ServingSystem(network=network_stack, cluster=cluster, gcs_store=gcs_store, serving=serving, batch=batch)


class ServingStage(cdk.Stage):
    """The serving system as a deployable unit of a CDK Pipeline."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.system = add_serving_system(self, settings)
