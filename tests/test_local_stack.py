"""The embedded default for real: Redis, a Ray head and two workers in their own network
namespaces, the Serve app on the tiny model, the API forwarder and the UI; then the HA
drill against it, with and without GCS fault tolerance. Needs root on Linux (CI is)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import urllib.request

import pytest

from local import netns, processes
from local.drill.__main__ import run_drill
from local.drill.backends import LocalBackend
from local.drill.plot import plot_timeline
from local.stack import STATE_DIR, LocalStack, StackError, check_platform, running_state
from batch.submit import submit
from local.topology import API_URL, DASHBOARD_URL, GRADIO_URL, WORKERS
from tests.conftest import ROOT

ARTIFACTS = ROOT / "test-artifacts"


def quiet(*_, **__) -> None:
    pass


def drill(stack: LocalStack, fault: str, **overrides):
    options = dict(fault=fault, clients=8, before_s=5, outage_s=10, grace_s=5, after_s=5, recovery_timeout_s=120)
    options.update(overrides)
    report, samples = asyncio.run(run_drill(LocalBackend(stack), progress=quiet, **options))
    ARTIFACTS.mkdir(exist_ok=True)
    stem = f"drill-{fault}{'' if report.fault_tolerance else '-no-ft'}"
    (ARTIFACTS / f"{stem}.json").write_text(json.dumps(report.to_json(), indent=2))
    plot_timeline(samples, report, ARTIFACTS / f"{stem}.png")
    return report


def listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def assert_nothing_left(pids: list[int]) -> None:
    assert [p for p in pids if processes.alive(p)] == []
    assert netns.leftovers() == []
    assert not listening("127.0.0.1", 8000) and not listening("127.0.0.1", 7860)
    leftover = subprocess.run(["pgrep", "-f", str(STATE_DIR)], capture_output=True, text=True).stdout.split()
    assert [p for p in map(int, leftover) if processes.alive(p)] == []
    assert running_state() is None


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def test_not_root_gets_one_clear_message(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(StackError, match=r"needs root.*sudo make demo.*--profile kind"):
        check_platform()


def test_not_linux_gets_one_clear_message(monkeypatch):
    monkeypatch.setattr("platform.system", lambda: "Darwin")
    with pytest.raises(StackError, match=r"Linux only.*--profile kind"):
        check_platform()


@pytest.fixture(scope="class")
def fault_tolerant_stack():
    assert running_state() is None, "a local stack is already running: stop it with `make demo-down`"
    stack = LocalStack.up(fault_tolerance=True, ui=True, progress=quiet)
    yield stack
    stack.down()


@pytest.fixture(scope="class")
def stack_without_redis():
    assert running_state() is None, "a local stack is already running: stop it with `make demo-down`"
    stack = LocalStack.up(fault_tolerance=False, ui=False, progress=quiet)
    yield stack
    pids = stack.state.pids()
    stack.down()
    assert_nothing_left(pids)


class TestWithFaultTolerance:
    @pytest.fixture
    def stack(self, fault_tolerant_stack):
        return fault_tolerant_stack

    def test_serves_through_the_api_port_each_worker_and_the_ui(self, stack):
        for base in (API_URL, *(w.proxy_url for w in WORKERS)):
            status, body = get(f"{base}/v1/models")
            assert status == 200 and json.loads(body)["data"][0]["id"] == "tiny-mistral"
        assert get(GRADIO_URL)[0] == 200

    def test_second_start_says_it_is_already_running(self, stack):
        with pytest.raises(StackError, match="already running"):
            LocalStack.up(progress=quiet)

    def test_head_crash_loses_no_request(self, stack):
        report = drill(stack, "head")
        assert report.total.failed == 0, report.errors
        assert report.total.requests >= 500
        assert report.phases["during"].requests > 0
        assert report.fault_to_healthy_s is not None

    def test_redis_restart_loses_no_request_after_recovery(self, stack):
        report = drill(stack, "redis", outage_s=3)
        assert report.fault_to_healthy_s is not None
        assert report.phases["after"].requests > 0
        assert report.phases["after"].failed == 0

    def test_batch_benchmarks_run_on_the_local_stack(self, stack):
        result = subprocess.run(
            [sys.executable, "-m", "local", "batch", "xgboost", "--rows", "2000", "--rounds", "10"],
            capture_output=True, text=True, timeout=600, cwd=ROOT,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert re.search(r"^training time: [\d.]+ s$", result.stdout, re.M)
        assert re.search(r"^prediction time: [\d.]+ s$", result.stdout, re.M)
        status, logs = submit(DASHBOARD_URL, "pytorch", ["--rows", "2000", "--epochs", "1"], timeout_s=600)
        assert str(status).endswith("SUCCEEDED"), logs[-3000:]
        assert "training time:" in logs and "prediction time:" in logs

    def test_teardown_leaves_nothing_behind(self, stack):
        pids = stack.state.pids()
        stack.down()
        assert_nothing_left(pids)


class TestWithoutFaultTolerance:
    def test_head_crash_without_redis_fails_requests(self, stack_without_redis):
        stack = stack_without_redis
        # The restarted head is a new cluster: the workers lose it and exit ("Local cluster
        # ID" mismatch), and requests through them fail. This is what Redis buys.
        report = drill(stack, "head", recovery_timeout_s=30, after_s=0)
        assert report.total.failed > 0
        assert report.fault_to_healthy_s is None
