"""The drill's statistics, its target guard, its arguments (each checked before any traffic
or fault), its clients' retries, and the Kubernetes client's key handling."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from local.drill.backends import DrillError
from local.drill.load import SEQUENTIAL, Sample
from local.drill.stats import Timeline, build_report, format_table, percentile
from local.topology import ForeignTargetError, check_local_target

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


def test_one_lost_request_fails_the_drill_unless_told_otherwise():
    from local.drill.__main__ import _parser

    assert _parser().parse_args([]).max_failed == 0
    assert _parser().parse_args(["--max-failed", "3"]).max_failed == 3


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
         "the worker fault is local only; on Kubernetes the drill can: head, head-graceful, worker-drain"),
        (["--backend", "kubernetes", "--url", "http://127.0.0.1:8000", "--fault", "redis-crash"],
         "the redis-crash fault is local only: on EKS, test the ElastiCache failover"),
        (["--no-ft", "--fault", "redis-freeze"], "the redis-freeze fault needs the GCS store"),
        (["--fault", "meteor"], "argument --fault: invalid choice: 'meteor'"),
        (["--streams", "-1"], "argument --streams: -1 must be at least 0 and at most 256"),
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
    assert len(options) == 19
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


def test_streams_retry_only_before_their_first_token_and_must_end_with_done():
    """A stream that broke after tokens were shown is failed (a retry would start the answer
    over); one refused before its first token is retried, as the SDK retries."""
    from local.drill.load import LoadGenerator, LoadSpec

    bodies = [
        httpx.Response(503),  # before any token: retried
        httpx.Response(200, content=b"data: {\"x\": 1}\n\ndata: [DONE]\n\n"),
        httpx.Response(200, content=b"data: {\"x\": 1}\n\n"),  # cut after a token: failed, not retried
        httpx.Response(200, content=b"data: [DONE]\n\n"),  # nothing streamed
    ]

    def handle(request):
        assert json.loads(request.content)["stream"] is True
        return bodies.pop(0)

    spec = LoadSpec(base_url="http://drill.test", model="m", clients=0, streams=1, retry_initial_delay_s=0.001)
    load = LoadGenerator(spec, 0.0)
    body = {"stream": True}

    async def three_streams():
        async with httpx.AsyncClient(base_url=spec.base_url, transport=httpx.MockTransport(handle)) as http:
            return [await load._stream(http, body) for _ in range(3)]

    assert asyncio.run(three_streams()) == [
        (True, "", 1), (False, "stream ended without [DONE] after 1 chunks", 0), (False, "empty stream", 0)]


def test_the_report_counts_streams_in_flight_when_the_fault_struck():
    samples = [
        Sample(1.0, 0.5, True, "stream-1"),  # over before the fault
        Sample(9.5, 1.0, True, "stream-1"),  # in flight at 10 s, finished
        Sample(9.8, 0.4, True, "stream-2"),  # in flight, finished
        Sample(10.5, 0.3, False, "stream-2", "ReadError after 3 chunks"),
        Sample(9.9, 0.2, True, "client-1"),  # not a stream
    ]
    report = build_report(samples, Timeline(fault_at=10.0, restarted_at=None, healthy_at=20.0, ended_at=30.0),
                          fault="worker-drain", backend="local", fault_tolerance=True)
    assert report.streams == {"requests": 4, "in_flight_at_fault": 2, "failed": 1}
    assert "streams: 4, 2 in flight when the fault struck, 1 failed" in format_table(report)


def test_a_lost_replica_counts_as_replaced_only_by_one_that_was_not_there_before():
    """A replacement's start time is when Serve asked for it, which can be before a fault that
    lands during the recovery: the drill waits for a RUNNING replica on the node that was not
    there before the fault, not for a later start time."""
    from local.drill.backends import LocalBackend
    from local.stack import StackState

    def status(*replicas: tuple[str, str, str, float]) -> dict:
        return {"status": "RUNNING", "deployments": {"LLMServer": {
            "status": "HEALTHY", "target_num_replicas": 2,
            "replicas": [{"replica_id": i, "node_ip": ip, "state": state, "start_time_s": t}
                         for i, ip, state, t in replicas]}}}

    class Stack:
        state = StackState(fault_tolerance=True)
        answer: dict | None = None
        def serve_status(self):
            return self.answer

        def proxies_down(self):
            return []

    stack = Stack()
    backend = LocalBackend(stack)
    stack.answer = status(("a", "10.213.7.11", "RUNNING", 1.0), ("late", "10.213.7.12", "STARTING", 50.0))
    before = backend._replicas_on("10.213.7.12")
    assert before == {"late"}
    backend._replaced_on = ("10.213.7.12", 100.0, set())  # nothing on the node before the fault
    stack.answer = status(("a", "10.213.7.11", "RUNNING", 1.0), ("late", "10.213.7.12", "RUNNING", 50.0))
    assert backend.serve_healthy()  # started before the fault, but a replacement all the same
    backend._replaced_on = ("10.213.7.12", 100.0, {"late"})
    assert not backend.serve_healthy()  # the replica the fault took, still listed
    stack.answer = status(("a", "10.213.7.11", "RUNNING", 1.0), ("new", "10.213.7.12", "RUNNING", 120.0))
    assert backend.serve_healthy()
    backend._replaced_on = ("10.213.7.12", 130.0, None)  # Serve did not answer at the fault: by start time
    assert not backend.serve_healthy()


def test_serve_is_healthy_only_while_every_workers_proxy_answers(tmp_path):
    """Serve's status can count a restarted worker's replica RUNNING before the proxy on that
    node listens: healthy waits for each worker's proxy health route, as the serve Service's
    readiness and a load balancer's health check do."""
    from local.drill.backends import LocalBackend
    from local.stack import LocalStack, StackState

    class Proxy(BaseHTTPRequestHandler):
        code = 200

        def do_GET(self):
            self.send_response(Proxy.code if self.path == "/-/healthz" else 404)
            self.end_headers()

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Node:
        proxy_url = f"http://127.0.0.1:{server.server_address[1]}"

    with socket.socket() as spare:  # a port nothing listens on
        spare.bind(("127.0.0.1", 0))
        closed_port = spare.getsockname()[1]

    class Closed:
        proxy_url = f"http://127.0.0.1:{closed_port}"

    try:
        assert LocalStack.proxy_health(Node) == (True, "/-/healthz 200")
        Proxy.code = 503  # its node draining
        assert LocalStack.proxy_health(Node) == (False, "/-/healthz 503")
        ok, detail = LocalStack.proxy_health(Closed)
        assert not ok and detail.startswith("/-/healthz no answer") and "refused" in detail
    finally:
        server.shutdown()

    class Stack:
        state = StackState(fault_tolerance=True)
        down: tuple[str, ...] = ("worker-1",)

        def serve_status(self):
            return {"status": "RUNNING", "deployments": {"LLMServer": {
                "status": "HEALTHY", "target_num_replicas": 1,
                "replicas": [{"replica_id": "a", "node_ip": "10.213.7.11", "state": "RUNNING"}]}}}

        def proxies_down(self):
            return list(self.down)

    stack = Stack()
    backend = LocalBackend(stack)
    assert not backend.serve_healthy()
    stack.down = ()
    assert backend.serve_healthy()
