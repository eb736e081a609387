"""The two ways the charts are put together: on EKS (ElastiCache, External Secrets,
accelerator workers) and on kind (in-cluster Redis, CPU workers, a tiny model, a query Job).

The CDK serving stack calls `eks_charts` with deploy-time tokens; `python -m charts` calls
both with literal values. Each returns its charts in apply order: each chart needs the ones
before it to exist, and must be deleted before them (the RayService's Redis cleanup reads
the GCS store password Secret).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cdk8s

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import Accelerator
from ray_serve_ha.charts.capacity import DEFAULT_CAPACITY_MODE, DEFAULT_MAX_NODES, DEFAULT_MIN_NODES, CapacityMode
from ray_serve_ha.charts.gradio import GradioChart, GradioInputs
from ray_serve_ha.charts.models import DEFAULT_HUGGING_FACE_TOKEN_SECRET, DEFAULT_MODEL, Model
from ray_serve_ha.charts.namespace import NamespaceChart
from ray_serve_ha.charts.query_job import QueryJobChart
from ray_serve_ha.charts.ray_pods import KIND_HEAD_RESOURCES, KIND_WORKER_RESOURCES, GcsStore
from ray_serve_ha.charts.rayservice import (
    RAYSERVICE_NAME,
    RayServiceChart,
    RayServiceInputs,
    RayWorkers,
    accelerator_workers,
    api_keys_file,
)
from ray_serve_ha.charts.redis import InClusterRedisChart, in_cluster_gcs_store
from ray_serve_ha.charts.replica_start import initializing_timeout_minutes
from ray_serve_ha.charts.secrets import (
    API_KEYS,
    CHAT_UI_API_KEY,
    GCS_STORE_PASSWORD,
    HUGGING_FACE_TOKEN,
    SecretsChart,
    SecretsInputs,
)
from ray_serve_ha.charts.serve_config import (
    COMPILED_ARTIFACT_ENGINES,
    DEFAULT_API_RATE_LIMIT_PER_MINUTE,
    DEFAULT_MAX_QUEUED_REQUESTS,
    TINY_MODEL_ID,
    LlmServing,
    tiny_model_serving,
)
from ray_serve_ha.charts.serve_service import openai_base_url

# The tiny model (random weights, ~135k parameters) that the CPU image builds into this
# folder (images/ray-serve/Dockerfile.cpu): the kind profile needs no download and no token.
TINY_MODEL_PATH = "/home/ray/models/tiny-mistral"
# Locally built images, loaded into kind with `kind load docker-image`: the Serve app on
# CPU with the tiny model built in (a Ray image without them cannot serve), and the UI.
KIND_RAY_IMAGE = "ray-serve-ha/ray-serve-cpu:local"
KIND_GRADIO_IMAGE = "ray-serve-ha/gradio:local"
# How each is built, from the repository root.
KIND_IMAGE_BUILDS = {
    KIND_RAY_IMAGE: "docker build -f images/ray-serve/Dockerfile.cpu -t {image} images/ray-serve",
    KIND_GRADIO_IMAGE: "docker build -t {image} images/gradio",
}


@dataclass(frozen=True, kw_only=True)
class EksDeployment:
    """What the EKS profile needs; strings may be CDK tokens resolved at deploy time. The
    defaults are the library's, which the settings and `python -m charts` read too."""

    accelerator: Accelerator
    instance_types: tuple[str, ...]
    region: str
    redis_endpoint: str
    redis_port: int | str = constants.REDIS_PORT
    gcs_store_auth_secret: str
    hugging_face_token_secret: str = DEFAULT_HUGGING_FACE_TOKEN_SECRET
    ray_image: str
    gradio_image: str
    min_workers: int = DEFAULT_MIN_NODES
    max_workers: int = DEFAULT_MAX_NODES
    # What the RayService serves (ray_serve_ha/charts/models.py).
    model: Model = DEFAULT_MODEL
    namespace: str = constants.SERVING_NAMESPACE
    # How the cluster provisions nodes, and so the serve Service's internal NLB.
    capacity_mode: CapacityMode = DEFAULT_CAPACITY_MODE
    # s3://bucket/prefix of the compiled-artifact cache (engines that compile only); the
    # worker pods then run as RAY_WORKER_SERVICE_ACCOUNT, which EKS Pod Identity maps to a
    # role that may use that prefix.
    compiled_artifacts: str | None = None
    # None: every worker on on-demand capacity. A number: that many workers and Serve replicas
    # (the floor) on on-demand nodes, the rest on spot nodes (ServingCapacity.floor).
    on_demand_replicas: int | None = None
    # ARN of the API keys secret ({name: key} JSON; ray_serve_ha/constructs/api_keys.py); None:
    # the API is open to anything that reaches the serve Service.
    api_keys_secret: str | None = None
    # Per key and minute, across replicas (None: no limit); requests each replica queues.
    api_rate_limit_per_minute: int | None = DEFAULT_API_RATE_LIMIT_PER_MINUTE
    api_token_limit_per_minute: int | None = None
    max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS


@dataclass(frozen=True)
class EksCharts:
    namespace: NamespaceChart
    secrets: SecretsChart
    rayservice: RayServiceChart
    gradio: GradioChart

    def in_apply_order(self) -> tuple[cdk8s.Chart, ...]:
        return (self.namespace, self.secrets, self.rayservice, self.gradio)


@dataclass(frozen=True)
class KindDeployment:
    ray_image: str = KIND_RAY_IMAGE
    gradio_image: str = KIND_GRADIO_IMAGE
    namespace: str = constants.SERVING_NAMESPACE


