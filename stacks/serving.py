"""ServingStack: the cdk8s charts (namespace, secrets, RayService, Gradio) applied to the
cluster, fed with CDK tokens (Redis endpoint, secret ARN, image URIs), and the container
images built from images/ at deploy time."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
import cdk8s
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from charts.profiles import EksDeployment, eks_charts
from stacks.cluster import ClusterStack
from stacks.gcs_store import GcsStoreStack
from stacks.settings import Settings

IMAGES = Path(__file__).resolve().parent.parent / "images"
# Dockerfile of the Ray Serve image per accelerator.
RAY_SERVE_DOCKERFILE = {"neuron": "Dockerfile.neuron", "nvidia": "Dockerfile.nvidia"}
# Build contexts carry the application only.
IMAGE_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/.pytest_cache"]


class ServingStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        cluster: ClusterStack,
        gcs_store: GcsStoreStack,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        capacity = settings.capacity
        self.ray_image = ecr_assets.DockerImageAsset(
            self,
            "RayServeImage",
            directory=str(IMAGES / "ray-serve"),
            file=RAY_SERVE_DOCKERFILE[capacity.accelerator.name],
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
        # The Redis itself outlives the RayService: this stack depends on the GCS store stack.
        self.add_stack_dependency(gcs_store, "the RayService's finalizer needs Redis while it is deleted")
