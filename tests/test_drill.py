"""The drill's statistics, its target guard, and its Kubernetes backend against a real local
HTTP server that speaks the parts of the Kubernetes API the drill uses."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import threading
from http.server import ThreadingHTTPServer

import httpx
import pytest

from local.drill.__main__ import run_drill
from local.drill.backends import DrillError, KubernetesBackend
from local.drill.load import SEQUENTIAL, Sample
from local.drill.stats import Timeline, build_report, format_table, percentile
from local.topology import ForeignTargetError, check_local_target
from tests.fakes.drill_cluster import FakeCluster, api_handler

# ---- statistics ------------------------------------------------------------------------

def test_percentile_interpolates_between_ranks():
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(1, 101))), 99) == pytest.approx(99.01)


def test_samples_are_split_into_before_during_and_after_the_fault():
    samples = [
        Sample(1.0, 0.010, True, "client-1"),
        Sample(11.0, 0.020, True, "client-1"),
        Sample(12.0, 0.500, False, SEQUENTIAL, "ConnectError", retries=2),
        Sample(13.0, 0.040, True, "client-2", retries=1),
        Sample(31.0, 0.030, True, "client-1"),
    ]
    report = build_report(
        samples, Timeline(fault_at=10.0, restarted_at=20.0, healthy_at=30.0, ended_at=41.0),
        fault="head", backend="local", fault_tolerance=True,
    )
    assert [report.phases[phase].requests for phase in ("before", "during", "after")] == [1, 3, 1]
    assert report.phases["during"].failed == 1
    assert report.phases["during"].retried == 2  # the failed one and the one a retry saved
    assert report.phases["during"].p50_ms == 30.0  # failed requests carry no latency
    assert report.total.failed == 1 and report.sequential_failures == 1
    assert (report.fault_to_healthy_s, report.restart_to_healthy_s) == (20.0, 10.0)
    assert report.requests_per_second == pytest.approx(0.1)  # 5 in 40 s, one decimal
    assert report.errors == {"ConnectError": 1}
    assert report.passed and report.problems == []
    table = format_table(report)
    assert "during           3       1        2       30     39.8       40" in table
    assert "Serve healthy again: 20 s after the fault (10 s after the restart)" in table
    assert table.endswith("PASSED")


def test_too_many_failures_and_restarted_bystanders_fail_the_drill():
    report = build_report(
        [Sample(1.0, 0.01, False, "client-1", "HTTP 500", retries=2)],
        Timeline(fault_at=0.5, restarted_at=1.0, healthy_at=2.0, ended_at=3.0),
        fault="head", backend="local", fault_tolerance=True, max_failed=0,
        recovery={"unplanned_restarts": ["worker-2"]},
    )
    assert report.problems == [
        "1 requests failed (--max-failed 0)",
        "nodes the fault did not touch were restarted: ['worker-2']",
    ]
    assert format_table(report).endswith(
        "FAILED: 1 requests failed (--max-failed 0); nodes the fault did not touch were restarted: ['worker-2']")


def test_a_drill_that_never_recovers_says_so():
    report = build_report(
        [Sample(1.0, 0.01, True, "client-1"), Sample(15.0, 0.01, False, "client-1", "ConnectError")],
        Timeline(fault_at=10.0, restarted_at=None, healthy_at=None, ended_at=60.0),
        fault="head", backend="local", fault_tolerance=False, recovery_timeout_s=30,
    )
    assert report.phases["during"].failed == 1 and report.phases["after"].requests == 0
    assert report.fault_to_healthy_s is None
    assert not report.passed
    table = format_table(report)
    assert "Serve healthy again: never, within the drill" in table
    assert table.endswith("FAILED: Serve was not healthy again within --recovery-timeout 30 s")


# ---- target guard ----------------------------------------------------------------------

@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://10.213.7.11:8000/v1", "http://localhost:7860"])
def test_local_drill_accepts_loopback_and_its_own_namespaces(url):
    assert check_local_target(url) == url


@pytest.mark.parametrize(
    "url",
    ["http://10.213.7.99:8000", "http://10.0.0.5:8000", "http://192.168.1.10:8000", "http://8.8.8.8",
     "http://example.com:8000"],
)
def test_local_drill_refuses_any_other_target(url):
    with pytest.raises(ForeignTargetError, match="refusing target"):
        check_local_target(url)


def test_local_backend_checks_the_target_before_sending_anything():
    from local.drill.backends import LocalBackend
    from local.stack import StackState

    class Stack:
        state = StackState(fault_tolerance=True)

    with pytest.raises(ForeignTargetError):
        LocalBackend(Stack(), "http://10.0.0.5:8000")


# ---- Kubernetes backend ----------------------------------------------------------------



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
    assert code == 1  # whatever --max-failed says (none given here)
    assert "FAILED: Serve was not healthy again within --recovery-timeout 1.5 s" in capsys.readouterr().err
    report = json.loads((tmp_path / "drill-kubernetes-head.json").read_text())
    assert report["fault_to_healthy_s"] is None
    assert report["problems"] == ["Serve was not healthy again within --recovery-timeout 1.5 s"]


# ---- arguments: every one checked before any traffic or fault ------------------------------


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--clients", "0"], "argument --clients: 0 must be at least 1 and at most 256"),
        (["--clients", "100000"], "argument --clients: 100000 must be at least 1 and at most 256"),
        (["--clients", "two"], "argument --clients: 'two' is not an integer"),
        (["--grace", "-1"], "argument --grace: -1 must be at least 0 and at most 600"),
        (["--outage", "nan"], "argument --outage: nan must be at least 0 and at most 600"),
        (["--recovery-timeout", "0"], "argument --recovery-timeout: 0 must be above 0 and at most 3600"),
        (["--max-failed", "-1"], "argument --max-failed: -1 must be at least 0 and at most 1e+09"),
        (["--out", "/etc/hostname"], "--out /etc/hostname is not a folder"),
        (
            ["--out", "/etc/hostname/drill"],
            "--out /etc/hostname/drill cannot be created: /etc/hostname is not a writable folder",
        ),
        (["--url", "http://10.0.0.5:8000"], "refusing target 'http://10.0.0.5:8000'"),
        (["--no-ft", "--fault", "redis"], "the redis fault needs the GCS store"),
        (["--load-balancer", "lb"], "--load-balancer is for --backend kubernetes"),
        (["--backend", "kubernetes"], "--backend kubernetes needs --url"),
        (["--backend", "kubernetes", "--url", "http://127.0.0.1:8000", "--fault", "redis"],
         "the redis fault is local only"),
        (["--backend", "kubernetes", "--url", "http://127.0.0.1:8000", "--fault", "worker"],
         "the worker fault is local only; on Kubernetes the drill can: head, head-graceful"),
        (["--backend", "kubernetes", "--url", "http://127.0.0.1:8000", "--no-ft"], "--no-ft is local only"),
        (["--backend", "kubernetes", "--url", "http://8.8.8.8:8000"],
         "refusing --url 'http://8.8.8.8:8000': the drill sends load only to loopback"),
        (["--backend", "kubernetes", "--url", "http://169.254.169.254/"], "refusing --url 'http://169.254.169.254/'"),
        (["--backend", "kubernetes", "--url", "http://internal-serve.elb.amazonaws.com:8000"],
         "name it with --load-balancer internal-serve.elb.amazonaws.com"),
        (["--backend", "kubernetes", "--url", "http://api.example.com:8000", "--load-balancer", "other.example.com"],
         "name it with --load-balancer api.example.com"),
        (["--backend", "kubernetes", "--url", "ftp://127.0.0.1/"], "is not an http(s) URL"),
    ],
)
def test_bad_arguments_are_refused_before_anything_happens(argv, message, capsys, monkeypatch):
    """Exit 2 with one message; no stack is looked up or started, no kubeconfig read, no
    request sent (each of those would fail loudly here)."""
    from local.drill import __main__ as drill

    def forbidden(*_, **__):
        raise AssertionError("the drill acted before validating its arguments")

    monkeypatch.setattr(drill, "run_drill", forbidden)
    monkeypatch.setattr(drill, "KubernetesBackend", forbidden)
    monkeypatch.setattr("local.stack.running_state", forbidden)
    monkeypatch.setattr("local.stack.LocalStack.up", forbidden)
    with pytest.raises(SystemExit) as exited:
        drill.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_the_named_load_balancer_must_resolve_to_private_addresses_only():
    from local.drill.__main__ import check_kubernetes_target

    # localhost stands for the load balancer's name here: it resolves to loopback.
    assert check_kubernetes_target("http://localhost:8000", None) == "http://localhost:8000"
    assert check_kubernetes_target("http://10.1.2.3:8000", None) == "http://10.1.2.3:8000"
    with pytest.raises(DrillError, match="does not resolve"):
        check_kubernetes_target("http://no-such-host.invalid:8000", "http://no-such-host.invalid:8000")


def test_every_option_shows_its_default_in_help(capsys):
    from local.drill.__main__ import _parser, main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    options = [a for a in _parser()._actions if a.option_strings != ["-h", "--help"]]
    assert len(options) == 17
    for action in options:
        # The option's own help text, as printed, ends with its default.
        help_string = _parser().formatter_class("x")._get_help_string(action)
        shown = " ".join((help_string % {"default": action.default}).split())
        assert re.search(r"\(default: [^)]+\)$", shown), action.option_strings
        assert shown.replace(" ", "") in text.replace(" ", "")  # as printed, wrapping aside


# ---- client retries -------------------------------------------------------------------------


def test_clients_retry_like_the_openai_sdk_and_count_it():
    """A replica dying under a request answers 500; the client's retry lands on a live one.
    A 400 is never retried."""
    from local.drill.load import LoadGenerator, LoadSpec

    answers = [500, 200, 400, 503, 503, 503]

    def handle(request):
        return httpx.Response(answers.pop(0), json={"choices": [{"message": {"content": "hi"}}]})

    spec = LoadSpec(base_url="http://drill.test", model="m", clients=0, retry_initial_delay_s=0.001)
    load = LoadGenerator(spec, 0.0)

    async def three_requests():
        async with httpx.AsyncClient(base_url=spec.base_url, transport=httpx.MockTransport(handle)) as http:
            return [await load._request(http, {}) for _ in range(3)]

    assert asyncio.run(three_requests()) == [(True, "", 1), (False, "HTTP 400", 0), (False, "HTTP 503", 2)]


# ---- the Kubernetes client leaves no key behind ---------------------------------------------


def test_an_embedded_client_key_is_not_left_on_disk(tmp_path, monkeypatch):
    import subprocess
    import tempfile

    from local.drill.kube import KubeConfig

    key = tmp_path / "k.pem"
    cert = tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=drill"], check=True, capture_output=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config_path = tmp_path / "kubeconfig"
    config_path.write_text(json.dumps({
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
                                          "client-key-data": base64.b64encode(key.read_bytes()).decode()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    config = KubeConfig.load(str(config_path))
    assert isinstance(config.verify, ssl.SSLContext) and config.client_cert is None
    assert list(scratch.iterdir()) == []  # written, loaded, deleted
