"""The fault-tolerant RayService on a given EKS cluster: the project's charts (namespace,
synced secrets, RayService, Gradio UI) applied in order, and the readiness gate that makes
`cdk deploy` wait for a Ready RayService and `cdk destroy` for its clean removal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct, IConstruct

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.profiles import EksCharts, EksDeployment, eks_charts
from ray_serve_ha.charts.serve_config import COMPILED_ARTIFACT_ENGINES
from ray_serve_ha.charts.serve_service import serve_service_name
from ray_serve_ha.constructs.api_keys import READINESS_GATE, ApiKeys
from ray_serve_ha.constructs.artifact_cache import CompiledArtifactCache, CompiledArtifactCacheProps
from ray_serve_ha.constructs.helper_access import HelperReach, HelperSecurityGroup, HelperSecurityGroupProps
from ray_serve_ha.constructs.kuberay_validation import add_kuberay_rules
from ray_serve_ha.constructs.readiness import RayServiceReadiness, RayServiceReadinessProps, default_readiness_timeout


@dataclass(frozen=True)
class FaultTolerantRayServiceProps:
    """What the RayService needs of its cluster and its GCS store.

    cluster: an `aws_eks_v2` cluster with a kubectl provider, created or imported; KubeRay
    and External Secrets must run on it.
    deployment: the charts' inputs (ray_serve_ha/charts/profiles.py): accelerator and instance types,
    the GCS store's endpoint, port and AUTH token secret, images, worker counts, model.
    vpc, subnets, cluster_security_group: where the readiness gate runs (the cluster's
    private subnets) and the group that fronts the cluster's API endpoint.
    operators: what the RayService is created after and deleted before (the KubeRay and
    External Secrets releases): the operator's finalizer cleans the GCS keys from Redis.
    secrets_operator: what the synced secrets need first (External Secrets' webhook).
    readiness_timeout: how long a deploy waits for Ready (at most 55 minutes).
    api_keys: the API keys (`ApiKeys`): the Serve pods get them (give them here, not as
    `deployment.api_keys_secret`), and the readiness gate proves with its own entry
    (`readiness_api_key_name`) that the API answers. None: an open API.
    """

    cluster: eks.ICluster
    deployment: EksDeployment
    vpc: ec2.IVpc
    subnets: Sequence[ec2.ISubnet]
    cluster_security_group: ec2.ISecurityGroup
    operators: Sequence[IConstruct] = ()
    secrets_operator: IConstruct | None = None
    readiness_timeout: cdk.Duration = field(default_factory=default_readiness_timeout)
    api_keys: ApiKeys | None = None
    readiness_api_key_name: str = READINESS_GATE


class FaultTolerantRayService(Construct):
    """The charts as `KubernetesManifest`s in apply order (namespace → secrets → RayService →
    UI), the readiness gate between the RayService and the UI (in a security group that
    reaches the API endpoint, and with API keys the serve port and Secrets Manager), the serve
    Service's load balancer hostname, and, for an engine that compiles the model for its
    accelerator (Neuron), the compiled-artifact cache (a bucket and the workers' Pod Identity
    role) that the serve config points at.

    Teardown runs in reverse and waits: the RayService goes first, the gate's teardown
    resource waits for its RayClusters (Redis cleanup) and load balancers, then the
    secrets and the namespace. Keep the GCS store's stack deployed before this one's."""

    def __init__(self, scope: Construct, construct_id: str, props: FaultTolerantRayServiceProps) -> None:
        super().__init__(scope, construct_id)
        cluster = props.cluster
        deployment = props.deployment
        if props.api_keys is not None:
            if deployment.api_keys_secret is not None:
                raise ValueError(
                    "the API keys are given twice: as FaultTolerantRayServiceProps.api_keys and as "
                    "EksDeployment.api_keys_secret; give only api_keys (the readiness gate then checks the API)"
                )
            deployment = replace(deployment, api_keys_secret=props.api_keys.secret.secret_arn)
        # Engines that compile the model for the accelerator (Neuron) get the cache: every
        # worker start after the first downloads the compiled model instead of compiling.
        self.artifact_cache: CompiledArtifactCache | None = None
        if deployment.accelerator.engine in COMPILED_ARTIFACT_ENGINES:
            self.artifact_cache = CompiledArtifactCache(
                self,
                "CompiledArtifacts",
                CompiledArtifactCacheProps(cluster=cluster, namespace=deployment.namespace),
            )
            deployment = replace(deployment, compiled_artifacts=self.artifact_cache.location)
        self.charts: EksCharts = eks_charts(cdk8s.App(), deployment)
        # What the KubeRay operator would refuse (ValidationFailed) fails synth instead.
        add_kuberay_rules(self, [o for chart in self.charts.in_apply_order() for o in chart.to_json()])
        self.manifests: dict[str, eks.KubernetesManifest] = {}
        previous: eks.KubernetesManifest | None = None
        for chart in self.charts.in_apply_order():
            manifest = eks.KubernetesManifest(
                self, f"{chart.node.id.title()}Chart", cluster=cluster, manifest=chart.to_json()
            )
            # Charts apply concurrently unless ordered: each needs the ones before it (the
            # namespace, then the synced secrets), and on delete the RayService goes before
            # the password Secret its Redis cleanup Job reads.
            if previous is not None:
                manifest.node.add_dependency(previous)
            self.manifests[chart.node.id] = manifest
            previous = manifest

        rayservice = self.manifests["rayservice"]
        # Created after, and deleted before, the KubeRay operator (its finalizer deletes the
        # cluster's keys from Redis) and External Secrets (which syncs the Redis password).
        for operator in props.operators:
            rayservice.node.add_dependency(operator)
        if props.secrets_operator is not None:
            self.manifests["secrets"].node.add_dependency(props.secrets_operator)
        if self.artifact_cache is not None:
            # Pod Identity credentials are injected at pod start: associate before the pods exist.
            rayservice.node.add_dependency(self.artifact_cache.pod_identity)

        self.namespace = self.charts.rayservice.inputs.namespace
        self.rayservice_name = self.charts.rayservice.inputs.name
        with_keys = props.api_keys is not None
        self.readiness_access = HelperSecurityGroup(
            self, "ReadinessAccess", HelperSecurityGroupProps(
                vpc=props.vpc, cluster_security_group=props.cluster_security_group,
                # It signs its EKS token locally: the API endpoint, and with API keys the serve
                # load balancer and Secrets Manager (its key), are all it talks to.
                reach=HelperReach(api_endpoint=True, serve_load_balancer=with_keys, aws_apis=with_keys),
                description="RayService readiness gate",
            ),
        )
        self.readiness = RayServiceReadiness(
            self,
            "Readiness",
            RayServiceReadinessProps(
                cluster=cluster,
                namespace=self.namespace,
                rayservice_name=self.rayservice_name,
                rayservice_manifest=self.charts.rayservice.to_json(),
                timeout=props.readiness_timeout,
                vpc=props.vpc,
                subnets=props.subnets,
                security_group=self.readiness_access.security_group,
                api_keys=props.api_keys,
                api_key_name=props.readiness_api_key_name,
            ),
        )
        self.readiness.resource.node.add_dependency(rayservice)
        self.readiness.rbac.node.add_dependency(self.manifests["namespace"])
        # Teardown, in reverse: the RayService manifest goes first (kubectl returns once the
        # RayService object is gone), then the gate's teardown resource waits until its
        # RayClusters have run the Redis cleanup Job and the serve Service's NLB and security
        # groups are deleted; only then the secrets (the cleanup Job reads the password), the
        # namespace, and after this stack Redis, the cluster and the VPC.
        self.readiness.teardown.node.add_dependency(self.manifests["secrets"])
        # Its way in (the API endpoint's ingress rule) goes after it, and is there before
        # the first poll.
        for resource in (self.readiness.resource, self.readiness.teardown):
            resource.node.add_dependency(self.readiness_access)
        rayservice.node.add_dependency(self.readiness.teardown)
        # The Gradio UI comes after a Ready RayService: it has nothing to talk to before.
        self.manifests["gradio"].node.add_dependency(self.readiness)

        # KubeRay creates the serve Service (an internal NLB) once the cluster is ready.
        self.serve_endpoint = eks.KubernetesObjectValue(
            self,
            "ServeEndpoint",
            cluster=cluster,
            object_type="service",
            object_name=serve_service_name(self.rayservice_name),
            object_namespace=self.namespace,
            json_path=".status.loadBalancer.ingress[0].hostname",
            timeout=cdk.Duration.minutes(10),
        )
        self.serve_endpoint.node.add_dependency(self.readiness)

    @property
    def serve_url(self) -> str:
        """The serve Service's internal load balancer, as the probe and the drill reach it."""
        return f"http://{self.serve_endpoint.value}:{constants.SERVE_PORT}"
