"""RayService: the Ray cluster that serves the LLM, with its head made fault tolerant by an
external Redis, and a PodDisruptionBudget for its workers.

The head keeps the cluster's metadata (GCS) in Redis, so when it dies the workers, their
Serve replicas and proxies keep answering requests, and a new head picks up where the old
one stopped. The spec below is what makes that hold on Kubernetes: the GCS store, two or
more workers on distinct nodes, no Serve traffic through the head, and nothing the KubeRay
operator rejects (see `charts.kuberay_rules`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cdk8s
from constructs import Construct

from ray_serve_ha.charts import constants, ray_env, serve_watchdog
from ray_serve_ha.charts.capacity import CapacityMode
from ray_serve_ha.charts.objects import add_api_object
from ray_serve_ha.charts.pod_requests import EKS_HEAD_RESOURCES
from ray_serve_ha.charts.ray_pods import (
    DEFAULT_RAY_IMAGE,
    DNS_1035_LABEL,
    MAX_RAYSERVICE_NAME_LENGTH,
    RAY_VERSION,
    GcsStore,
    PodResources,
    SecretKeyRef,
    autoscaling,
    capacity_type_terms,
    container_resources,
    head_group,
    on_demand_capacity_affinity,
    required_node_affinity,
    worker_group,
)
from ray_serve_ha.charts.ray_workers import RayWorkers as RayWorkers
from ray_serve_ha.charts.ray_workers import WorkerGroupPlan
from ray_serve_ha.charts.ray_workers import accelerator_workers as accelerator_workers
from ray_serve_ha.charts.serve_config import (
    API_LIMITS_REDIS_ADDRESS_ENV,
    API_LIMITS_REDIS_PASSWORD_ENV,
    CAPACITY_RESOURCES,
    LlmServing,
    serve_config_yaml,
)
from ray_serve_ha.charts.serve_service import SERVE_LOAD_BALANCERS, serve_service_template
from ray_serve_ha.charts.worker_readiness import worker_readiness_probe

RAYSERVICE_NAME = "ray-serve-llm"
# KubeRay >= 1.5: a Go duration or whole seconds (ray-operator/controllers/ray/utils/constant.go).
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"

# Set on every pod of a RayService (KubeRay keeps template labels): the RayCluster name
# KubeRay puts in `ray.io/cluster` is generated and changes with every cluster upgrade.
RAYSERVICE_LABEL = f"{constants.LABEL_DOMAIN}/rayservice"

# ElastiCache certificates chain to Amazon's public CAs: point Ray's Redis client at the
# system bundle (without it: CERTIFICATE_VERIFY_FAILED, ray#41161).
REDIS_CA_CERT = "/etc/ssl/certs/ca-certificates.crt"
# Where the worker pods mount the API keys Secret; the Serve app rereads the file as the
# kubelet swaps it for a new version (no restart).
API_KEYS_MOUNT_DIR = "/etc/ray-serve-ha/api-keys"


def api_keys_file(keys: SecretKeyRef) -> str:
    """The path of the API keys file in a worker pod (the serve config's `api_keys_file`)."""
    return f"{API_KEYS_MOUNT_DIR}/{keys.key}"

# In-flight streams get the replicas' graceful-shutdown time, plus margin, both when a pod is
# stopped and when an upgraded cluster takes the traffic and the old one is deleted
# (charts/ray_env.py: the worker pods' grace period and Ray's drain within it).
DRAIN_SECONDS = ray_env.WORKER_TERMINATION_GRACE_S
# EC2's notice before it reclaims a spot instance. A spot worker's drain (DRAIN_SECONDS, on
# the spot worker group as on the others) must end before it: EKS Auto Mode and managed node
# groups start the drain when the notice (or, node groups, a rebalance recommendation) comes.
SPOT_INTERRUPTION_NOTICE_S = 120


@dataclass(frozen=True)
class RayServiceInputs:
    serving: LlmServing
    workers: RayWorkers
    gcs_store: GcsStore
    # The Ray image with the Serve application (images/ray-serve), per accelerator.
    image: str = DEFAULT_RAY_IMAGE
    name: str = RAYSERVICE_NAME
    namespace: str = constants.SERVING_NAMESPACE
    head_resources: PodResources = EKS_HEAD_RESOURCES
    # Hugging Face token for gated models (Mistral); None for models that need none.
    hugging_face_token: SecretKeyRef | None = None
    # Keep the head on on-demand nodes without accelerators, and out of Karpenter's
    # consolidation: every move of the head is a GCS outage. Off on kind (no such labels).
    head_on_stable_capacity: bool = True
    # An internal NLB in front of the serve Service (the capacity modes provision it
    # differently); None: a ClusterIP Service only (kind).
    serve_load_balancer: CapacityMode | None = None
    # A service account of their own for the worker pods (created with the chart), when
    # they get AWS access through EKS Pod Identity; None: the namespace's default.
    worker_service_account: str | None = None
    # KubeRay gives up for good (Ready=False, reason InitializingTimeout) on a RayService that
    # has not been Ready this long since its creation; None: it waits forever.
    initializing_timeout_minutes: int | None = None
    # The Secret of the API keys ({name: key} JSON), mounted in the workers; None: open API.
    api_keys: SecretKeyRef | None = None

    def __post_init__(self) -> None:
        validate_rayservice_name(self.name)
        wanted = api_keys_file(self.api_keys) if self.api_keys is not None else None
        if self.serving.api_keys_file != wanted:
            raise ValueError(
                f"the Serve app reads API keys from {self.serving.api_keys_file!r} but the worker pods "
                f"mount {wanted!r}: set LlmServing.api_keys_file to api_keys_file(api_keys)"
            )
        if self.serve_load_balancer not in (None, *SERVE_LOAD_BALANCERS):
            raise ValueError(
                f"serve_load_balancer {self.serve_load_balancer!r} is not one of: {', '.join(SERVE_LOAD_BALANCERS)}"
            )
        if self.serving.engine != self.workers.engine:
            raise ValueError(
                f"engine {self.serving.engine!r} does not run on {self.workers.group_name} workers; "
                f"they need engine {self.workers.engine!r}"
            )
        worker_device = self.workers.accelerator.ray_device if self.workers.accelerator else None
        if self.serving.ray_device != worker_device:
            raise ValueError(
                f"the Serve replicas count devices as {self.serving.ray_device} but the "
                f"{self.workers.group_name} workers offer {worker_device or 'CPUs only'}"
            )
        needed, offered = _replica_need(self.serving), _worker_offer(self.workers)
        if needed > offered:
            raise ValueError(
                f"one Serve replica needs {needed:g} {_unit(self.workers)} but a worker pod has "
                f"{offered:g}: lower tensor_parallel_degree or pick a larger instance type"
            )
        if self.serving.on_demand_replicas != self.workers.on_demand_replicas:
            raise ValueError(
                f"Serve's on-demand floor ({self.serving.on_demand_replicas}) differs from the on-demand "
                f"workers' ({self.workers.on_demand_replicas}): the floor's replicas need a worker each"
            )
        if self.serving.max_replicas > self.workers.max_replicas:
            raise ValueError(
                f"Serve max_replicas={self.serving.max_replicas} exceeds workers "
                f"max_replicas={self.workers.max_replicas}: with one replica per node, the extra "
                "replicas would never be placed"
            )


def validate_rayservice_name(name: str) -> None:
    if len(name) > MAX_RAYSERVICE_NAME_LENGTH:
        raise ValueError(
            f"RayService name {name!r} is {len(name)} characters long; KubeRay allows at most "
            f"{MAX_RAYSERVICE_NAME_LENGTH} because it derives the RayCluster, Service and Pod names from it"
        )
    if not DNS_1035_LABEL.match(name):
        raise ValueError(
            f"RayService name {name!r} is not a DNS-1035 label: use lowercase letters, digits and "
            "'-', starting with a letter and ending with a letter or digit"
        )


def _replica_need(serving: LlmServing) -> float:
    return serving.cpus_per_replica if serving.ray_device is None else serving.tensor_parallel_degree


def _worker_offer(workers: RayWorkers) -> float:
    if workers.accelerator is None:
        cpu = workers.resources.cpu
        return float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return workers.resources.devices * workers.accelerator.ray_device.units_per_device


def _unit(workers: RayWorkers) -> str:
    return workers.accelerator.ray_device.unit_word if workers.accelerator else "CPUs"


def worker_selector(rayservice_name: str) -> dict[str, str]:
    """Labels of this RayService's worker pods, in every RayCluster it creates."""
    return {"ray.io/node-type": "worker", RAYSERVICE_LABEL: rayservice_name}


def _head_group(inputs: RayServiceInputs) -> dict[str, Any]:
    # Reconnect timeout and GCS health checks: the same env as the local stack's head.
    env = ray_env.as_container_env(ray_env.head_env())
    if inputs.gcs_store.tls:
        env.append({"name": "RAY_REDIS_CA_CERT", "value": REDIS_CA_CERT})
    container = {
        "name": "ray-head",
        "image": inputs.image,
        "resources": container_resources(inputs.head_resources, None),
        "env": env,
        # The Serve control-plane watchdog beside it (charts/serve_watchdog.py).
        **serve_watchdog.ray_container_additions(),
    }
    watchdog = (serve_watchdog.watchdog_container(inputs.image),)
    volumes = {"volumes": [serve_watchdog.token_volume()]}
    if not inputs.head_on_stable_capacity:
        return head_group(container, labels={RAYSERVICE_LABEL: inputs.name}, pod_spec=volumes, sidecars=watchdog)
    return head_group(
        container,
        labels={RAYSERVICE_LABEL: inputs.name},
        # Karpenter (EKS Auto Mode) leaves the node alone while the head runs on it; node
        # expiry and a deleted pod still move it, as the HA design allows.
        annotations={"karpenter.sh/do-not-disrupt": "true"},
        pod_spec={"affinity": on_demand_capacity_affinity(), **volumes},
        sidecars=watchdog,
    )


def _worker_group(inputs: RayServiceInputs, plan: WorkerGroupPlan) -> dict[str, Any]:
    workers = inputs.workers
    selector = {"matchLabels": worker_selector(inputs.name)}
    # Plain values, and the token's secret reference below.
    env: list[dict[str, Any]] = ray_env.as_container_env(ray_env.worker_env())
    if inputs.hugging_face_token is not None:
        env.append({"name": "HF_TOKEN", "valueFrom": inputs.hugging_face_token.env_source()})
    key_volumes: dict[str, Any] = {}
    if inputs.api_keys is not None:
        # The per-key rate limits count in the GCS store, with the head's address and password.
        env.append({"name": API_LIMITS_REDIS_ADDRESS_ENV, "value": inputs.gcs_store.address})
        env.append({"name": API_LIMITS_REDIS_PASSWORD_ENV, "valueFrom": inputs.gcs_store.password.env_source()})
        key_volumes["volumeMounts"] = [{"name": "api-keys", "mountPath": API_KEYS_MOUNT_DIR, "readOnly": True}]
    container = {
        "name": "ray-worker",
        "image": inputs.image,
        "resources": container_resources(workers.resources, workers.accelerator),
        "env": env,
        # Ready only once this worker's own replica serves (ray_serve_ha/charts/worker_readiness.py).
        "readinessProbe": worker_readiness_probe(plan.deployment),
        **key_volumes,
    }
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": DRAIN_SECONDS,
        "topologySpreadConstraints": [
            # Hard: two replicas on one node would make that node a single point of failure.
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": selector,
            },
            # Soft: accelerator capacity is often offered in fewer zones than the VPC spans;
            # a hard zone rule would leave a replica Pending rather than serving.
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": selector,
            },
        ],
    }
    if inputs.worker_service_account:
        pod_spec["serviceAccountName"] = inputs.worker_service_account
    if inputs.api_keys is not None:
        # A Secret volume (not subPath, not env): the kubelet updates it in place.
        pod_spec["volumes"] = [{
            "name": "api-keys",
            "secret": {
                "secretName": inputs.api_keys.name,
                "items": [{"key": inputs.api_keys.key, "path": inputs.api_keys.key}],
            },
        }]
    accelerator = workers.accelerator
    if accelerator is not None:
        pod_spec["nodeSelector"] = accelerator.node_labels()
        pod_spec["tolerations"] = [accelerator.toleration()]
    ray_resources = None
    if plan.capacity_type is not None:
        # Only nodes of the group's capacity type, in either capacity mode; its workers offer
        # the Ray resource that the replicas of its deployment (and only those) require.
        pod_spec["affinity"] = required_node_affinity(capacity_type_terms(plan.capacity_type, []))
        ray_resources = {CAPACITY_RESOURCES[plan.capacity_type]: "1"}
    return worker_group(
        group_name=plan.name,
        min_replicas=plan.min_replicas,
        max_replicas=plan.max_replicas,
        container=container,
        labels={RAYSERVICE_LABEL: inputs.name},
        accelerator=accelerator,
        devices=workers.resources.devices,
        pod_spec=pod_spec,
        ray_resources=ray_resources,
    )


