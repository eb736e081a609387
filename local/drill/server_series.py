"""Serve's server-side series over a drill, read from Prometheus's HTTP API (the local
demo runs one: local/prometheus.py): requests and 5xx answers per second at the proxies,
their p99 latency, and the requests waiting for a slot (the replicas' queues and Serve's). The same PromQL as the
CloudWatch alarms (ray_serve_ha/charts/serve_metrics.py), over a shorter window.

Ray's processes report their metrics every 10 s (Ray's `metrics_report_interval_ms`), so the
series move in 10 s steps; a 30 s window keeps three reports in each rate."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from ray_serve_ha.charts.serve_metrics import ServeQueries

WINDOW = "30s"
STEP_S = 5.0
QUERIES = ServeQueries(window=WINDOW).drill_series()


@dataclass
class ServerSeries:
    """`source`: the Prometheus the series came from (None: none answered). `series`: each
    query's points as [seconds since the drill started, value]. `queries`: the PromQL."""

    source: str | None
    note: str
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    queries: dict[str, str] = field(default_factory=dict)


def fetch(url: str, *, wall_start: float, duration_s: float, timeout_s: float = 10) -> ServerSeries:
    """The drill's window, `wall_start` (Unix time of the drill's second 0) plus `duration_s`.
    Never raises for a missing or failing Prometheus: the note says what happened."""
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            response.read()
    except (urllib.error.URLError, OSError):
        return ServerSeries(None, f"no Prometheus answers at {url}: the timeline shows the client's view only")
    series: dict[str, list[list[float]]] = {}
    try:
        for key, query in QUERIES.items():
            series[key] = _range(url, query, wall_start, wall_start + duration_s, timeout_s)
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        return ServerSeries(None, f"Prometheus at {url} failed a query ({error}): the client's view only")
    points = sum(len(v) for v in series.values())
    return ServerSeries(url, f"{points} points of Serve's own series from {url}", series, dict(QUERIES))


def _range(url: str, query: str, start: float, end: float, timeout_s: float) -> list[list[float]]:
    """One query's points (the sum over its series, NaN left out), relative to `start`."""
    params = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": STEP_S})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=timeout_s) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise ValueError(body.get("error", "query failed"))
    points: dict[float, float] = {}
    for result in body["data"]["result"]:
        for at, value in result["values"]:
            number = float(value)
            if not math.isnan(number):
                points[float(at)] = points.get(float(at), 0.0) + number
    return [[round(at - start, 3), value] for at, value in sorted(points.items())]
