"""The availability probe (lambda/serve_probe) against a real local OpenAI-compatible HTTP
server on 127.0.0.1 that answers, answers slowly, and fails; CloudWatch PutMetricData is
checked exactly with botocore's Stubber (no AWS call is made)."""

from __future__ import annotations

import ast
import socket
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from tests.fakes.openai_serve import MODEL, SLOW_S, FakeServe, start_fake_serve
from tests.lambda_handlers import load_handler

probe = load_handler("serve_probe")

SERVICE = "ray-serve-ha"
DIMENSIONS = [{"Name": "Service", "Value": SERVICE}]
TIMEOUT_S = 0.5



@pytest.fixture(scope="module")
def server():
    serve = FakeServe()
    http_server = start_fake_serve(serve)
    yield serve, f"http://127.0.0.1:{http_server.server_address[1]}"
    http_server.shutdown()
    http_server.server_close()


@pytest.fixture
def serve(server):
    state, _ = server
    state.script[:] = ["ok"]
    state.models[:] = [MODEL]
    state.received.clear()
    return state


@pytest.fixture
def url(server):
    return server[1]


@pytest.fixture
def refused_url():
    """An address on this machine where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def cloudwatch():
    client = boto3.client(
        "cloudwatch", region_name="eu-west-3", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


class StepClock:
    """Each call advances `step` seconds: every request then takes exactly `step`."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 1000.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def config(url: str, **overrides) -> probe.ProbeConfig:
    values = dict(
        serve_url=url, service_name=SERVICE, model=None, requests=3, timeout_s=TIMEOUT_S, namespace="RayServeHA"
    )
    return probe.ProbeConfig(**{**values, **overrides})


def expected_metrics(requests: int, failed: int, latencies: dict[float, int] | None = None) -> list[dict]:
    data = [
        {
            "MetricName": "Availability",
            "Dimensions": DIMENSIONS,
            "Value": 100.0 * (requests - failed) / requests,
            "Unit": "Percent",
        },
        {"MetricName": "Requests", "Dimensions": DIMENSIONS, "Value": float(requests), "Unit": "Count"},
        {"MetricName": "FailedRequests", "Dimensions": DIMENSIONS, "Value": float(failed), "Unit": "Count"},
    ]
    if latencies:
        data.append(
            {
                "MetricName": "Latency",
                "Dimensions": DIMENSIONS,
                "Values": list(latencies),
                "Counts": [float(c) for c in latencies.values()],
                "Unit": "Milliseconds",
            }
        )
    return data


def expect_put(stubber: Stubber, data: list[dict], namespace: str = "RayServeHA") -> None:
    stubber.add_response("put_metric_data", {}, {"Namespace": namespace, "MetricData": data})


# ---------------------------------------------------------------------------------------
# Probing
# ---------------------------------------------------------------------------------------


def test_all_answers_make_full_availability(serve, url, cloudwatch):
    client, stubber = cloudwatch
    expect_put(stubber, expected_metrics(3, 0, {125.0: 3}))
    summary = probe.run_probe(config(url), client, clock=StepClock(0.125))
    assert summary == {
        "service": SERVICE,
        "model": MODEL,
        "requests": 3,
        "failed": 0,
        "availability": 100.0,
        "latency_ms": [125.0, 125.0, 125.0],
        "errors": [],
    }
    # The model came from /v1/models; then three small chat requests, one after another.
    assert serve.received[0] == ("GET", "/v1/models", None)
    chats = serve.received[1:]
    assert [(method, path) for method, path, _ in chats] == [("POST", "/v1/chat/completions")] * 3
    for _, _, body in chats:
        assert body["model"] == MODEL
        assert body["max_tokens"] == 8
        assert body["stream"] is False
        assert body["messages"][0]["role"] == "user"


def test_configured_model_skips_discovery(serve, url, cloudwatch):
    client, stubber = cloudwatch
    expect_put(stubber, expected_metrics(2, 0, {250.0: 2}), namespace="Custom")
    probe.run_probe(config(url, model="other-model", requests=2, namespace="Custom"), client, clock=StepClock(0.25))
    assert [(m, p) for m, p, _ in serve.received] == [("POST", "/v1/chat/completions")] * 2
    assert {body["model"] for _, _, body in serve.received} == {"other-model"}


def test_slow_answer_counts_as_failed(serve, url, cloudwatch):
    client, stubber = cloudwatch
    serve.script[:] = ["ok", "slow", "ok"]
    expect_put(stubber, expected_metrics(3, 1, {125.0: 2}))
    started = time.monotonic()
    summary = probe.run_probe(config(url), client, clock=StepClock(0.125))
    # The client gave up at the timeout instead of waiting for the slow answer.
    assert time.monotonic() - started < SLOW_S + 0.4
    assert summary["failed"] == 1
    assert summary["errors"] == ["TimeoutError: timed out"]


def test_answer_beyond_the_timeout_in_total_counts_as_failed(serve, url, cloudwatch):
    # Each read came in time but the whole request took longer than REQUEST_TIMEOUT_S.
    client, stubber = cloudwatch
    expect_put(stubber, expected_metrics(1, 1))
    summary = probe.run_probe(config(url, requests=1), client, clock=StepClock(0.75))
    assert summary["errors"] == ["answered in 750 ms, beyond the 0.5 s timeout"]


def test_server_errors_and_bad_bodies_count_as_failed(serve, url, cloudwatch):
    client, stubber = cloudwatch
    serve.script[:] = ["500", "ok", "no-content", "null-content", "not-json", "ok"]
    expect_put(stubber, expected_metrics(6, 4, {125.0: 2}))
    summary = probe.run_probe(config(url, requests=6), client, clock=StepClock(0.125))
    assert summary["errors"] == [
        "HTTP 500 Internal Server Error",
        "the response has no choices[0].message.content",
        "choices[0].message.content is not a string",
        "the response is not JSON",
    ]
    assert summary["availability"] == 100.0 * 2 / 6


