"""ServingStack: the cdk8s charts (namespace, secrets, RayService, Gradio) applied to the
cluster, fed with CDK tokens (Redis endpoint, secret ARN, image URIs), and the container
images built from images/ at deploy time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

from ray_serve_ha.charts.gradio import GRADIO_NAME
from ray_serve_ha.charts.profiles import EksDeployment
from ray_serve_ha.charts.serve_metrics import ServeQueries, eks_selector
from ray_serve_ha.charts.serve_service import serve_service_name
from ray_serve_ha.constructs.api_keys import ApiKeys
from ray_serve_ha.constructs.availability import (
    ServeAvailabilityAlarm,
    ServeAvailabilityAlarmProps,
    ServeAvailabilityProbe,
    ServeAvailabilityProbeProps,
)
from ray_serve_ha.constructs.dashboard import ServingDashboardProps, serving_dashboard
from ray_serve_ha.constructs.helper_access import (
    HelperPlacement,
    HelperReach,
    HelperSecurityGroup,
    HelperSecurityGroupProps,
)
from ray_serve_ha.constructs.promql_graphs import PromQLGraphs
from ray_serve_ha.constructs.rayservice import FaultTolerantRayService, FaultTolerantRayServiceProps
from ray_serve_ha.constructs.serve_alarms import ServeMetricAlarms, ServeMetricAlarmsProps
from stacks.drill_runner import HaDrillProject
from stacks.existing_cluster import AnyClusterStack
from stacks.existing_network import Network
from stacks.gcs_store import GcsStoreStack
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
        network: Network,
        cluster: AnyClusterStack,
        gcs_store: GcsStoreStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        capacity = settings.capacity
        self.ray_image = ecr_assets.DockerImageAsset(
            self,
            "RayServeImage",
            directory=str(IMAGES / "ray-serve"),
            # The accelerator's Dockerfile in images/ray-serve (ray_serve_ha/charts/accelerators.py).
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
        # One secret of API keys, a key per consumer; External Secrets syncs it into the pods.
        self.api_keys = ApiKeys(self, "ApiKeys")
        self.api_keys.grant_read_to(cluster.external_secrets.role, "ExternalSecretsReader")
        # The manifests live in this stack, not under the cluster construct as
        # `cluster.add_cdk8s_chart` would put them: they consume the GCS store's tokens,
        # and the GCS store stack already depends on the cluster stack.
        # "Default": the manifests, the gate and its security group keep the logical ids
        # they had before they moved into the construct (CDK leaves a Default path component
        # out of logical ids): an update never deletes and re-creates the RayService.
        self.rayservice = FaultTolerantRayService(
            self,
            "Default",
            FaultTolerantRayServiceProps(
                cluster=cluster.cluster,
                deployment=EksDeployment(
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
                    model=settings.serving.model,
                    capacity_mode=capacity.mode,
                    on_demand_replicas=capacity.floor,
                    api_rate_limit_per_minute=settings.serving.api_rate_limit_per_minute,
                    api_token_limit_per_minute=settings.serving.api_token_limit_per_minute,
                    max_queued_requests=settings.serving.max_queued_requests,
                ),
                vpc=network.vpc,
                subnets=network.private_subnets,
                cluster_security_group=cluster.cluster_security_group,
                operators=[cluster.kuberay_operator, cluster.external_secrets.chart],
                secrets_operator=cluster.external_secrets.chart,
                readiness_timeout=cdk.Duration.minutes(settings.operations.readiness_timeout_minutes),
                # The Serve pods' keys; the readiness gate proves the API answers its own.
                api_keys=self.api_keys,
            ),
        )
        self.charts = self.rayservice.charts
        self.artifact_cache = self.rayservice.artifact_cache
        self.manifests = self.rayservice.manifests
        self.readiness = self.rayservice.readiness
        self.serve_endpoint = self.rayservice.serve_endpoint
        # The Redis itself outlives the RayService: this stack depends on the GCS store stack.
        self.add_stack_dependency(gcs_store, "the RayService's finalizer needs Redis while it is deleted")

        namespace = self.rayservice.namespace
        rayservice_name = self.rayservice.rayservice_name
        def in_vpc(name: str, reach: HelperReach, description: str) -> HelperPlacement:
            """The helper's place in the VPC: the private subnets and a group of its own."""
            group = HelperSecurityGroup(self, f"{name}Access", HelperSecurityGroupProps(
                vpc=network.vpc, cluster_security_group=cluster.cluster_security_group,
                reach=reach, description=description,
            ))
            self.helper_access[name] = group
            return HelperPlacement(
                vpc=network.vpc, subnets=network.private_subnets, security_group=group.security_group
            )

        self.helper_access: dict[str, HelperSecurityGroup] = {"Readiness": self.rayservice.readiness_access}
        serve_url = self.rayservice.serve_url
        self.probe = ServeAvailabilityProbe(
            self, "Probe", ServeAvailabilityProbeProps(
                service_name=f"{settings.cluster.name}/{rayservice_name}", serve_url=serve_url,
                api_keys=self.api_keys.secret,
                # The serve load balancer, and CloudWatch for its metrics.
                **in_vpc("Probe", HelperReach(serve_load_balancer=True, aws_apis=True), "Ray Serve availability probe"),
            ),
        )
        self.alarm = ServeAvailabilityAlarm(
            self,
            "Availability",
            ServeAvailabilityAlarmProps(
                probe=self.probe,
                slo_percent=settings.operations.availability_slo_percent,
                email=settings.operations.alarm_email,
            ),
        )
        # Serve's own series, as the cluster's CloudWatch Observability add-on sends them.
        serve_queries = ServeQueries(selector=eks_selector(settings.cluster.name, namespace))
        self.serve_alarms = ServeMetricAlarms(self, "ServeMetrics", ServeMetricAlarmsProps(
            queries=serve_queries, topic=self.alarm.topic,
            server_error_percent=settings.operations.serve_error_alarm_percent,
            latency_p99_ms=settings.operations.serve_latency_alarm_ms,
        ))
        # Created once the RayService is Ready: the not-Ready alarm would fire during a first deploy.
        self.serve_alarms.node.add_dependency(self.readiness.resource)
        # The dashboard's graphs of those series: custom widgets drawn from PromQL.
        self.serve_graphs = PromQLGraphs(self, "ServeGraphs")
        self.dashboard = serving_dashboard(
            self,
            "Dashboard",
            ServingDashboardProps(
                name=settings.cluster.name,
                probe=self.probe,
                alarm=self.alarm.alarm,
                replication_group_id=gcs_store.replication_group.ref,
                accelerator_instance_types=capacity.instance_types,
                serve_alarms=self.serve_alarms,
                serve_queries=serve_queries,
                serve_graphs=self.serve_graphs,
            ),
        )
        self.ha_drill = HaDrillProject(
            self,
            "HaDrill",
            cluster=cluster.cluster,
            cluster_name=settings.cluster.name,
            namespace=namespace,
            rayservice_name=rayservice_name,
            serve_url=serve_url,
            api_keys=self.api_keys.secret,
            # The API endpoint (delete the head pod), the serve load balancer (the load), and
            # CodeBuild's own needs: its source in S3, logs, the drill's pip packages.
            **in_vpc(
                "HaDrill", HelperReach(api_endpoint=True, serve_load_balancer=True, aws_apis=True), "HA drill"
            ),
        )
        self.ha_drill.rbac.node.add_dependency(self.manifests["namespace"])
        # The probe's first run and the drill's builds read their entries: after they are added.
        for reader in (self.probe.schedule, self.ha_drill.project):
            reader.node.add_dependency(self.api_keys.entries)
        self._outputs(settings, namespace, rayservice_name, serve_url)

    def _outputs(self, settings: Settings, namespace: str, rayservice_name: str, serve_url: str) -> None:
        """The next commands a user runs, in the order docs/operating.md gives them."""
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
