"""The kind profile: KubeRay's HA quick start with our charts (in-cluster Redis, CPU workers,
a tiny model) and the query Job, whose script is run here against a stub server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cdk8s
import pytest
import yaml

from ray_serve_ha.charts.profiles import TINY_MODEL_ID, TINY_MODEL_PATH, KindDeployment, kind_charts
from ray_serve_ha.charts.query_job import QUERY_SCRIPT
from ray_serve_ha.charts.redis import KIND_REDIS_PASSWORD


@pytest.fixture(scope="module")
def charts():
    return kind_charts(cdk8s.App(), KindDeployment())


@pytest.fixture(scope="module")
def objects(charts) -> dict[str, dict]:
    return {
        f"{o['kind']}/{o['metadata']['name']}": o for chart in charts.in_apply_order() for o in chart.to_json()
    }


@pytest.fixture(scope="module")
def cluster(objects) -> dict:
    return objects["RayService/ray-serve-llm"]["spec"]["rayClusterConfig"]


def test_apply_order_puts_redis_before_the_rayservice(charts):
    assert [c.node.id for c in charts.in_apply_order()] == ["namespace", "redis", "rayservice", "gradio", "query"]


def test_redis_is_pinned_and_requires_the_password_from_its_secret(objects):
    secret = objects["Secret/gcs-store-auth"]
    assert secret["stringData"] == {"password": KIND_REDIS_PASSWORD}
    (container,) = objects["Deployment/redis"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "redis:7.4.5"
    assert container["args"][:2] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert container["env"] == [
        {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "gcs-store-auth", "key": "password"}}}
    ]
    service = objects["Service/redis"]["spec"]
    assert service["ports"][0]["port"] == 6379
    assert service["selector"] == objects["Deployment/redis"]["spec"]["template"]["metadata"]["labels"]


def test_gcs_store_is_the_in_cluster_redis_without_tls(cluster):
    assert cluster["gcsFaultToleranceOptions"] == {
        "redisAddress": "redis://redis.ray-serving.svc.cluster.local:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "gcs-store-auth", "key": "password"}}},
    }
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert "RAY_REDIS_CA_CERT" not in {e["name"] for e in head["containers"][0]["env"]}
    assert "affinity" not in head  # kind nodes carry no Karpenter or node-group labels
    assert "annotations" not in cluster["headGroupSpec"]["template"]["metadata"]


def test_workers_are_cpu_only_and_land_anywhere(cluster):
    (group,) = cluster["workerGroupSpecs"]
    spec = group["template"]["spec"]
    assert group["groupName"] == "cpu"
    assert "nodeSelector" not in spec and "tolerations" not in spec and "resources" not in group
    assert spec["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "3Gi"}
    assert "HF_TOKEN" not in {e["name"] for e in spec["containers"][0]["env"]}


def test_serves_the_tiny_model_with_the_transformers_engine(objects):
    config = yaml.safe_load(objects["RayService/ray-serve-llm"]["spec"]["serveConfigV2"])
    application = config["applications"][0]
    assert application["args"]["engine"] == "transformers"
    # The CPU image builds the tiny model into TINY_MODEL_PATH; clients call it by name.
    assert application["args"]["model_id"] == TINY_MODEL_PATH
    assert application["args"]["served_model_name"] == TINY_MODEL_ID
    assert application["deployments"][0]["ray_actor_options"] == {"num_cpus": 1}


def test_query_job_runs_the_shipped_script_against_the_serve_service(objects):
    assert objects["ConfigMap/ha-query"]["data"] == {"ha_query.py": QUERY_SCRIPT.read_text()}
    job = objects["Job/ha-query"]["spec"]
    assert job["backoffLimit"] == 0
    (container,) = job["template"]["spec"]["containers"]
    assert container["command"] == ["python", "/scripts/ha_query.py"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OPENAI_BASE_URL"] == "http://ray-serve-llm-serve-svc.ray-serving.svc.cluster.local:8000/v1"
    assert env["MODEL_ID"] == TINY_MODEL_ID


def run_query_script(answers: list) -> subprocess.CompletedProcess:
    """Runs the Job's script against a stub of Serve's OpenAI route that gives `answers` in
    turn: an HTTP status (200 with a chat completion) or "garbage" (200, not JSON)."""
    pending = iter(answers)

    class StubServe(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions" and body["model"] == TINY_MODEL_ID
            answer = next(pending)
            completion = {"choices": [{"message": {"role": "assistant", "content": "hello"}}]}
            payload = b"garbage" if answer == "garbage" else json.dumps(completion).encode()
            self.send_response(200 if answer == "garbage" else answer)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), StubServe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1",
            "MODEL_ID": TINY_MODEL_ID,
            "REQUEST_COUNT": str(len(answers)),
            "REQUEST_TIMEOUT_S": "5",
        }
        return subprocess.run(
            [sys.executable, str(QUERY_SCRIPT)], env=env, capture_output=True, text=True, timeout=30
        )
    finally:
        server.shutdown()


def summary(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith(("req_index", "requests:"))]


def test_query_script_counts_failures_like_kuberays_query_py():
    result = run_query_script([200, 503, "garbage"])
    assert summary(result) == [
        "req_index : 0, num_fail: 0",
        "req_index : 1, num_fail: 0",
        "req_index : 2, num_fail: 1",
        "requests: 3, num_fail: 2",
    ]
    assert result.returncode == 1, "a run with failures must fail the Job"


def test_query_script_passes_when_every_request_is_answered():
    result = run_query_script([200, 200])
    assert summary(result)[-1] == "requests: 2, num_fail: 0"
    assert result.returncode == 0, result.stdout