def test_distinct_latencies_are_listed_once_each(serve, url, cloudwatch):
    client, stubber = cloudwatch

    class Uneven:
        # Requests take 0.1, 0.2, 0.1 s.
        def __init__(self):
            self.times = iter([0.0, 0.1, 1.0, 1.2, 2.0, 2.1])

        def __call__(self):
            return next(self.times)

    expect_put(stubber, expected_metrics(3, 0, {100.0: 2, 200.0: 1}))
    probe.run_probe(config(url, model=MODEL), client, clock=Uneven())


def test_connection_refused_is_zero_availability_not_an_error(refused_url, cloudwatch):
    client, stubber = cloudwatch
    expect_put(stubber, expected_metrics(3, 3))
    summary = probe.run_probe(config(refused_url, model=MODEL), client)
    assert summary["availability"] == 0.0
    assert len(summary["errors"]) == 3 and all(e.startswith("unreachable: ") for e in summary["errors"])


def test_failed_model_discovery_fails_every_request(refused_url, cloudwatch):
    client, stubber = cloudwatch
    expect_put(stubber, expected_metrics(3, 3))
    summary = probe.run_probe(config(refused_url), client)
    assert summary["model"] is None
    assert summary["errors"][0].startswith("model discovery: unreachable: ")


def test_empty_model_list_fails_every_request(serve, url, cloudwatch):
    client, stubber = cloudwatch
    serve.models.clear()
    expect_put(stubber, expected_metrics(2, 2))
    summary = probe.run_probe(config(url, requests=2), client)
    assert summary["errors"] == ["model discovery: GET /v1/models listed no model"] * 2
    assert [m for m, _, _ in serve.received] == ["GET"]


def test_put_metric_data_failure_raises(serve, url, cloudwatch):
    client, stubber = cloudwatch
    stubber.add_client_error("put_metric_data", service_error_code="AccessDenied", http_status_code=403)
    with pytest.raises(ClientError, match="AccessDenied"):
        probe.run_probe(config(url, requests=1), client)


# ---------------------------------------------------------------------------------------
# The Lambda entry point and its environment
# ---------------------------------------------------------------------------------------


class Between:
    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __eq__(self, other) -> bool:
        return isinstance(other, float) and self.low <= other <= self.high

    def __repr__(self) -> str:
        return f"Between({self.low}, {self.high})"


def test_handler_reads_the_environment(serve, url, cloudwatch, monkeypatch):
    client, stubber = cloudwatch
    monkeypatch.setattr(probe, "cloudwatch_client", lambda: client)
    for key, value in {
        "SERVE_URL": url + "/",
        "MODEL": "",
        "PROBE_REQUESTS": "1",
        "REQUEST_TIMEOUT_S": "5",
        "METRIC_NAMESPACE": "RayServeHA",
        "SERVICE_NAME": SERVICE,
    }.items():
        monkeypatch.setenv(key, value)
    data = expected_metrics(1, 0)
    # Measured with the real clock: a local answer takes well under a second.
    data.append(
        {
            "MetricName": "Latency",
            "Dimensions": DIMENSIONS,
            "Values": [Between(0.0, 1000.0)],
            "Counts": [1.0],
            "Unit": "Milliseconds",
        }
    )
    expect_put(stubber, data)
    summary = probe.handler({"source": "aws.events"}, None)
    assert (summary["requests"], summary["failed"], summary["model"]) == (1, 0, MODEL)


def test_config_defaults():
    cfg = probe.ProbeConfig.from_env({"SERVE_URL": "http://internal-lb:8000", "SERVICE_NAME": SERVICE})
    assert cfg == probe.ProbeConfig(
        serve_url="http://internal-lb:8000",
        service_name=SERVICE,
        model=None,
        requests=3,
        timeout_s=20.0,
        namespace="RayServeHA",
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SERVICE_NAME": SERVICE}, "SERVE_URL must be an http(s) base URL such as http://internal-lb:8000, got ''"),
        ({"SERVE_URL": "internal-lb:8000", "SERVICE_NAME": SERVICE}, "SERVE_URL must be an http(s) base URL"),
        ({"SERVE_URL": "http://lb:8000"}, "SERVICE_NAME must be set (the value of the metrics' Service dimension)"),
        (
            {"SERVE_URL": "http://lb:8000", "SERVICE_NAME": SERVICE, "PROBE_REQUESTS": "three"},
            "PROBE_REQUESTS must be a number (int), got 'three'",
        ),
        (
            {"SERVE_URL": "http://lb:8000", "SERVICE_NAME": SERVICE, "PROBE_REQUESTS": "0"},
            "PROBE_REQUESTS must be between 1 and 20, got 0",
        ),
        (
            {"SERVE_URL": "http://lb:8000", "SERVICE_NAME": SERVICE, "REQUEST_TIMEOUT_S": "-1"},
            "REQUEST_TIMEOUT_S must be positive, got -1",
        ),
    ],
)
def test_config_errors_name_the_variable(env, message):
    with pytest.raises(probe.ProbeConfigError) as raised:
        probe.ProbeConfig.from_env(env)
    assert str(raised.value).startswith(message)


def test_handler_imports_only_the_standard_library_and_boto3():
    tree = ast.parse(Path(probe.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - sys.stdlib_module_names - {"__future__"} <= {"boto3", "botocore"}