# A model replica takes minutes to load: do not give a node back for a short lull.
WORKER_IDLE_TIMEOUT_S = 600


def _autoscaling(workers: RayWorkers) -> dict[str, Any]:
    if workers.max_replicas == workers.min_replicas:
        return {"enableInTreeAutoscaling": False}
    # Ray's autoscaler adds worker pods when Serve autoscaling asks for more replicas.
    return autoscaling(WORKER_IDLE_TIMEOUT_S)


def rayservice_spec(inputs: RayServiceInputs) -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {
            "name": inputs.name,
            "namespace": inputs.namespace,
            **(
                {"annotations": {INITIALIZING_TIMEOUT_ANNOTATION: f"{inputs.initializing_timeout_minutes}m"}}
                if inputs.initializing_timeout_minutes is not None
                else {}
            ),
        },
        "spec": {
            "serveConfigV2": serve_config_yaml(inputs.serving),
            # Serve traffic goes only to worker proxies: the head restarts in the HA drill,
            # and a request routed to its proxy would fail.
            "excludeHeadPodFromServeSvc": True,
            # A changed cluster spec gets a new RayCluster (and a fresh Redis namespace, from
            # its new UID); traffic switches once it is ready. The incremental variant needs
            # the Gateway API, which this cluster does not run.
            "upgradeStrategy": {"type": "NewCluster"},
            "rayClusterDeletionDelaySeconds": DRAIN_SECONDS,
            **serve_service_template(inputs.name, inputs.serve_load_balancer),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                # The operator generates a token Secret and sets it on every Ray container:
                # nothing else in the cluster can drive the dashboard or the GCS.
                "authOptions": {"mode": "token"},
                "gcsFaultToleranceOptions": {
                    "redisAddress": inputs.gcs_store.address,
                    "redisPassword": {"valueFrom": inputs.gcs_store.password.env_source()},
                },
                **_autoscaling(inputs.workers),
                "headGroupSpec": _head_group(inputs),
                "workerGroupSpecs": [_worker_group(inputs, plan) for plan in inputs.workers.groups()],
            },
        },
    }


def worker_disruption_budget(inputs: RayServiceInputs) -> dict[str, Any]:
    """Node drains and consolidation evict one worker at a time: one replica is always up."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{inputs.name}-workers", "namespace": inputs.namespace},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": worker_selector(inputs.name)}},
    }


class RayServiceChart(cdk8s.Chart):
    """The RayService and its workers' PodDisruptionBudget."""

    def __init__(self, scope: Construct, construct_id: str, *, inputs: RayServiceInputs) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.inputs = inputs
        if inputs.worker_service_account:
            # Before the RayService in the manifest: worker pods need it to start.
            add_api_object(self, {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": inputs.worker_service_account, "namespace": inputs.namespace},
            })
        self.rayservice = add_api_object(self, rayservice_spec(inputs))
        self.disruption_budget = add_api_object(self, worker_disruption_budget(inputs))
