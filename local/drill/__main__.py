"""`python -m local.drill`: send traffic, inject a fault (the Ray head, its Redis, a worker,
the head's network, Serve's controller or a replica: `local.faults`), wait for Serve to be
healthy again, report what the clients saw.

    python -m local.drill                          # local stack, SIGKILL the head, 20 s outage
    python -m local.drill --fault redis
    python -m local.drill --fault worker-drain     # SIGTERM with notice: in-flight streams finish
    python -m local.drill --no-ft                  # the same without Redis: expect failures
    python -m local.drill --backend kubernetes --url http://127.0.0.1:8000   # via port-forward

Exit status: 0 when Serve was healthy again within --recovery-timeout, no more than
--max-failed requests failed (default 0: nothing may be lost) and no untouched node was
restarted; 1 otherwise; 2 for bad arguments, checked before any traffic or fault.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from local.drill import server_series
from local.drill.backends import Backend, Clock, DrillError, LocalBackend
from local.drill.kube_backend import KubernetesBackend, kubernetes_fault_refusal
from local.drill.load import LoadGenerator, LoadSpec, Sample, auth_headers, default_api_key
from local.drill.plot import plot_timeline
from local.drill.stats import DrillReport, Timeline, build_report, format_table
from local.faults import FAULT_NAMES, FAULTS, KUBERNETES_FAULTS
from local.topology import PROMETHEUS_URL, ForeignTargetError, check_local_target
from ray_serve_ha.charts.ray_env import WORKER_TERMINATION_GRACE_S

# Where progress lines go: print, or a caller's print-like function.
Progress = Callable[..., Any]


async def run_drill(
    backend: Backend, *, fault: str, clients: int, before_s: float, outage_s: float, grace_s: float,
    after_s: float, recovery_timeout_s: float, model: str | None = None, progress: Progress = print,
    max_failed: int | None = None, streams: int | None = None,
) -> tuple[DrillReport, list[Sample]]:
    model = model or await _served_model(backend.base_url)
    zero = time.monotonic()

    def clock() -> float:
        return time.monotonic() - zero

    streams = default_streams(fault) if streams is None else streams
    load = LoadGenerator(LoadSpec(base_url=backend.base_url, model=model, clients=clients, streams=streams), zero)
    traffic = asyncio.create_task(load.run())
    ticker = asyncio.create_task(_report_progress(load, clock, progress))
    try:
        await asyncio.sleep(before_s)
        times = await asyncio.to_thread(backend.inject, fault, outage_s, grace_s, clock)
        healthy_at = await asyncio.to_thread(_wait_healthy, backend, clock, times.fault_at + outage_s,
                                             recovery_timeout_s)
        await asyncio.sleep(after_s)
    finally:
        load.stop()
        await traffic
        ticker.cancel()
    timeline = Timeline(times.fault_at, times.restarted_at, healthy_at, clock())
    report = build_report(load.samples, timeline, fault=fault, backend=backend.name,
                          fault_tolerance=backend.fault_tolerance, recovery_timeout_s=recovery_timeout_s,
                          max_failed=max_failed, recovery=backend.recovery())
    return report, load.samples


# A drain must let in-flight streams finish: its drill streams too (a stream is the one request
# a lost replica cannot retry, so the kill faults run without them).
DRAIN_STREAMS = 2


def default_streams(fault: str) -> int:
    return DRAIN_STREAMS if fault == "worker-drain" else 0


def default_grace(fault: str) -> float:
    """The notice a fault gives before SIGKILL: a worker pod's termination grace period for a
    drain (charts/ray_env.py), 10 s for a graceful head stop."""
    return float(WORKER_TERMINATION_GRACE_S) if fault == "worker-drain" else 10.0


def _wait_healthy(backend: Backend, clock: Clock, not_before: float, timeout_s: float) -> float | None:
    # After a restart, Serve reads healthy from Redis-backed state for a moment before the
    # new controller has checked anything: wait for the outage to be over first.
    while clock() < not_before:
        time.sleep(0.2)
    deadline = clock() + timeout_s
    while clock() < deadline:
        if backend.serve_healthy():
            return clock()
        time.sleep(0.5)
    return None


async def _served_model(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers=auth_headers(default_api_key())) as http:
        try:
            response = await http.get("/v1/models")
            if response.status_code == 401:
                raise DrillError(f"{base_url} refused the drill's API key (HTTP 401): set OPENAI_API_KEY to a key of "
                                 "the API keys secret (on EKS, its `ha-drill` entry)")
            model: str = response.json()["data"][0]["id"]
            return model
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as error:
            raise DrillError(f"cannot list the served models at {base_url}/v1/models: {error!r}") from None


async def _report_progress(load: LoadGenerator, clock: Clock, progress: Progress) -> None:
    while True:
        await asyncio.sleep(1)
        samples = load.samples
        failed = sum(1 for s in samples if not s.ok)
        progress(f"\r  t={clock():6.1f} s  requests={len(samples):6d}  failed={failed:5d}", end="", flush=True)


# Bounds of the drill's arguments: a drill is a bounded test, never an open-ended load.
MAX_CLIENTS = 256
MAX_PHASE_S = 600.0
MAX_RECOVERY_TIMEOUT_S = 3600.0


def _bounded(
    low: float, high: float, kind: type[float] | type[int] = float, low_open: bool = False,
) -> Callable[[str], float]:
    """An argparse type: a number in [low, high] (or (low, high]), else a one-line error."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if math.isnan(value) or value > high or value < low or (low_open and value == low):
            lower = f"above {low:g}" if low_open else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"{text} must be {lower} and at most {high:g}")
        return value
    return parse


