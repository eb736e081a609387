"""The Ray pods' environment is one fact: the RayService chart and the local stack's nodes
get the same reconnect timeouts and GCS health checks (ray_serve_ha/charts/ray_env.py), and the
supervisor uses KubeRay's probes. No Ray cluster, no root."""

from __future__ import annotations

import cdk8s
import pytest

from local.supervisor import backoff_s
from local.topology import HEAD, WORKERS
from local.units import NodeSettings, node_command, pod_env
from ray_serve_ha.charts import ray_env
from ray_serve_ha.charts.profiles import eks_rayservice_inputs
from ray_serve_ha.charts.rayservice import RayServiceChart
from tests.chart_inputs import example_eks_deployment

SETTINGS = NodeSettings(fault_tolerance=True, redis_password="pw", storage_namespace="local-x",
                        auth_token_path="/state/token")


@pytest.fixture(scope="module")
def pod_envs() -> tuple[dict[str, str], dict[str, str]]:
    objects = RayServiceChart(
        cdk8s.App(), "rs", inputs=eks_rayservice_inputs(example_eks_deployment("neuron"))
    ).to_json()
    (rayservice,) = [o for o in objects if o["kind"] == "RayService"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"]
    plain = lambda env: {e["name"]: e["value"] for e in env if "value" in e}  # noqa: E731
    return plain(head), plain(worker)


def test_the_chart_head_and_the_local_head_share_the_recovery_settings(pod_envs):
    chart_head, chart_worker = pod_envs
    local_head, local_worker = pod_env(HEAD, SETTINGS), pod_env(WORKERS[0], SETTINGS)
    assert ray_env.GCS_HEALTH_CHECK_ENV == {
        "RAY_health_check_initial_delay_ms": "1000",
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "20000",
        "RAY_health_check_failure_threshold": "3",
    }
    for name, value in ray_env.head_env().items():
        assert chart_head[name] == local_head[name] == value
    for name, value in ray_env.worker_env().items():
        assert chart_worker[name] == local_worker[name] == value
    # What KubeRay sets itself is not repeated in the chart; the local nodes get it as KubeRay would.
    assert not set(ray_env.KUBERAY_SET_ENV) & set(chart_head)
    assert (
        ray_env.KUBERAY_SET_ENV.items() <= local_head.items()
        and ray_env.KUBERAY_SET_ENV.items() <= local_worker.items()
    )


def test_a_dead_head_is_found_fast_a_busy_worker_is_not_declared_dead_for_a_partition():
    assert ray_env.refusing_node_declared_dead_after_s() == 3.0
    # The matrix cuts the head off for 30 s; a worker must survive twice that.
    assert ray_env.unresponsive_node_declared_dead_after_s() == 63.0 > 2 * 30


def test_local_nodes_use_token_auth_and_keep_secrets_out_of_their_environment():
    head = pod_env(HEAD, SETTINGS)
    assert head["RAY_AUTH_MODE"] == "token" and head["RAY_AUTH_TOKEN_PATH"] == "/state/token"
    assert "RAY_AUTH_TOKEN" not in head and "pw" not in head.values()
    assert head["RAY_external_storage_namespace"] == "local-x"
    assert "RAY_REDIS_ADDRESS" not in pod_env(WORKERS[0], SETTINGS)


def test_each_generation_gets_a_fresh_temp_dir_and_the_head_no_cpus():
    first, second = node_command(HEAD, SETTINGS, 1), node_command(HEAD, SETTINGS, 2)
    temp = lambda command: command[command.index("--temp-dir") + 1]  # noqa: E731
    assert temp(first) != temp(second) and temp(first).endswith("head-1")
    assert first[first.index("--num-cpus") + 1] == "0"
    worker = node_command(WORKERS[1], SETTINGS, 3)
    assert temp(worker).endswith("worker-2-3") and "--head" not in worker


def test_kuberay_probes_and_the_crash_loop_back_off():
    head, worker = ray_env.kuberay_liveness(True, 8265), ray_env.kuberay_liveness(False, 8265)
    assert head.paths == ((52365, "/api/local_raylet_healthz"), (8265, "/api/gcs_healthz"))
    assert worker.paths == ((52365, "/api/local_raylet_healthz"),)
    assert (head.period_s, head.failure_threshold, head.timeout_s, worker.timeout_s) == (5, 120, 5, 2)
    assert [backoff_s(n) for n in range(0, 7)] == [0, 1, 2, 4, 8, 8, 8]
