"""Ray Serve's own metrics on the local stack: every Ray node exports them on the port
KubeRay gives the pods, the demo's Prometheus scrapes each node through the bridge, and the
drill sets Serve's server-side series (from Prometheus's HTTP API) beside the client's view in
its JSON and PNG; without Prometheus it says so in one line and still works."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from local import prometheus
from local.drill import server_series
from local.drill.__main__ import _arguments
from local.drill.load import Sample
from local.drill.plot import plot_timeline
from local.drill.stats import Timeline, build_report
from local.netns import firewall_rules
from local.stack import LocalStack, running_state
from local.topology import BRIDGE_IP, METRICS_PORT, NODES, PROMETHEUS_URL
from local.units import NodeSettings, node_command
from ray_serve_ha.charts import constants
from ray_serve_ha.charts.serve_metrics import (
    APPLICATION_STATUS,
    GENERATED_TOKENS,
    HEALTHY_REPLICAS,
    LATENCY_BUCKETS,
    ONGOING_REQUESTS,
    PROXY_SHED_REQUESTS,
    QUEUED_REQUESTS,
    REPLICA_QUEUED_REQUESTS,
    REQUESTS,
)
from tests.conftest import ROOT
from tests.local_stack_probes import listening, prometheus_query, quiet


def test_every_node_exports_on_the_pods_metrics_port_and_prometheus_scrapes_each():
    assert METRICS_PORT == constants.METRICS_EXPORT_PORT == 8080
    settings = NodeSettings(fault_tolerance=True, redis_password="x", storage_namespace="n", auth_token_path="/t")
    for node in NODES:
        command = node_command(node, settings, generation=1)
        assert command[command.index("--metrics-export-port") + 1] == "8080"
        # The bridge (Prometheus's side) may open it, as the CloudWatch agent reaches each pod.
        assert f"ip saddr {BRIDGE_IP} tcp dport {METRICS_PORT} accept" in firewall_rules(node)
    (job,) = prometheus.config()["scrape_configs"]
    assert [t for c in job["static_configs"] for t in c["targets"]] == [f"{n.ip}:8080" for n in NODES]


def test_without_prometheus_the_drill_says_so_in_one_line():
    server = server_series.fetch("http://127.0.0.1:9", wall_start=time.time() - 60, duration_s=60)
    assert server.source is None and server.series == {}
    assert "no Prometheus answers at http://127.0.0.1:9" in server.note and "\n" not in server.note


def test_a_prometheus_off_the_machine_is_refused_before_anything_happens(capsys):
    with pytest.raises(SystemExit) as exit_:
        _arguments(["--prometheus", "http://192.0.2.7:9090"])
    assert exit_.value.code == 2
    assert "--prometheus: refusing target 'http://192.0.2.7:9090'" in capsys.readouterr().err


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers query_range with two series per query (summed by the drill) and a NaN."""

    queries: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/-/ready":
            body = b"ready"
        else:
            params = dict(urllib.parse.parse_qsl(url.query))
            FakePrometheus.queries.append(params)
            start = float(params["start"])
            series = [{"metric": {"ray_node": n}, "values": [[start + 5, "1.5"], [start + 10, v]]}
                      for n, v in (("worker-1", "2"), ("worker-2", "NaN"))]
            body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": series}}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_) -> None:
        pass


def test_the_server_side_series_go_in_the_drills_json_and_png(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        series = server_series.fetch(url, wall_start=1_000.0, duration_s=40)
    finally:
        server.shutdown()
    assert series.source == url and set(series.series) == {"requests_per_s", "errors_5xx_per_s", "p99_ms", "queued"}
    # Each query's series summed, NaN left out, seconds since the drill started.
    assert series.series["requests_per_s"] == [[5.0, 3.0], [10.0, 2.0]]
    sent = {q["query"] for q in FakePrometheus.queries}
    # Serve's proxies' answers and the answers their gates gave themselves (proxy_gate.py).
    proxy_sheds = f"(sum(rate({PROXY_SHED_REQUESTS}[30s])) or vector(0))"
    assert f'sum(rate({REQUESTS}{{application!=""}}[30s])) + {proxy_sheds}' in sent
    assert all((q["start"], q["end"]) == ("1000.000", "1040.000") for q in FakePrometheus.queries)

    samples = [Sample(1.0, 0.01, True, "client-1"), Sample(12.0, 0.5, False, "client-1", "ConnectError")]
    report = build_report(samples, Timeline(fault_at=10.0, restarted_at=20.0, healthy_at=30.0, ended_at=40.0),
                          fault="head", backend="local", fault_tolerance=True)
    report.server = asdict(series)
    assert json.loads(json.dumps(report.to_json()))["server"]["series"]["p99_ms"] == [[5.0, 3.0], [10.0, 2.0]]
    png = plot_timeline(samples, report, tmp_path / "drill.png")
    assert png.stat().st_size > 10_000


@pytest.mark.local_stack
def test_the_demos_prometheus_scrapes_every_node_and_a_drill_carries_serves_own_series(tmp_path: Path):
    assert running_state() is None, "a local stack is already running: stop it with `make demo-down`"
    stack = LocalStack.up(fault_tolerance=True, ui=False, progress=quiet)
    try:
        deadline = time.monotonic() + 60
        while True:
            health = prometheus.targets()
            if len(health) == len(NODES) and set(health.values()) == {"up"}:
                break
            assert time.monotonic() < deadline, f"not every Ray node scraped within 60 s: {health}"
            time.sleep(2)
        assert set(health) == {f"{n.ip}:{METRICS_PORT}" for n in NODES}
        # A head-kill drill as a user runs it, against the running stack: traffic, then its report.
        drill = subprocess.run(
            [sys.executable, "-m", "local.drill", "--fault", "head", "--clients", "4", "--before", "15",
             "--outage", "10", "--after", "20", "--out", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )
        assert drill.returncode == 0, drill.stdout[-3000:] + drill.stderr[-3000:]
        assert "Server-side series: " in drill.stdout and f"from {PROMETHEUS_URL}" in drill.stdout
        report = json.loads((tmp_path / "drill-local-head.json").read_text())
        server = report["server"]
        assert server["source"] == PROMETHEUS_URL
        assert max(v for _, v in server["series"]["requests_per_s"]) > 0
        assert server["series"]["p99_ms"] and "queued" in server["series"]
        assert (tmp_path / "drill-local-head.png").stat().st_size > 10_000
        # Serve's own series, as the CloudWatch alarms and dashboard name them.
        names = {r["metric"]["__name__"] for r in prometheus_query('count by (__name__) ({__name__=~"ray_serve_.*"})')}
        # (Not ERROR_REQUESTS: Ray creates a counter's series at its first increment, and a drill
        # that loses no request has no errored answer.)
        for name in (REQUESTS, LATENCY_BUCKETS, ONGOING_REQUESTS, QUEUED_REQUESTS, REPLICA_QUEUED_REQUESTS,
                     HEALTHY_REPLICAS, APPLICATION_STATUS, GENERATED_TOKENS):
            assert name in names, sorted(names)
        running = prometheus_query(f"min({APPLICATION_STATUS})")
        assert float(running[0]["value"][1]) == 6  # RUNNING again after the head came back
    finally:
        stack.down()
    assert not listening("127.0.0.1", 9095)
