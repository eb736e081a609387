"""Load shedding under overload, on the local stack: what admitted requests see when the API is
offered three times what it can serve.

    python -m local up --detach --no-ui && python bench/overload.py [--runs 3] [--factor 3] \
        [--max-ongoing N --max-queued M] [--max-tokens T] [--url URL]; python -m local down

Each run, through the API port (both workers' proxies), with the stack's API keys:
  1. unloaded: sequential requests, one at a time: p50 and p99;
  2. capacity: closed-loop clients (`--concurrency`; default as many as the replicas take at once,
     2 x max_ongoing_requests) for `--seconds`: completed requests per second, their p99 (what
     answers at once cost each other before anything is shed) and any refusal (none expected);
  3. overload: requests sent open-loop (arrivals at a fixed rate, not waiting for answers) at
     `--factor` x that capacity for `--seconds`: how many were admitted (200) and shed (429
     with Retry-After: Serve's full queue, or a key's rate limit), admitted p50/p99, every
     5xx and every client time-out;
  4. the RSS of each Serve replica process before and after;
  5. what Serve itself measured in phases 1 and 3 (bench/serve_histograms.py, from the demo's
     Prometheus): the proxies' p99 of the 200 answers, the replicas' processing p99, how long
     requests waited in the proxies' routers for a replica slot, and how late the proxies'
     HTTP and router event loops and the replicas' loops ran (p99 under overload). Set
     beside the client's figures they say where an admitted request waited: before the
     proxies (the load generator, the API port's forwarder, this machine's CPUs), in Serve's
     queue, or in the model.

`--max-ongoing` and `--max-queued` redeploy the application with those per-replica and per-caller
bounds first (Serve applies them in place) and restore the stack's own at the end: the
defaults suit engines that batch (vLLM); the CPU engine runs each request on its own, so
every request it takes at once slows the others.

The load is spread over keys of its own (`bench-1` ...), added to the stack's key file and
removed at the end, so that no key's rate limit (apiRateLimitPerMinute) is what sheds. Prints
one JSON line per run and the medians; exit 1 when a 5xx or a time-out happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataclasses import replace  # noqa: E402

from local.api_keys import API_KEYS_FILE, read_keys  # noqa: E402
from local.stack import LocalStack, StackError, running_state  # noqa: E402
from local.topology import API_URL, PROMETHEUS_URL, WORKERS  # noqa: E402
from ray_serve_ha.charts.serve_config import LlmServing, serve_config  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import serve_histograms  # noqa: E402

REPLICA_TITLE = b"ray::ServeReplica:llm:LLMServer"
PROMPT = [{"role": "user", "content": "Say hello."}]
BENCH_KEYS = 8
# Longer than any admitted answer should take: an answer slower than this counts as a time-out.
TIMEOUT_S = 30.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def replica_rss_mib() -> dict[int, float]:
    """RSS of every model replica process on this machine (all namespaces share its PIDs)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(REPLICA_TITLE):
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        found[int(entry.name)] = round(rss_kib / 1024, 1)
    return found


def add_bench_keys() -> list[str]:
    # A run that was killed left its keys behind: they are replaced, not kept.
    keys = {name: key for name, key in read_keys().items() if not name.startswith("bench-")}
    mine = {f"bench-{i + 1}": "sk-bench-" + os.urandom(16).hex() for i in range(BENCH_KEYS)}
    write_keys({**keys, **mine})
    return list(mine.values())


def remove_bench_keys() -> None:
    write_keys({name: key for name, key in read_keys().items() if not name.startswith("bench-")})


def write_keys(keys: dict[str, str]) -> None:
    temporary = API_KEYS_FILE.with_suffix(".bench")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(keys, file, indent=2)
    os.replace(temporary, API_KEYS_FILE)


async def one(http: httpx.AsyncClient, key: str, body: dict) -> tuple[str, float]:
    """(outcome, seconds): '200', '429-queue', '429-limit', '5xx', 'timeout', 'error', or another status."""
    started = time.monotonic()
    try:
        response = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    except httpx.TimeoutException:
        return "timeout", time.monotonic() - started
    except httpx.HTTPError as error:
        return f"error:{type(error).__name__}", time.monotonic() - started
    elapsed = time.monotonic() - started
    if response.status_code == 429:
        if "retry-after" not in response.headers:
            return "429-without-retry-after", elapsed
        limited = "rate_limit_exceeded" in response.text
        return ("429-limit" if limited else "429-queue"), elapsed
    if response.status_code >= 500:
        return "5xx", elapsed
    return str(response.status_code), elapsed


