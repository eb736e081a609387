"""`python -m local.drill`: send traffic, inject a fault on the Ray head (or its Redis),
wait for Serve to be healthy again, report what the clients saw.

    python -m local.drill                          # local stack, SIGKILL the head, 20 s outage
    python -m local.drill --fault redis
    python -m local.drill --no-ft                  # the same without Redis: expect failures
    python -m local.drill --backend kubernetes --url http://127.0.0.1:8000   # via port-forward
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

from local.drill.backends import FAULTS, Backend, DrillError, KubernetesBackend, LocalBackend
from local.drill.load import LoadGenerator, LoadSpec
from local.drill.plot import plot_timeline
from local.drill.stats import DrillReport, Timeline, build_report, format_table
from local.topology import ForeignTargetError


async def run_drill(
    backend: Backend, *, fault: str, clients: int, before_s: float, outage_s: float, grace_s: float,
    after_s: float, recovery_timeout_s: float, model: str | None = None, progress=print,
) -> tuple[DrillReport, list]:
    model = model or await _served_model(backend.base_url)
    zero = time.monotonic()
    clock = lambda: time.monotonic() - zero  # noqa: E731
    load = LoadGenerator(LoadSpec(base_url=backend.base_url, model=model, clients=clients), zero)
    traffic = asyncio.create_task(load.run())
    ticker = asyncio.create_task(_report_progress(load, clock, progress))
    try:
        await asyncio.sleep(before_s)
        times = await asyncio.to_thread(backend.inject, fault, outage_s, grace_s, clock)
        healthy_at = await asyncio.to_thread(_wait_healthy, backend, clock, times.fault_at + outage_s, recovery_timeout_s)
        await asyncio.sleep(after_s)
    finally:
        load.stop()
        await traffic
        ticker.cancel()
    timeline = Timeline(times.fault_at, times.restarted_at, healthy_at, clock())
    report = build_report(load.samples, timeline, fault=fault, backend=backend.name,
                          fault_tolerance=backend.fault_tolerance)
    return report, load.samples


def _wait_healthy(backend: Backend, clock, not_before: float, timeout_s: float) -> float | None:
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
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        try:
            response = await http.get("/v1/models")
            return response.json()["data"][0]["id"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError) as error:
            raise DrillError(f"cannot list the served models at {base_url}/v1/models: {error!r}") from None


async def _report_progress(load: LoadGenerator, clock, progress) -> None:
    while True:
        await asyncio.sleep(1)
        samples = load.samples
        failed = sum(1 for s in samples if not s.ok)
        progress(f"\r  t={clock():6.1f} s  requests={len(samples):6d}  failed={failed:5d}", end="", flush=True)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.drill", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("local", "kubernetes"), default="local")
    parser.add_argument("--fault", choices=FAULTS, default="head")
    parser.add_argument("--outage", type=float, default=20.0, help="seconds the head (or Redis) stays down (local)")
    parser.add_argument("--grace", type=float, default=10.0, help="SIGTERM grace period for head-graceful")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, plus one sequential client")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of traffic before the fault")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of traffic after recovery")
    parser.add_argument("--recovery-timeout", type=float, default=120.0)
    parser.add_argument("--no-ft", action="store_true", help="local: the same topology without Redis")
    parser.add_argument("--url", help="where to send traffic (kubernetes: the serve Service, e.g. a port-forward)")
    parser.add_argument("--namespace", default="ray-serving")
    parser.add_argument("--rayservice", default="ray-serve-llm")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("--out", type=Path, default=Path("drill-results"), help="folder for the JSON and PNG")
    parser.add_argument("--max-failed", type=int, default=None,
                        help="exit 1 if more requests than this failed (the pipeline's gate uses 0)")
    args = parser.parse_args(argv)
    if args.clients < 0 or args.outage < 0 or args.before < 0 or args.after < 0:
        parser.error("--clients, --outage, --before and --after must not be negative")
    if args.backend == "kubernetes" and not args.url:
        parser.error(
            "--backend kubernetes needs --url, e.g. after "
            "`kubectl -n ray-serving port-forward svc/ray-serve-llm-serve-svc 8000:8000`: --url http://127.0.0.1:8000"
        )
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
            grace_s=args.grace, after_s=args.after, recovery_timeout_s=args.recovery_timeout,
        ))
    except (DrillError, ForeignTargetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the stack's own errors carry their message
        from local.stack import StackError

        if isinstance(error, StackError):
            print(f"error: {error}", file=sys.stderr)
            return 2
        raise
    finally:
        if started_stack is not None:
            print("\nStopping the stack the drill started ...")
            started_stack.down()
    print("\n" + format_table(report))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"drill-{report.backend}-{report.fault}{'' if report.fault_tolerance else '-no-ft'}"
    (args.out / f"{stem}.json").write_text(json.dumps(report.to_json(), indent=2))
    plot_timeline(samples, report, args.out / f"{stem}.png")
    print(f"Report: {args.out / (stem + '.json')}  Timeline: {args.out / (stem + '.png')}")
    if args.max_failed is not None and report.total.failed > args.max_failed:
        print(f"FAILED: {report.total.failed} requests failed (at most {args.max_failed} allowed)", file=sys.stderr)
        return 1
    if report.fault_to_healthy_s is None and args.max_failed is not None:
        print("FAILED: Serve did not become healthy again within the drill", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
