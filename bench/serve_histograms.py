"""What Serve itself measured during a benchmark phase: the proxies' end-to-end latency of the
answers with one status code, and the replicas' processing time, read from the local demo's
Prometheus (local/prometheus.py) as bucket counts at the phase's two ends.

Ray's processes report their metrics every 10 s, so a phase's counts are complete only once
that long has passed after it: `settle()` waits, and `snapshot()` is taken after it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from ray_serve_ha.charts.serve_metrics import LATENCY_BUCKETS

# Ray's `metrics_report_interval_ms` (10 s), and a second for the scrape after it.
REPORT_INTERVAL_S = 11.0
PROCESSING_BUCKETS = "ray_serve_deployment_processing_latency_ms_bucket"
# How late the proxies' event loops ran what was scheduled on them (labels component,
# loop_type: `main` serves HTTP, `router` picks replicas): a busy proxy delays every request.
LOOP_LAG_BUCKETS = "ray_serve_event_loop_scheduling_latency_ms_bucket"
# How long a request waited in a proxy's router for a replica slot (Serve's own queue).
ROUTER_WAIT_BUCKETS = "ray_serve_request_router_fulfillment_time_ms_bucket"
CHAT_ROUTE = "/v1/chat/completions"


def settle() -> None:
    time.sleep(REPORT_INTERVAL_S)


@dataclass(frozen=True)
class Snapshot:
    """Cumulative bucket counts {le: count} of the proxies' 200 answers, of the replicas'
    processing times, of the proxies' routers' waits for a replica slot and of the proxies'
    two and the replicas' event loops' lag; empty when no Prometheus answered."""

    proxy_ok: dict[float, float]
    processing: dict[float, float]
    router_wait: dict[float, float]
    proxy_loop_lag: dict[float, float]
    router_loop_lag: dict[float, float]
    replica_loop_lag: dict[float, float]


def _buckets(url: str, selector: str) -> dict[float, float]:
    query = f"sum by (le) ({selector})"
    params = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=10) as response:
        body = json.load(response)
    return {float(r["metric"]["le"]): float(r["value"][1]) for r in body["data"]["result"]}


def snapshot(url: str) -> Snapshot:
    try:
        return Snapshot(
            proxy_ok=_buckets(url, f'{LATENCY_BUCKETS}{{route="{CHAT_ROUTE}",status_code="200"}}'),
            processing=_buckets(url, PROCESSING_BUCKETS),
            router_wait=_buckets(url, f'{ROUTER_WAIT_BUCKETS}{{handle_source="PROXY"}}'),
            proxy_loop_lag=_buckets(url, f'{LOOP_LAG_BUCKETS}{{component="proxy",loop_type="main"}}'),
            router_loop_lag=_buckets(url, f'{LOOP_LAG_BUCKETS}{{component="proxy",loop_type="router"}}'),
            replica_loop_lag=_buckets(url, f'{LOOP_LAG_BUCKETS}{{component="replica"}}'),
        )
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return Snapshot({}, {}, {}, {}, {}, {})


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The q-quantile of what was observed between two snapshots, interpolated within its
    bucket as Prometheus's histogram_quantile does; None when nothing was observed."""
    bounds = sorted(after)
    counts = [after[le] - before.get(le, 0.0) for le in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if le == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (le - lower_bound) * share
        lower_bound, lower_count = le, count
    return None
