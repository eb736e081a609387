"""Runs the local head drill K times on one local stack and reports medians: failed
requests, requests/s, p99 latency during the outage, and restarted head -> Serve healthy.

    python bench/drill.py --runs 5 [--outage 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local.drill.__main__ import run_drill  # noqa: E402
from local.drill.backends import LocalBackend  # noqa: E402
from local.stack import LocalStack, StackError, running_state  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--outage", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write every run's report here")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if running_state():
        print("error: a local stack is running; stop it (`make demo-down`) so the benchmark owns its stack",
              file=sys.stderr)
        return 2
    try:
        stack = LocalStack.up(fault_tolerance=True, ui=False)
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    reports = []
    try:
        for run in range(1, args.runs + 1):
            report, _ = asyncio.run(run_drill(
                LocalBackend(stack), fault="head", clients=args.clients, before_s=10, outage_s=args.outage,
                grace_s=5, after_s=10, recovery_timeout_s=180, progress=lambda *a, **k: None,
            ))
            reports.append(report)
            print(f"run {run}/{args.runs}: {report.total.requests} requests, {report.total.failed} failed, "
                  f"{report.requests_per_second:g} req/s, p99 during {report.phases['during'].p99_ms} ms, "
                  f"restart -> healthy {report.restart_to_healthy_s} s", flush=True)
    finally:
        stack.down()

    def med(values):
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 1) if values else None

    print(
        f"\nmedians over {args.runs} head drills ({args.clients}+1 clients, {args.outage:g} s outage): "
        f"failed requests {med([r.total.failed for r in reports])}, "
        f"requests/s {med([r.requests_per_second for r in reports])}, "
        f"p99 during the outage {med([r.phases['during'].p99_ms for r in reports])} ms, "
        f"restarted head -> Serve healthy {med([r.restart_to_healthy_s for r in reports])} s"
    )
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in reports], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
