"""ServingStack: the cdk8s charts (namespace, secrets, RayService, Gradio) applied to the
cluster, fed with CDK tokens (Redis endpoint, secret ARN, image URIs), and the container
images built from images/ at deploy time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from charts import constants
from charts.gradio import GRADIO_NAME
from charts.profiles import EksDeployment, eks_charts
from charts.rayservice import accelerator_workers, serve_service_name
from charts.serve_config import COMPILED_ARTIFACT_ENGINES
from stacks.artifact_cache import CompiledArtifactCache
from stacks.cluster import ClusterStack
from stacks.drill_runner import HaDrillProject
from stacks.gcs_store import GcsStoreStack
from stacks.helper_access import HelperPlacement, HelperReach, HelperSecurityGroup
from stacks.network import NetworkStack
from stacks.observability import AvailabilityAlarm, ServeProbe, serving_dashboard
from stacks.readiness import RayServiceReadiness
from stacks.settings import Settings

IMAGES = Path(__file__).resolve().parent.parent / "images"
# Build contexts carry the application only.
IMAGE_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/.pytest_cache"]


class ServingStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        network: NetworkStack,
        cluster: ClusterStack,
        gcs_store: GcsStoreStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        capacity = settings.capacity
        self.ray_image = ecr_assets.DockerImageAsset(
            self,
            "RayServeImage",
            directory=str(IMAGES / "ray-serve"),
            # The accelerator's Dockerfile in images/ray-serve (charts/accelerators.py).
            file=capacity.accelerator.dockerfile,
            platform=ecr_assets.Platform.LINUX_AMD64,
            exclude=IMAGE_EXCLUDES,
        )
        self.gradio_image = ecr_assets.DockerImageAsset(
            self,
            "GradioImage",
            directory=str(IMAGES / "gradio"),
            platform=ecr_assets.Platform.LINUX_AMD64,
            exclude=IMAGE_EXCLUDES,
        )
        # Engines that compile the model for the accelerator (Neuron) get the cache: every
        # worker start after the first downloads the compiled model instead of compiling.
        self.artifact_cache: CompiledArtifactCache | None = None
        engine = accelerator_workers(
            capacity.accelerator, capacity.instance_types, capacity.min_nodes, capacity.max_nodes
        ).engine
        if engine in COMPILED_ARTIFACT_ENGINES:
            self.artifact_cache = CompiledArtifactCache(
                self,
                "CompiledArtifacts",
                cluster=cluster.cluster,
                namespace=constants.SERVING_NAMESPACE,
                service_account=constants.RAY_WORKER_SERVICE_ACCOUNT,
            )
        self.charts = eks_charts(
            cdk8s.App(),
            EksDeployment(
                accelerator=capacity.accelerator,
                instance_types=capacity.instance_types,
                region=self.region,
                redis_endpoint=gcs_store.primary_endpoint,
                redis_port=gcs_store.port,
                gcs_store_auth_secret=gcs_store.auth_token.secret_arn,
                hugging_face_token_secret=settings.secrets.hugging_face_token_secret_name,
                ray_image=self.ray_image.image_uri,
                gradio_image=self.gradio_image.image_uri,
                min_workers=capacity.min_nodes,
                max_workers=capacity.max_nodes,
                model_id=settings.serving.model_id,
                capacity_mode=capacity.mode,
                compiled_artifacts=self.artifact_cache.location if self.artifact_cache else None,
            ),
        )
        # The manifests live in this stack, not under the cluster construct as
        # `cluster.add_cdk8s_chart` would put them: they consume the GCS store's tokens,
        # and the GCS store stack already depends on the cluster stack.
        self.manifests: dict[str, eks.KubernetesManifest] = {}
        previous: eks.KubernetesManifest | None = None
        for chart in self.charts.in_apply_order():
            manifest = eks.KubernetesManifest(
                self, f"{chart.node.id.title()}Chart", cluster=cluster.cluster, manifest=chart.to_json()
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
        rayservice.node.add_dependency(cluster.kuberay_operator)
        rayservice.node.add_dependency(cluster.external_secrets.chart)
        self.manifests["secrets"].node.add_dependency(cluster.external_secrets.chart)
        if self.artifact_cache is not None:
            # Pod Identity credentials are injected at pod start: associate before the pods exist.
            rayservice.node.add_dependency(self.artifact_cache.pod_identity)
        # The Redis itself outlives the RayService: this stack depends on the GCS store stack.
        self.add_stack_dependency(gcs_store, "the RayService's finalizer needs Redis while it is deleted")

        namespace = self.charts.rayservice.inputs.namespace
        rayservice_name = self.charts.rayservice.inputs.name
        def in_vpc(name: str, reach: HelperReach, description: str) -> HelperPlacement:
            """The helper's place in the VPC: the private subnets and a group of its own."""
            group = HelperSecurityGroup(
                self, f"{name}Access", vpc=network.vpc, cluster_security_group=cluster.cluster_security_group,
                reach=reach, description=description,
            )
            self.helper_access[name] = group
            return HelperPlacement(
                vpc=network.vpc, subnets=network.private_subnets, security_group=group.security_group
            )

        self.helper_access: dict[str, HelperSecurityGroup] = {}
        self.readiness = RayServiceReadiness(
            self,
            "Readiness",
            cluster=cluster.cluster,
            namespace=namespace,
            rayservice_name=rayservice_name,
            rayservice_manifest=self.charts.rayservice.to_json(),
            timeout=cdk.Duration.minutes(settings.operations.readiness_timeout_minutes),
            # It signs its EKS token locally: the API endpoint is all it talks to.
            **in_vpc("Readiness", HelperReach(api_endpoint=True), "RayService readiness gate"),
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
            resource.node.add_dependency(self.helper_access["Readiness"])
        rayservice.node.add_dependency(self.readiness.teardown)
        # The Gradio UI comes after a Ready RayService: it has nothing to talk to before.
        self.manifests["gradio"].node.add_dependency(self.readiness)

        # KubeRay creates the serve Service (an internal NLB) once the cluster is ready.
        self.serve_endpoint = eks.KubernetesObjectValue(
            self,
            "ServeEndpoint",
            cluster=cluster.cluster,
            object_type="service",
            object_name=serve_service_name(rayservice_name),
            object_namespace=namespace,
            json_path=".status.loadBalancer.ingress[0].hostname",
            timeout=cdk.Duration.minutes(10),
        )
        self.serve_endpoint.node.add_dependency(self.readiness)
        serve_url = f"http://{self.serve_endpoint.value}:{constants.SERVE_PORT}"
        self.probe = ServeProbe(
            self, "Probe", service_name=f"{settings.cluster.name}/{rayservice_name}", serve_url=serve_url,
            # The serve load balancer, and CloudWatch for its metrics.
            **in_vpc("Probe", HelperReach(serve_load_balancer=True, aws_apis=True), "Ray Serve availability probe"),
        )
        self.alarm = AvailabilityAlarm(
            self,
            "Availability",
            probe=self.probe,
            slo_percent=settings.operations.availability_slo_percent,
            email=settings.operations.alarm_email,
        )
        self.dashboard = serving_dashboard(
            self,
            "Dashboard",
            name=settings.cluster.name,
            probe=self.probe,
            alarm=self.alarm.alarm,
            replication_group_id=gcs_store.replication_group.ref,
            accelerator_instance_types=capacity.instance_types,
        )
        self.ha_drill = HaDrillProject(
            self,
            "HaDrill",
            cluster=cluster.cluster,
            cluster_name=settings.cluster.name,
            namespace=namespace,
            rayservice_name=rayservice_name,
            serve_url=serve_url,
            # The API endpoint (delete the head pod), the serve load balancer (the load), and
            # CodeBuild's own needs: its source in S3, logs, the drill's pip packages.
            **in_vpc(
                "HaDrill", HelperReach(api_endpoint=True, serve_load_balancer=True, aws_apis=True), "HA drill"
            ),
        )
        self.ha_drill.rbac.node.add_dependency(self.manifests["namespace"])
        self._outputs(settings, namespace, rayservice_name, serve_url)

    def _outputs(self, settings: Settings, namespace: str, rayservice_name: str, serve_url: str) -> None:
        """The next commands a user runs, in the order the README gives them."""
        name = settings.cluster.name
        outputs = {
            "UpdateKubeconfig": f"aws eks update-kubeconfig --name {name} --region {self.region}",
            "ChatUiPortForward": f"kubectl -n {namespace} port-forward svc/{GRADIO_NAME} 7860:7860",
            "RayDashboardPortForward": f"kubectl -n {namespace} port-forward svc/{rayservice_name}-head-svc 8265:8265",
            "ApiPortForward": (
                f"kubectl -n {namespace} port-forward svc/{serve_service_name(rayservice_name)} 8000:8000"
            ),
            "ServeApiUrl": f"{serve_url}/v1",
            "HaDrillCommand": (
                "python -m local.drill --backend kubernetes --url http://127.0.0.1:8000 "
                f"--namespace {namespace} --rayservice {rayservice_name}"
            ),
            "HaDrillInVpcCommand": f"aws codebuild start-build --project-name {self.ha_drill.project.project_name}",
            "DashboardUrl": (
                f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}"
                f"#dashboards/dashboard/{self.dashboard.dashboard_name}"
            ),
        }
        for key, value in outputs.items():
            cdk.CfnOutput(self, key, value=value)