@dataclass(frozen=True)
class KindCharts:
    namespace: NamespaceChart
    redis: InClusterRedisChart
    rayservice: RayServiceChart
    gradio: GradioChart
    query: QueryJobChart

    def in_apply_order(self) -> tuple[cdk8s.Chart, ...]:
        return (self.namespace, self.redis, self.rayservice, self.gradio, self.query)


def accelerator_serving(
    model: Model,
    accelerator: Accelerator,
    workers: RayWorkers,
    compiled_artifacts: str | None = None,
    instance_types: tuple[str, ...] = (),
) -> LlmServing:
    """Serve replicas follow the workers: one per worker pod, as many as there can be."""
    return LlmServing(
        model_id=model.id,
        engine=workers.engine,
        ray_device=accelerator.ray_device,
        # What one replica of the model shards over, and its context (the models table).
        tensor_parallel_degree=accelerator.replica_units(model, instance_types),
        max_model_len=model.max_model_len,
        min_replicas=workers.min_replicas,
        max_replicas=workers.max_replicas,
        compiled_artifacts=compiled_artifacts if workers.engine in COMPILED_ARTIFACT_ENGINES else None,
        on_demand_replicas=workers.on_demand_replicas,
    )


def eks_rayservice_inputs(deployment: EksDeployment) -> RayServiceInputs:
    workers = accelerator_workers(
        deployment.accelerator,
        deployment.instance_types,
        deployment.min_workers,
        deployment.max_workers,
        deployment.on_demand_replicas,
    )
    serving = replace(
        accelerator_serving(
            deployment.model, deployment.accelerator, workers, deployment.compiled_artifacts, deployment.instance_types
        ),
        api_keys_file=api_keys_file(API_KEYS) if deployment.api_keys_secret else None,
        api_rate_limit_per_minute=deployment.api_rate_limit_per_minute,
        api_token_limit_per_minute=deployment.api_token_limit_per_minute,
        max_queued_requests=deployment.max_queued_requests,
    )
    return RayServiceInputs(
        serving=serving,
        workers=workers,
        # ElastiCache: TLS in transit, AUTH token synced by External Secrets.
        gcs_store=GcsStore(host=deployment.redis_endpoint, port=deployment.redis_port, password=GCS_STORE_PASSWORD),
        image=deployment.ray_image,
        namespace=deployment.namespace,
        hugging_face_token=HUGGING_FACE_TOKEN,
        serve_load_balancer=deployment.capacity_mode,
        worker_service_account=constants.RAY_WORKER_SERVICE_ACCOUNT if serving.compiled_artifacts else None,
        # Above a first start's node launch, compile and load (ray_serve_ha/charts/replica_start.py).
        initializing_timeout_minutes=initializing_timeout_minutes(deployment.accelerator, deployment.model),
        api_keys=API_KEYS if deployment.api_keys_secret else None,
    )


def eks_charts(app: cdk8s.App, deployment: EksDeployment) -> EksCharts:
    rayservice = eks_rayservice_inputs(deployment)
    return EksCharts(
        namespace=NamespaceChart(app, "namespace", name=deployment.namespace),
        secrets=SecretsChart(
            app,
            "secrets",
            inputs=SecretsInputs(
                region=deployment.region,
                gcs_store_auth_secret=deployment.gcs_store_auth_secret,
                hugging_face_token_secret=deployment.hugging_face_token_secret,
                namespace=deployment.namespace,
                api_keys_secret=deployment.api_keys_secret,
            ),
        ),
        rayservice=RayServiceChart(app, "rayservice", inputs=rayservice),
        gradio=GradioChart(
            app,
            "gradio",
            inputs=GradioInputs(
                image=deployment.gradio_image,
                openai_base_url=openai_base_url(rayservice.name, deployment.namespace),
                model_id=deployment.model.id,
                device=deployment.accelerator.ui_device_word,
                namespace=deployment.namespace,
                api_key=CHAT_UI_API_KEY if deployment.api_keys_secret else None,
            ),
        ),
    )


# kind: two small CPU workers and a small head, as in KubeRay's HA sample (sizes in
# charts/ray_pods.py, which the local stack also reads for its nodes' CPU weights).
KIND_WORKERS = RayWorkers(resources=KIND_WORKER_RESOURCES)


def kind_rayservice_inputs(deployment: KindDeployment) -> RayServiceInputs:
    return RayServiceInputs(
        serving=tiny_model_serving(TINY_MODEL_PATH),
        workers=KIND_WORKERS,
        gcs_store=in_cluster_gcs_store(deployment.namespace),
        image=deployment.ray_image,
        name=RAYSERVICE_NAME,
        namespace=deployment.namespace,
        head_resources=KIND_HEAD_RESOURCES,
        head_on_stable_capacity=False,
    )


def kind_charts(app: cdk8s.App, deployment: KindDeployment) -> KindCharts:
    rayservice = kind_rayservice_inputs(deployment)
    base_url = openai_base_url(rayservice.name, deployment.namespace)
    return KindCharts(
        namespace=NamespaceChart(app, "namespace", name=deployment.namespace),
        redis=InClusterRedisChart(app, "redis", namespace=deployment.namespace),
        rayservice=RayServiceChart(app, "rayservice", inputs=rayservice),
        gradio=GradioChart(
            app,
            "gradio",
            inputs=GradioInputs(
                image=deployment.gradio_image,
                openai_base_url=base_url,
                model_id=TINY_MODEL_ID,
                namespace=deployment.namespace,
            ),
        ),
        query=QueryJobChart(
            app, "query", openai_base_url=base_url, model_id=TINY_MODEL_ID, namespace=deployment.namespace
        ),
    )
