"""The drill's Kubernetes backend against a real local HTTP server that speaks the parts of
the Kubernetes API the drill uses (tests/fakes/drill_cluster.py): head and worker faults,
recovery as KubeRay reports it, credentials from the kubeconfig, and the command's gate."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import ThreadingHTTPServer

import pytest

from local.drill.__main__ import run_drill
from local.drill.backends import DrillError
from local.drill.kube_backend import KubernetesBackend
from tests.fakes.drill_cluster import FakeCluster, api_handler


@pytest.fixture
def fake_cluster(tmp_path):
    cluster = FakeCluster()
    server = ThreadingHTTPServer(("127.0.0.1", 0), api_handler(cluster))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "fake", "user": {"token": "test-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))
    yield cluster, url, str(kubeconfig)
    server.shutdown()


def backend_for(url: str, kubeconfig: str, name: str = "ray-serve-llm") -> KubernetesBackend:
    return KubernetesBackend(base_url=url, namespace="ray-serving", rayservice=name, kubeconfig=kubeconfig)


def test_head_fault_deletes_the_head_pod_without_grace(fake_cluster):
    cluster, url, kubeconfig = fake_cluster
    backend = backend_for(url, kubeconfig)
    times = backend.inject("head", outage_s=0, grace_s=10, clock=lambda: 5.0)
    assert (times.fault_at, times.restarted_at) == (5.0, None)
    assert cluster.deletions == [("ray-serve-llm-abcde-head-1", 0)]


def test_graceful_fault_passes_the_grace_period(fake_cluster):
    cluster, url, kubeconfig = fake_cluster
    backend_for(url, kubeconfig).inject("head-graceful", outage_s=0, grace_s=30, clock=lambda: 0.0)
    assert cluster.deletions == [("ray-serve-llm-abcde-head-1", 30)]


def test_healthy_only_once_a_new_head_pod_is_ready_and_serve_runs(fake_cluster):
    _cluster, url, kubeconfig = fake_cluster
    backend = backend_for(url, kubeconfig)
    backend.inject("head", outage_s=0, grace_s=0, clock=lambda: 0.0)
    answers = [backend.serve_healthy() for _ in range(4)]
    assert answers == [False, False, False, True]


def test_worker_drain_deletes_one_ready_worker_with_its_grace_period(fake_cluster):
    """A pod deleted as node expiry or a spot interruption deletes it: SIGTERM, then the grace
    period (Ray drains the node meanwhile). Healthy again only once the drained pod is gone and
    its replacement is Ready."""
    cluster, url, kubeconfig = fake_cluster
    backend = backend_for(url, kubeconfig)
    backend.inject("worker-drain", outage_s=0, grace_s=90, clock=lambda: 0.0)
    assert cluster.deletions == [("ray-serve-llm-abcde-cpu-worker-b", 90)]
    answers = [backend.serve_healthy() for _ in range(5)]
    assert answers[0] is False and answers[-1] is True


def test_worker_drain_is_refused_while_a_worker_is_not_ready(fake_cluster):
    cluster, url, kubeconfig = fake_cluster
    cluster.workers["ray-serve-llm-abcde-cpu-worker-b"] = 5
    with pytest.raises(DrillError, match=r"1 Ready worker pod\(s\): draining one would leave no replica serving"):
        backend_for(url, kubeconfig).inject("worker-drain", outage_s=0, grace_s=90, clock=lambda: 0.0)
    assert cluster.deletions == []


def test_redis_fault_is_refused_on_kubernetes(fake_cluster):
    _, url, kubeconfig = fake_cluster
    with pytest.raises(DrillError, match="aws elasticache test-failover"):
        backend_for(url, kubeconfig).inject("redis", outage_s=0, grace_s=0, clock=lambda: 0.0)


def test_a_missing_rayservice_is_a_clear_error(fake_cluster):
    _, url, kubeconfig = fake_cluster
    with pytest.raises(DrillError, match="cannot read RayService ray-serving/other: 404 NotFound"):
        backend_for(url, kubeconfig, name="other").head_pod()


def test_a_missing_kubeconfig_is_a_clear_error(tmp_path):
    with pytest.raises(DrillError, match=r"cannot read kubeconfig .*missing.*update-kubeconfig"):
        backend_for("http://127.0.0.1:1", str(tmp_path / "missing"))


def test_token_from_the_kubeconfig_is_sent(fake_cluster):
    cluster, url, kubeconfig = fake_cluster
    backend_for(url, kubeconfig).head_pod()
    assert cluster.authorizations and set(cluster.authorizations) == {"Bearer test-token"}


def test_exec_plugin_token_is_used(fake_cluster, tmp_path):
    cluster, url, _ = fake_cluster
    plugin = tmp_path / "get-token"
    plugin.write_text('#!/bin/sh\necho \'{"kind": "ExecCredential", "status": {"token": "k8s-aws-v1.abc"}}\'\n')
    plugin.chmod(0o755)
    kubeconfig = tmp_path / "exec-kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "eks",
        "clusters": [{"name": "eks", "cluster": {"server": url}}],
        "users": [{"name": "eks", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                                    "command": str(plugin), "args": ["eks", "get-token"]}}}],
        "contexts": [{"name": "eks", "context": {"cluster": "eks", "user": "eks"}}],
    }))
    backend_for(url, str(kubeconfig)).head_pod()
    assert "Bearer k8s-aws-v1.abc" in cluster.authorizations


def test_whole_drill_against_the_fake_cluster(fake_cluster):
    cluster, url, kubeconfig = fake_cluster
    backend = backend_for(url, kubeconfig)
    report, samples = asyncio.run(run_drill(
        backend, fault="head", clients=2, before_s=0.5, outage_s=0, grace_s=0, after_s=0.5,
        recovery_timeout_s=10, progress=lambda *a, **k: None,
    ))
    assert cluster.deletions and report.total.failed == 0
    assert report.total.requests == len(samples) > 10
    assert report.fault_to_healthy_s is not None and report.phases["after"].requests > 0


def drill_cli(url: str, kubeconfig: str, out) -> int:
    from local.drill.__main__ import main

    return main([
        "--backend", "kubernetes", "--url", url, "--kubeconfig", kubeconfig, "--clients", "1",
        "--before", "0.3", "--after", "0.3", "--recovery-timeout", "10", "--out", str(out), "--max-failed", "0",
        # A deleted pod is replaced at once: no outage to wait out after the fault.
        "--outage", "0",
    ])


def test_cli_passes_and_writes_the_report_and_timeline(fake_cluster, tmp_path):
    _, url, kubeconfig = fake_cluster
    assert drill_cli(url, kubeconfig, tmp_path) == 0
    report = json.loads((tmp_path / "drill-kubernetes-head.json").read_text())
    assert report["total"]["failed"] == 0 and report["backend"] == "kubernetes"
    assert (tmp_path / "drill-kubernetes-head.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_fails_the_gate_when_a_request_fails(fake_cluster, tmp_path, capsys):
    cluster, url, kubeconfig = fake_cluster
    cluster.chat_status = 503
    assert drill_cli(url, kubeconfig, tmp_path) == 1
    assert "requests failed (--max-failed 0)" in capsys.readouterr().err
    report = json.loads((tmp_path / "drill-kubernetes-head.json").read_text())
    assert report["problems"] and report["problems"][0].endswith("requests failed (--max-failed 0)")


def test_cli_fails_when_serve_is_not_healthy_within_the_recovery_timeout(fake_cluster, tmp_path, capsys):
    cluster, url, kubeconfig = fake_cluster
    cluster.never_ready = True
    from local.drill.__main__ import main

    code = main(["--backend", "kubernetes", "--url", url, "--kubeconfig", kubeconfig, "--clients", "1",
                 "--before", "0.2", "--after", "0", "--recovery-timeout", "1.5", "--outage", "0",
                 "--out", str(tmp_path)])
    assert code == 1  # whatever the requests did
    assert "FAILED: Serve was not healthy again within --recovery-timeout 1.5 s" in capsys.readouterr().err
    report = json.loads((tmp_path / "drill-kubernetes-head.json").read_text())
    assert report["fault_to_healthy_s"] is None
    assert report["problems"] == ["Serve was not healthy again within --recovery-timeout 1.5 s"]
