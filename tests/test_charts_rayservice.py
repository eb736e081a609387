"""RayService chart: GCS fault tolerance, head and worker placement, the PDB, and refusals."""

from __future__ import annotations

import re

import cdk8s
import pytest
import yaml

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import ACCELERATORS, NEURON, NVIDIA
from ray_serve_ha.charts.rayservice import (
    RAYSERVICE_LABEL,
    PodResources,
    RayServiceChart,
    RayServiceInputs,
    accelerator_workers,
    rayservice_spec,
    worker_disruption_budget,
)
from ray_serve_ha.charts.secrets import HUGGING_FACE_TOKEN
from ray_serve_ha.charts.serve_config import serve_config
from ray_serve_ha.charts.serve_service import openai_base_url
from tests.chart_inputs import eks_inputs


@pytest.fixture(scope="module", params=list(ACCELERATORS))
def accelerator(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def inputs(accelerator) -> RayServiceInputs:
    return eks_inputs(accelerator)


@pytest.fixture(scope="module")
def chart_objects(inputs) -> list[dict]:
    return RayServiceChart(cdk8s.App(), "rayservice", inputs=inputs).to_json()


@pytest.fixture(scope="module")
def rayservice(chart_objects) -> dict:
    (rayservice,) = [o for o in chart_objects if o["kind"] == "RayService"]
    return rayservice


@pytest.fixture(scope="module")
def cluster(rayservice) -> dict:
    return rayservice["spec"]["rayClusterConfig"]


@pytest.fixture(scope="module")
def head_pod(cluster) -> dict:
    return cluster["headGroupSpec"]["template"]


@pytest.fixture(scope="module")
def worker_group(cluster) -> dict:
    (group,) = cluster["workerGroupSpecs"]
    return group


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_chart_emits_exactly_the_spec_functions_output(chart_objects, inputs):
    assert chart_objects == [rayservice_spec(inputs), worker_disruption_budget(inputs)]


# --- GCS fault tolerance ---------------------------------------------------------------

def test_gcs_store_is_elasticache_over_tls_with_the_password_from_a_secret(cluster):
    assert cluster["gcsFaultToleranceOptions"] == {
        "redisAddress": "rediss://master.gcs.example.cache.amazonaws.com:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "gcs-store-auth", "key": "password"}}},
    }


def test_storage_namespace_is_left_to_kuberay(rayservice, cluster):
    # A new RayCluster (upgrade) must get a fresh Redis namespace from its new UID.
    assert "externalStorageNamespace" not in cluster["gcsFaultToleranceOptions"]
    assert "ray.io/external-storage-namespace" not in rayservice["metadata"].get("annotations", {})


def test_no_legacy_fault_tolerance_settings(rayservice, head_pod, cluster):
    # The one annotation is the initializing time-out: no ray.io/ft-enabled, no storage namespace.
    assert set(rayservice["metadata"]["annotations"]) == {"ray.io/initializing-timeout"}
    head_env = env_of(head_pod["spec"]["containers"][0])
    for legacy in ("RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "REDIS_USERNAME"):
        assert legacy not in head_env
    assert not {"redis-password", "redis-username"} & set(cluster["headGroupSpec"]["rayStartParams"])


def test_head_trusts_the_system_ca_bundle_for_elasticache_tls(head_pod):
    env = env_of(head_pod["spec"]["containers"][0])
    assert env["RAY_REDIS_CA_CERT"] == {"name": "RAY_REDIS_CA_CERT", "value": "/etc/ssl/certs/ca-certificates.crt"}


def test_head_pod_runs_the_serve_watchdog_beside_ray_with_the_token_handed_over(head_pod, inputs):
    """The watchdog container: the same image (it holds ray_serve_llm), the head's dashboard
    on the pod's loopback, the Ray token from a memory volume that only these two
    containers mount, Guaranteed QoS like the head, and nothing of the Kubernetes API."""
    ray_head, watchdog = head_pod["spec"]["containers"]
    assert watchdog["image"] == inputs.image == ray_head["image"]
    assert watchdog["command"] == ["python", "-m", "ray_serve_llm.serve_watchdog", "watch",
                                   "--dashboard", "http://127.0.0.1:8265"]
    assert env_of(watchdog)["RAY_AUTH_TOKEN_PATH"]["value"] == "/var/run/ray-serve-watchdog/token"
    assert watchdog["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                                     "limits": {"cpu": "100m", "memory": "128Mi"}}
    assert watchdog["securityContext"]["readOnlyRootFilesystem"] is True
    (volume,) = [v for v in head_pod["spec"]["volumes"] if v["name"] == "serve-watchdog-token"]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert watchdog["volumeMounts"] == [{"name": "serve-watchdog-token", "mountPath": "/var/run/ray-serve-watchdog",
                                         "readOnly": True}]
    assert ray_head["volumeMounts"] == [{"name": "serve-watchdog-token", "mountPath": "/var/run/ray-serve-watchdog"}]
    hook = ray_head["lifecycle"]["postStart"]["exec"]["command"]
    assert hook[:2] == ["sh", "-c"] and "umask 077" in hook[2] and hook[2].endswith("; true")
    assert "serviceAccountName" not in head_pod["spec"]


def test_the_token_hand_over_writes_only_the_token_and_never_fails(tmp_path):
    """The postStart hook run for real with sh: it writes the token 0600, and with no token
    (auth off) it writes nothing and still succeeds (a failing hook kills the container)."""
    import subprocess

    from ray_serve_ha.charts import serve_watchdog

    script = serve_watchdog.ray_container_additions()["lifecycle"]["postStart"]["exec"]["command"][2]
    script = script.replace(serve_watchdog.MOUNT_PATH, str(tmp_path))
    done = subprocess.run(["sh", "-c", script], env={"RAY_AUTH_TOKEN": "s3cr3t", "PATH": "/usr/bin:/bin"})
    token = tmp_path / "token"
    assert done.returncode == 0 and token.read_text() == "s3cr3t" and token.stat().st_mode & 0o777 == 0o600
    token.unlink()
    assert subprocess.run(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"}).returncode == 0
    assert list(tmp_path.iterdir()) == []


def test_a_deleted_worker_drains_within_its_grace_period(worker_group):
    """Ray drains the node on SIGTERM for longer than a replica's graceful shutdown and ends
    before the kubelet's SIGKILL."""
    from ray_serve_ha.charts.serve_config import GRACEFUL_SHUTDOWN_TIMEOUT_S

    spec = worker_group["template"]["spec"]
    drain = int(env_of(spec["containers"][0])["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"]["value"])
    assert GRACEFUL_SHUTDOWN_TIMEOUT_S < drain < spec["terminationGracePeriodSeconds"]
    assert (GRACEFUL_SHUTDOWN_TIMEOUT_S, drain, spec["terminationGracePeriodSeconds"]) == (60, 80, 90)


def test_reconnect_timeouts_short_on_the_head_long_on_workers(head_pod, worker_group):
    head_env = env_of(head_pod["spec"]["containers"][0])
    worker_env = env_of(worker_group["template"]["spec"]["containers"][0])
    assert head_env["RAY_gcs_rpc_server_reconnect_timeout_s"]["value"] == "20"
    assert worker_env["RAY_gcs_rpc_server_reconnect_timeout_s"]["value"] == "600"


# --- head ------------------------------------------------------------------------------

def test_head_runs_no_replicas_and_no_accelerator(cluster, head_pod, accelerator):
    assert cluster["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0"}
    container, watchdog = head_pod["spec"]["containers"]
    assert (container["name"], watchdog["name"]) == ("ray-head", "serve-watchdog")  # the Ray container first
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }
    spec = head_pod["spec"]
    assert "nodeSelector" not in spec and "tolerations" not in spec


def test_head_runs_on_on_demand_general_purpose_or_system_nodes_and_is_not_consolidated(head_pod):
    assert head_pod["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    terms = head_pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    as_sets = [{(e["key"], tuple(e["values"])) for e in t["matchExpressions"]} for t in terms]
    assert as_sets == [
        {("karpenter.sh/nodepool", (constants.HEADS_POOL,)), ("karpenter.sh/capacity-type", ("on-demand",))},
        {
            (constants.NODE_ROLE_LABEL, (constants.SYSTEM_NODE_ROLE,)),
            ("eks.amazonaws.com/capacityType", ("ON_DEMAND",)),
        },
    ]


# --- serving ---------------------------------------------------------------------------

def test_serve_config_is_the_shared_one_with_two_replicas_one_per_node(rayservice, inputs):
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert config == serve_config(inputs.serving)
    (deployment,) = config["applications"][0]["deployments"]
    assert deployment["autoscaling_config"]["min_replicas"] >= 2
    assert deployment["max_replicas_per_node"] == 1
    assert config["proxy_location"] == "EveryNode"


def test_serve_traffic_skips_the_head_and_ray_auth_is_on(rayservice, cluster):
    assert rayservice["spec"]["excludeHeadPodFromServeSvc"] is True
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["rayVersion"] == "2.60.0"  # token auth needs Ray >= 2.52


def test_upgrades_make_a_new_cluster_and_no_deprecated_fields(rayservice):
    spec = rayservice["spec"]
    assert spec["upgradeStrategy"] == {"type": "NewCluster"}
    assert spec["rayClusterDeletionDelaySeconds"] == 90
    assert not {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"} & set(spec)


@pytest.mark.parametrize(
    ("accelerator_name", "engine", "actor_options"),
    [("neuron", "neuron", {"resources": {"neuron_cores": 2}}), ("nvidia", "vllm", {"num_gpus": 1})],
)
def test_engine_and_replica_resources_follow_the_accelerator(accelerator_name, engine, actor_options):
    config = yaml.safe_load(rayservice_spec(eks_inputs(accelerator_name))["spec"]["serveConfigV2"])
    application = config["applications"][0]
    assert application["args"]["engine"] == engine
    assert application["deployments"][0]["ray_actor_options"] == actor_options


# --- workers ---------------------------------------------------------------------------

def test_workers_select_and_tolerate_their_accelerator_nodes(worker_group, accelerator):
    spec = worker_group["template"]["spec"]
    table = ACCELERATORS[accelerator]
    assert spec["nodeSelector"] == {constants.ACCELERATOR_LABEL: table.name}
    assert spec["tolerations"] == [{"key": table.taint_key, "operator": "Exists", "effect": "NoSchedule"}]


def test_workers_take_the_whole_node_less_what_karpenter_reserves(worker_group, accelerator):
    shape = ACCELERATORS[accelerator].instance_types[ACCELERATORS[accelerator].default_instance_type]
    resources = worker_group["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"]
    device = ACCELERATORS[accelerator].device_resource
    assert resources["limits"][device] == str(shape.devices)
    assert 0 < int(resources["limits"]["cpu"]) < shape.vcpus
    memory_gib = int(re.fullmatch(r"(\d+)Gi", resources["limits"]["memory"]).group(1))
    # Most of the node, but under Karpenter's estimate (tests/test_sizing.py checks it exactly).
    assert 0.8 * shape.memory_gib <= memory_gib < 0.925 * shape.memory_gib


@pytest.mark.parametrize(
    ("accelerator_name", "instance_type", "cpu", "memory", "devices"),
    [
        # inf2.8xlarge: Karpenter estimates 31.85 CPU / 115.5 GiB allocatable (234 max pods).
        ("neuron", "inf2.8xlarge", "31", "110Gi", 1),
        ("neuron", "inf2.24xlarge", "94", "334Gi", 6),
        ("nvidia", "g6e.xlarge", "3", "26Gi", 1),
        ("nvidia", "g5.12xlarge", "47", "162Gi", 4),
    ],
)
def test_worker_sizes_per_instance_shape(accelerator_name, instance_type, cpu, memory, devices):
    workers = accelerator_workers(ACCELERATORS[accelerator_name], (instance_type,), 2, 2)
    assert workers.resources == PodResources(cpu=cpu, memory=memory, devices=devices)


def test_workers_fit_the_smallest_of_several_instance_types():
    workers = accelerator_workers(NVIDIA, ("g6e.2xlarge", "g6e.xlarge"), 2, 2)
    assert workers.resources == accelerator_workers(NVIDIA, ("g6e.xlarge",), 2, 2).resources


def test_neuron_workers_tell_ray_their_neuron_cores(worker_group, accelerator):
    device = ACCELERATORS[accelerator].ray_device
    if device.resource is not None:
        # inf2.8xlarge, trn1.2xlarge: one chip, two NeuronCores; the replica asks for two.
        assert worker_group["resources"] == {device.resource: "2"}
    else:
        assert "resources" not in worker_group  # KubeRay derives num-gpus from nvidia.com/gpu
    assert worker_group["rayStartParams"] == {}


def test_at_least_two_workers(worker_group):
    assert worker_group["minReplicas"] >= 2
    assert worker_group["replicas"] == worker_group["minReplicas"]


def test_workers_spread_over_nodes_strictly_and_zones_softly(worker_group, inputs):
    spec = worker_group["template"]["spec"]
    labels = {**worker_group["template"]["metadata"]["labels"], "ray.io/node-type": "worker"}
    by_key = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    assert set(by_key) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert by_key["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert by_key["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in by_key.values():
        assert constraint["maxSkew"] == 1
        selector = constraint["labelSelector"]["matchLabels"]
        assert selector.items() <= labels.items(), "the selector must match the worker pods"


def test_hugging_face_token_comes_from_the_synced_secret(worker_group):
    env = env_of(worker_group["template"]["spec"]["containers"][0])
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": HUGGING_FACE_TOKEN.name, "key": HUGGING_FACE_TOKEN.key}},
    }
    assert "value" not in env["HF_TOKEN"]


def test_autoscaling_only_when_workers_may_grow():
    fixed = rayservice_spec(eks_inputs("neuron", max_workers=2))["spec"]["rayClusterConfig"]
    growing = rayservice_spec(eks_inputs("neuron", max_workers=4))["spec"]["rayClusterConfig"]
    assert fixed["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in fixed
    assert growing["enableInTreeAutoscaling"] is True
    assert growing["workerGroupSpecs"][0]["maxReplicas"] == 4
    assert yaml.safe_load(rayservice_spec(eks_inputs("neuron", max_workers=4))["spec"]["serveConfigV2"])[
        "applications"
    ][0]["deployments"][0]["autoscaling_config"]["max_replicas"] == 4


# --- PodDisruptionBudget ---------------------------------------------------------------

def test_pdb_lets_one_worker_go_at_a_time_and_selects_only_our_workers(chart_objects, worker_group, inputs):
    (pdb,) = [o for o in chart_objects if o["kind"] == "PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector == {"ray.io/node-type": "worker", RAYSERVICE_LABEL: inputs.name}
    # KubeRay sets ray.io/node-type itself; our label comes from the worker template.
    assert worker_group["template"]["metadata"]["labels"] == {RAYSERVICE_LABEL: inputs.name}


def test_serve_service_url_follows_kuberay_naming():
    assert openai_base_url("ray-serve-llm", "ray-serving") == (
        "http://ray-serve-llm-serve-svc.ray-serving.svc.cluster.local:8000/v1"
    )


def test_serve_service_is_an_internal_nlb_from_auto_mode(rayservice):
    service = rayservice["spec"]["serveService"]
    assert service["metadata"] == {
        "name": "ray-serve-llm-serve-svc",
        "annotations": {"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"},
    }
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["loadBalancerClass"] == "eks.amazonaws.com/nlb"
    assert service["spec"]["ports"] == [{"name": "serve", "port": 8000, "targetPort": 8000}]


def test_serve_service_with_node_groups_uses_the_cloud_provider_nlb():
    spec = rayservice_spec(eks_inputs("neuron", capacity_mode="node-groups"))["spec"]["serveService"]
    assert "loadBalancerClass" not in spec["spec"]
    assert spec["metadata"]["annotations"] == {
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
        "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    }


def test_unknown_load_balancer_kind_is_refused():
    with pytest.raises(ValueError, match="serve_load_balancer 'alb' is not one of: auto-mode, node-groups"):
        eks_inputs("neuron", capacity_mode="alb")


@pytest.mark.parametrize("accelerator_name", list(ACCELERATORS))
def test_kuberay_gives_up_only_after_a_first_start_could_have_finished(accelerator_name):
    from ray_serve_ha.charts.replica_start import NODE_LAUNCH_S, start_seconds

    annotations = rayservice_spec(eks_inputs(accelerator_name))["metadata"]["annotations"]
    minutes = int(annotations["ray.io/initializing-timeout"].removesuffix("m"))
    # A first deploy: a node launches, the image is pulled, the weights downloaded, the model
    # compiled (no cache yet) and loaded; the time-out leaves that twice over, in 5-minute steps.
    first_start_s = NODE_LAUNCH_S + start_seconds(ACCELERATORS[accelerator_name], cached=False)
    assert 2 * first_start_s <= minutes * 60 < 2 * first_start_s + 5 * 60


def test_the_initializing_timeout_on_inferentia2_and_a_gpu():
    from ray_serve_ha.charts.replica_start import NODE_LAUNCH_S, start_seconds

    # Neuron: 120 s + 53 + 15 + 49 + 600 + 40 = 877 s; NVIDIA: 120 + 40 + 15 + 49 + 90 + 30 = 344 s.
    assert [NODE_LAUNCH_S + start_seconds(a, cached=False) for a in (NEURON, NVIDIA)] == [877, 344]
    assert [rayservice_spec(eks_inputs(a.name))["metadata"]["annotations"] for a in (NEURON, NVIDIA)] == [
        {"ray.io/initializing-timeout": "30m"}, {"ray.io/initializing-timeout": "15m"}
    ]


def test_the_kind_profile_sets_no_initializing_timeout():
    from ray_serve_ha.charts.profiles import KindDeployment, kind_rayservice_inputs

    assert "annotations" not in rayservice_spec(kind_rayservice_inputs(KindDeployment()))["metadata"]