async def unloaded(http: httpx.AsyncClient, keys: list[str], body: dict, count: int) -> list[float]:
    latencies = []
    for index in range(count):
        outcome, elapsed = await one(http, keys[index % len(keys)], body)
        if outcome == "200":
            latencies.append(elapsed)
    return latencies


async def capacity(
    http: httpx.AsyncClient, keys: list[str], body: dict, concurrency: int, seconds: float
) -> tuple[float, list[float], Counter]:
    """(answers per second, each answer's latency, the other outcomes) with `concurrency`
    closed-loop clients."""
    latencies: list[float] = []
    refused: Counter = Counter()
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        while time.monotonic() < deadline:
            outcome, elapsed = await one(http, keys[index % len(keys)], body)
            if outcome == "200":
                latencies.append(elapsed)
            else:
                refused[outcome] += 1

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return len(latencies) / (time.monotonic() - started), latencies, refused


async def overload(
    http: httpx.AsyncClient, keys: list[str], body: dict, rate: float, seconds: float
) -> list[tuple[str, float]]:
    tasks = []
    started = time.monotonic()
    for index in range(int(rate * seconds)):
        # Arrivals on a fixed schedule, whatever the answers do (open loop).
        await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(http, keys[index % len(keys)], body)))
    return await asyncio.gather(*tasks)


async def run(args: argparse.Namespace, keys: list[str]) -> dict:
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    body = {"model": "tiny-mistral", "messages": PROMPT, "max_tokens": args.max_tokens}
    async with httpx.AsyncClient(base_url=args.url, timeout=TIMEOUT_S, limits=limits) as http:
        rss_start = replica_rss_mib()
        await unloaded(http, keys, body, 20)  # warm-up
        # Each phase starts and ends with Serve's own counts (phase, then their last report).
        serve_histograms.settle()
        before_quiet = serve_histograms.snapshot(PROMETHEUS_URL)
        quiet = await unloaded(http, keys, body, args.sequential)
        serve_histograms.settle()
        after_quiet = serve_histograms.snapshot(PROMETHEUS_URL)
        served_per_s, at_capacity, capacity_refused = await capacity(http, keys, body, args.concurrency, args.seconds)
        rate = args.factor * served_per_s
        serve_histograms.settle()
        before_overload = serve_histograms.snapshot(PROMETHEUS_URL)
        results = await overload(http, keys, body, rate, args.seconds)
        serve_histograms.settle()
        after_overload = serve_histograms.snapshot(PROMETHEUS_URL)
        rss_end = replica_rss_mib()
    outcomes = Counter(outcome for outcome, _ in results)
    admitted = [elapsed for outcome, elapsed in results if outcome == "200"]
    unloaded_p99 = percentile(quiet, 0.99)
    admitted_p99 = percentile(admitted, 0.99)
    ratio = round(admitted_p99 / unloaded_p99, 2) if admitted_p99 and unloaded_p99 else None
    proxy_quiet_p99 = serve_histograms.quantile(before_quiet.proxy_ok, after_quiet.proxy_ok, 0.99)
    proxy_admitted_p99 = serve_histograms.quantile(before_overload.proxy_ok, after_overload.proxy_ok, 0.99)
    processing_p99 = serve_histograms.quantile(before_overload.processing, after_overload.processing, 0.99)
    proxy_lag_p99 = serve_histograms.quantile(before_overload.proxy_loop_lag, after_overload.proxy_loop_lag, 0.99)
    router_lag_p99 = serve_histograms.quantile(before_overload.router_loop_lag, after_overload.router_loop_lag, 0.99)
    replica_lag_p99 = serve_histograms.quantile(before_overload.replica_loop_lag, after_overload.replica_loop_lag, 0.99)
    router_wait_p99 = serve_histograms.quantile(before_overload.router_wait, after_overload.router_wait, 0.99)
    return {
        "unloaded_p50_ms": round(1000 * statistics.median(quiet), 1),
        "unloaded_p99_ms": round(1000 * unloaded_p99, 1) if unloaded_p99 else None,
        "capacity_rps": round(served_per_s, 1),
        # Every slot busy and nothing shed: what sharing the CPUs between answers costs alone.
        "capacity_p99_ms": _ms(1000 * percentile(at_capacity, 0.99)) if at_capacity else None,
        "capacity_refused": dict(capacity_refused),
        "offered_rps": round(rate, 1),
        "sent": len(results),
        "outcomes": dict(outcomes),
        "admitted_p50_ms": round(1000 * statistics.median(admitted), 1) if admitted else None,
        "admitted_p99_ms": round(1000 * admitted_p99, 1) if admitted_p99 else None,
        "admitted_p99_over_unloaded_p99": ratio,
        "errors_5xx": outcomes.get("5xx", 0),
        "timeouts": outcomes.get("timeout", 0),
        "proxy_unloaded_p99_ms": _ms(proxy_quiet_p99),
        "proxy_admitted_p99_ms": _ms(proxy_admitted_p99),
        "proxy_admitted_p99_over_unloaded_p99": (
            round(proxy_admitted_p99 / proxy_quiet_p99, 2) if proxy_admitted_p99 and proxy_quiet_p99 else None
        ),
        "replica_processing_p99_ms_overload": _ms(processing_p99),
        "router_wait_p99_ms_overload": _ms(router_wait_p99),
        "proxy_loop_lag_p99_ms_overload": _ms(proxy_lag_p99),
        "router_loop_lag_p99_ms_overload": _ms(router_lag_p99),
        "replica_loop_lag_p99_ms_overload": _ms(replica_lag_p99),
        "replica_rss_mib_start": sorted(rss_start.values()),
        "replica_rss_mib_end": sorted(rss_end.values()),
    }


