"""The dashboard's PromQL graph widget (lambda/promql_widget) against the local demo's real
Prometheus, whose /api/v1/query_range has the shape of CloudWatch's QueryMetrics: chat
requests through the API with a key, then the request-rate and p99 latency panels drawn
from Serve's own series, with the dashboard's queries (ray_serve_ha/charts/serve_metrics.py)."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ElementTree

import httpx
import pytest

from local.api_keys import read_keys
from local.stack import LocalStack, running_state
from local.topology import API_URL, PROMETHEUS_URL
from ray_serve_ha.charts.serve_metrics import ServeQueries
from tests.lambda_handlers import load_handler
from tests.local_stack_probes import quiet

index = load_handler("promql_widget")
SVG = "{http://www.w3.org/2000/svg}"
BODY = {"model": "tiny-mistral", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
# Ray reports its metrics every 10 s and a counter's first sample is no rise: traffic over
# several reports, so each rate (and the quantile of the latency histogram's rates) has one.
TRAFFIC_S = 35


def widget_event(query: str, unit: str, start: float, end: float) -> dict:
    params = {"query": query, "unit": unit}
    return {**params, "widgetContext": {
        "params": params, "width": 588, "height": 300, "theme": "light",
        "timeRange": {"mode": "absolute", "start": int(start * 1000), "end": int(end * 1000)},
    }}


def drawn(page: str) -> tuple[list[tuple[float, float]], float]:
    """The lines' points, and the height of the y axis's 0 (its label sits 4 px below)."""
    (svg,) = re.findall(r"<svg.*?</svg>", page, re.S)
    root = ElementTree.fromstring(svg)
    points = [tuple(map(float, pair.split(","))) for line in root.iter(f"{SVG}polyline")
              for pair in line.get("points").split()]
    (zero,) = [float(t.get("y")) - 4 for t in root.iter(f"{SVG}text")
               if t.text == "0" and t.get("text-anchor") == "end"]
    return points, zero


@pytest.mark.local_stack
def test_the_widget_graphs_request_rate_and_p99_from_the_demos_prometheus(monkeypatch):
    assert running_state() is None, "a local stack is already running: stop it with `make demo-down`"
    stack = LocalStack.up(fault_tolerance=True, ui=False, progress=quiet)
    try:
        monkeypatch.setenv("PROMQL_ENDPOINT", PROMETHEUS_URL)
        started = time.time()
        headers = {"Authorization": f"Bearer {read_keys()['user']}"}
        sent = 0
        while time.time() - started < TRAFFIC_S:
            answer = httpx.post(f"{API_URL}/v1/chat/completions", json=BODY, headers=headers, timeout=60)
            assert answer.status_code == 200, answer.text
            sent += 1
            time.sleep(0.5)
        assert sent >= 10
        panels = {panel.title: panel for panel in ServeQueries().graphs()}
        pages: dict[str, str] = {}
        # Prometheus scrapes every 2 s: wait for the last reports to land in both panels.
        deadline = time.monotonic() + 60
        while True:
            for title in ("Requests per second", "Latency p99 (ms)"):
                panel = panels[title]
                pages[title] = index.render(widget_event(panel.query, panel.unit, started - 60, time.time()))
            if all("<polyline" in page for page in pages.values()):
                break
            assert time.monotonic() < deadline, {t: p[:400] for t, p in pages.items()}
            time.sleep(3)
        for title, page in pages.items():
            points, zero = drawn(page)
            assert len(points) >= 2, (title, page[:400])
            # One series (a sum, a quantile of the sum): no legend; the unit labels the y axis.
            assert 'class="legend"' not in page and f">{panels[title].unit}</text>" in page
            # Something above zero was drawn: the requests were counted and timed.
            assert min(y for _, y in points) < zero - 1, (title, points)
    finally:
        stack.down()