def _check_out(out: Path) -> str | None:
    """Why the report cannot be written to `out`, or None; writes nothing."""
    if out.exists():
        if not out.is_dir():
            return f"--out {out} is not a folder"
        return None if os.access(out, os.W_OK | os.X_OK) else f"--out {out} is not writable"
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"--out {out} cannot be created: {parent} is not a writable folder"
    return None


def check_kubernetes_target(url: str, load_balancer: str | None) -> str:
    """Returns `url` if the drill may send load there: loopback (a port-forward), a private
    address, or the in-VPC load balancer named by --load-balancer (whose name must resolve
    to private addresses only). Raises DrillError otherwise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise DrillError(f"--url {url!r} is not an http(s) URL, e.g. http://127.0.0.1:8000")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.is_loopback or (address.is_private and not address.is_link_local):
            return url
        raise DrillError(f"refusing --url {url!r}: the drill sends load only to loopback (a port-forward) "
                         "or private addresses (inside the VPC)")
    if host == "localhost":
        return url
    wanted = urlsplit(load_balancer).hostname if load_balancer and "://" in load_balancer else load_balancer
    if wanted != host:
        raise DrillError(
            f"refusing --url {url!r}: {host} is a host name; if it is the serve Service's in-VPC load "
            f"balancer, name it with --load-balancer {host}"
        )
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)}
    except OSError as error:
        raise DrillError(f"--load-balancer {host} does not resolve: {error}") from None
    public = sorted(a for a in resolved
                    if not (ipaddress.ip_address(a).is_private or ipaddress.ip_address(a).is_loopback)
                    or ipaddress.ip_address(a).is_link_local)
    if public:
        raise DrillError(f"refusing --load-balancer {host}: it resolves to non-private addresses {public}")
    return url


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default; where the default is not a literal value,
    the help text says it itself."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default:" in text or action.default is argparse.SUPPRESS:
            return text
        if action.default is None:
            return f"{text} (default: none)"
        return super()._get_help_string(action) or text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.drill", description=__doc__.splitlines()[0],
        formatter_class=_HelpWithDefaults,
    )
    seconds = _bounded(0, MAX_PHASE_S)
    parser.add_argument("--backend", choices=("local", "kubernetes"), default="local",
                        help="the local stack, or a RayService through your kubeconfig")
    parser.add_argument("--fault", choices=FAULT_NAMES, default="head",
                        help=f"what to break (kubernetes: {', '.join(KUBERNETES_FAULTS)}); see docs/operating.md")
    parser.add_argument("--outage", type=seconds, default=20.0,
                        help="seconds the faulted part stays down (local; the partition's length)")
    parser.add_argument("--grace", type=seconds, default=None,
                        help="seconds from SIGTERM to SIGKILL for head-graceful and worker-drain (default: 10; "
                             f"worker-drain: the worker pod's termination grace period, {WORKER_TERMINATION_GRACE_S})")
    parser.add_argument("--streams", type=_bounded(0, MAX_CLIENTS, int), default=None,
                        help="streaming clients besides --clients (default: 2 with --fault worker-drain, else 0)")
    parser.add_argument("--clients", type=_bounded(1, MAX_CLIENTS, int), default=8,
                        help="concurrent clients, plus one sequential client")
    parser.add_argument("--before", type=seconds, default=10.0, help="seconds of traffic before the fault")
    parser.add_argument("--after", type=seconds, default=15.0, help="seconds of traffic after recovery")
    parser.add_argument("--recovery-timeout", type=_bounded(0, MAX_RECOVERY_TIMEOUT_S, low_open=True), default=120.0,
                        help="seconds after the outage within which Serve must be healthy again, else exit 1")
    parser.add_argument("--no-ft", action="store_true", help="local: the same topology without Redis")
    parser.add_argument("--url", default=None,
                        help="where to send traffic (default: local: the API port http://127.0.0.1:8000; "
                             "kubernetes: required, the serve Service through a port-forward, a private address, "
                             "or --load-balancer)")
    parser.add_argument("--load-balancer", default=None,
                        help="kubernetes: the in-VPC load balancer's DNS name that --url may name")
    parser.add_argument("--namespace", default="ray-serving", help="kubernetes: the RayService's namespace")
    parser.add_argument("--rayservice", default="ray-serve-llm", help="kubernetes: the RayService's name")
    parser.add_argument("--kubeconfig", default=None,
                        help="kubernetes: kubeconfig path (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", default=None, help="kubernetes: kubeconfig context (default: its current-context)")
    parser.add_argument("--out", type=Path, default=Path("drill-results"), help="folder for the JSON and PNG")
    parser.add_argument("--prometheus", default=PROMETHEUS_URL,
                        help="a Prometheus that scrapes the Ray nodes (the local demo's; kubernetes: a port-forward "
                             "to one), for Serve's server-side series beside the client's")
    parser.add_argument("--max-failed", type=_bounded(0, 10**9, int), default=0,
                        help="exit 1 if more requests than this failed: by default one lost request fails the drill")
    return parser


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    """Every argument checked before any traffic or fault: bad input is one message, exit 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    problem = _check_out(args.out)
    if problem:
        parser.error(problem)
    try:
        # Read from loopback only (the demo's, or a port-forward): like the load, nothing leaves.
        check_local_target(args.prometheus)
    except ForeignTargetError as error:
        parser.error(f"--prometheus: {error}")
    if args.backend == "kubernetes":
        if not args.url:
            parser.error(
                "--backend kubernetes needs --url, e.g. after "
                "`kubectl -n ray-serving port-forward svc/ray-serve-llm-serve-svc 8000:8000`: --url http://127.0.0.1:8000"
            )
        if args.fault not in KUBERNETES_FAULTS:
            parser.error(kubernetes_fault_refusal(args.fault))
        if args.no_ft:
            parser.error("--no-ft is local only: a RayService's fault tolerance is its Redis")
        try:
            check_kubernetes_target(args.url, args.load_balancer)
        except DrillError as error:
            parser.error(str(error))
    else:
        if args.load_balancer:
            parser.error("--load-balancer is for --backend kubernetes")
        if args.url:
            try:
                check_local_target(args.url)
            except ForeignTargetError as error:
                parser.error(str(error))
        if args.no_ft and FAULTS[args.fault].needs_gcs_store:
            parser.error(f"the {args.fault} fault needs the GCS store: run it without --no-ft")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    started_stack = None
    try:
        if args.backend == "local":
            from local.stack import LocalStack, running_state

            state = running_state()
            if state and state.fault_tolerance == args.no_ft:
                raise DrillError(
                    f"a local stack with fault tolerance {'on' if state.fault_tolerance else 'off'} is running; "
                    "stop it (`make demo-down`) or drop --no-ft to match it"
                )
            if state:
                stack = LocalStack(state)
            else:
                print("No local stack running: starting one for the drill ...")
                stack = started_stack = LocalStack.up(fault_tolerance=not args.no_ft, ui=False)
            backend: Backend = LocalBackend(stack, args.url)
        else:
            backend = KubernetesBackend(base_url=args.url, namespace=args.namespace, rayservice=args.rayservice,
                                        kubeconfig=args.kubeconfig, context=args.context)
        print(f"Traffic to {backend.base_url}: {args.clients} concurrent clients + 1 sequential; "
              f"fault '{args.fault}' after {args.before:g} s")
        report, samples = asyncio.run(run_drill(
            backend, fault=args.fault, clients=args.clients, before_s=args.before, outage_s=args.outage,
            grace_s=default_grace(args.fault) if args.grace is None else args.grace, after_s=args.after,
            recovery_timeout_s=args.recovery_timeout, max_failed=args.max_failed, streams=args.streams,
        ))
    except (DrillError, ForeignTargetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the local stack's own errors carry their message
        if args.backend == "local":  # local.stack is not in the drill's CodeBuild asset
            from local.state import StackError

            if isinstance(error, StackError):
                print(f"error: {error}", file=sys.stderr)
                return 2
        raise
    finally:
        if started_stack is not None:
            print("\nStopping the stack the drill started ...")
            started_stack.down()
    # The drill's second 0 in Unix time, for Prometheus: its clock ended at `ended_at` just now.
    server = server_series.fetch(args.prometheus, wall_start=time.time() - report.timeline.ended_at,
                                 duration_s=report.timeline.ended_at)
    print(f"Server-side series: {server.note}")
    report.server = asdict(server)
    print("\n" + format_table(report))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"drill-{report.backend}-{report.fault}{'' if report.fault_tolerance else '-no-ft'}"
    (args.out / f"{stem}.json").write_text(json.dumps(report.to_json(), indent=2))
    plot_timeline(samples, report, args.out / f"{stem}.png")
    print(f"Report: {args.out / (stem + '.json')}  Timeline: {args.out / (stem + '.png')}")
    if not report.passed:
        print("FAILED: " + "; ".join(report.problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