def _ms(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def deploy(stack: LocalStack, serving: LlmServing) -> None:
    stack.dashboard("PUT", "/api/serve/applications/", serve_config(serving), retry_s=60)
    time.sleep(3)
    stack.wait_serve_healthy(timeout=180)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--factor", type=float, default=3.0, help="offered load as a multiple of capacity")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the capacity and overload phases")
    parser.add_argument("--sequential", type=int, default=200, help="unloaded requests, one at a time")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="closed-loop clients that measure capacity (default: 2 x max_ongoing_requests)")
    parser.add_argument("--max-ongoing", type=int, default=None, help="answers one replica generates at once")
    parser.add_argument("--max-queued", type=int, default=None, help="requests one replica queues (0: none)")
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens each answer generates")
    parser.add_argument("--url", default=API_URL,
                        help="where to send the load (default: the API port; a proxy's URL leaves the forwarder out)")
    args = parser.parse_args()
    state = running_state()
    if state is None:
        raise StackError("no local stack is running: `python -m local up --detach --no-ui` first")
    stack = LocalStack(state)
    serving = replace(
        stack.serving,
        max_ongoing_requests=args.max_ongoing or stack.serving.max_ongoing_requests,
        max_queued_requests=stack.serving.max_queued_requests if args.max_queued is None else args.max_queued,
    )
    args.concurrency = args.concurrency or len(WORKERS) * serving.max_ongoing_requests
    print(json.dumps({"max_ongoing_requests": serving.max_ongoing_requests,
                      "max_queued_requests": serving.max_queued_requests}), flush=True)
    if serving != stack.serving:
        deploy(stack, serving)
    # SIGTERM (a CI time-out, `kill`) ends the run like Ctrl-C: its keys and bounds are undone.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    keys = add_bench_keys()
    reports = []
    try:
        time.sleep(6)  # the replicas reread the key file every 5 s
        for number in range(1, args.runs + 1):
            report = asyncio.run(run(args, keys))
            reports.append(report)
            print(json.dumps({"run": number, **report}), flush=True)
    finally:
        remove_bench_keys()
        if serving != stack.serving:
            deploy(stack, stack.serving)
    medians = {
        name: statistics.median(r[name] for r in reports if r[name] is not None)
        for name in ("unloaded_p99_ms", "capacity_rps", "capacity_p99_ms", "offered_rps", "admitted_p99_ms",
                     "admitted_p99_over_unloaded_p99", "proxy_unloaded_p99_ms", "proxy_admitted_p99_ms",
                     "proxy_admitted_p99_over_unloaded_p99", "replica_processing_p99_ms_overload",
                     "router_wait_p99_ms_overload", "proxy_loop_lag_p99_ms_overload",
                     "router_loop_lag_p99_ms_overload", "replica_loop_lag_p99_ms_overload",
                     "errors_5xx", "timeouts")
        if any(r[name] is not None for r in reports)
    }
    print(json.dumps({"medians_of_runs": len(reports), **medians}))
    return 1 if any(r["errors_5xx"] or r["timeouts"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
