"""Runs the local head drill K times on one local stack and reports medians: failed
requests, requests/s, p99 latency during the outage, restarted head -> Serve healthy, and
where that time goes, from the restarted head's own logs:

    head process started (the supervisor's start)
    -> GCS up (gcs_server's first line)      -> GCS reloaded from Redis (tables loaded)
    -> old head node declared dead (GCS health checks)
    -> Serve controller restarted (its new log)  -> Serve healthy (every replica RUNNING)

    python bench/drill.py --runs 5 [--outage 10] [--clients 2] [--no-cpu-weights]

Uses the running stack if there is one (fault tolerance on), else starts its own. By default
each node runs in a cgroup weighted by its pod's CPU request (as the kubelet does);
`--no-cpu-weights` measures the older stand-in (the head at a higher CPU priority), to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local.drill.__main__ import _bounded, run_drill  # noqa: E402
from local.drill.backends import LocalBackend  # noqa: E402
from local.drill.matrix import wait_stack_healthy  # noqa: E402
from local.stack import LocalStack, running_state  # noqa: E402
from local.state import StackError  # noqa: E402
from local.topology import HEAD  # noqa: E402
from local.units import temp_dir  # noqa: E402

# Ray's C++ logs start "[2026-11-30 10:00:00,123", Serve's "INFO 2026-11-30 10:00:00,123".
_STAMP = re.compile(r"^(?:\[|[A-Z]+ )?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
STEPS = ("gcs_up", "gcs_reloaded", "old_head_dead", "controller_restarted", "serve_healthy")


def _first(path: Path, needle: str | None = None) -> float | None:
    """Wall-clock time of the first log line (containing `needle`) of a Ray log file."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        match = _STAMP.match(line)
        if match and (needle is None or needle in line):
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def breakdown(generation: int, started_wall: float, healthy_wall: float | None) -> dict[str, float | None]:
    """Seconds from the head's start to each step, read from that generation's logs."""
    # A restarted head reuses the cluster's session name (from Redis); no session_latest link.
    logs = next(temp_dir(HEAD, generation).glob("session_*/logs"), temp_dir(HEAD, generation) / "logs")
    gcs = logs / "gcs_server.out"
    controllers = sorted((logs / "serve").glob("controller_*.log"))
    marks = {
        "gcs_up": _first(gcs),
        "gcs_reloaded": _first(gcs, "Finished loading worker table data"),
        "old_head_dead": _first(gcs, "Node is dead because the health check failed"),
        "controller_restarted": min((t for t in map(_first, controllers) if t), default=None),
        "serve_healthy": healthy_wall,
    }
    return {k: None if v is None else round(v - started_wall, 1) for k, v in marks.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=_bounded(1, 100, int), default=5, help="head drills (default: 5)")
    parser.add_argument("--outage", type=_bounded(0, 300), default=10.0,
                        help="seconds the head stays down (default: 10)")
    parser.add_argument("--clients", type=_bounded(1, 64, int), default=2,
                        help="concurrent clients, plus one sequential (default: 2)")
    parser.add_argument("--json", type=Path, help="also write every run's report here (default: none)")
    parser.add_argument("--no-cpu-weights", action="store_true",
                        help="measure without a cgroup per node (the head at a higher CPU priority instead)")
    args = parser.parse_args()
    state = running_state()
    owned = None
    try:
        if state is None:
            stack = owned = LocalStack.up(fault_tolerance=True, ui=False, cpu_weights=not args.no_cpu_weights)
        elif not state.fault_tolerance:
            print("error: the running stack has no Redis (--no-ft); the benchmark needs fault tolerance",
                  file=sys.stderr)
            return 2
        elif state.cpu_weights == args.no_cpu_weights:
            print(f"error: the running stack has CPU weights {'on' if state.cpu_weights else 'off'}; stop it "
                  f"(`make demo-down`) or {'add' if state.cpu_weights else 'drop'} --no-cpu-weights",
                  file=sys.stderr)
            return 2
        else:
            stack = LocalStack(state)
        runs = []
        for run in range(1, args.runs + 1):
            if not wait_stack_healthy(stack, 300):
                print(f"run {run}: the stack was not healthy before the fault; stopping", file=sys.stderr)
                break
            wall_minus_mono = time.time() - time.monotonic()
            backend = LocalBackend(stack)
            zero = time.monotonic()
            report, _ = asyncio.run(run_drill(
                backend, fault="head", clients=args.clients, before_s=5, outage_s=args.outage,
                grace_s=5, after_s=3, recovery_timeout_s=180, progress=lambda *a, **k: None,
            ))
            record = stack.node_record(HEAD)
            started_wall = record.started_at + wall_minus_mono
            healthy_at = report.timeline.healthy_at
            healthy_wall = None if healthy_at is None else zero + healthy_at + wall_minus_mono
            steps = breakdown(record.generation, started_wall, healthy_wall)
            runs.append({"report": report.to_json(), "steps": steps})
            print(f"run {run}/{args.runs}: {report.total.requests} requests, {report.total.failed} failed, "
                  f"p99 during {report.phases['during'].p99_ms} ms, "
                  f"head starts {report.recovery.get('head_starts_to_recover')}, "
                  f"from the (last) head start: " + ", ".join(f"{k} {v}" for k, v in steps.items()) + " s", flush=True)
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if owned is not None:
            owned.down()

    def med(values):
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 1) if values else None

    reports = [r["report"] for r in runs]
    print(
        f"\nmedians over {len(runs)} head drills ({args.clients}+1 clients, {args.outage:g} s outage, "
        f"CPU weights {'off' if args.no_cpu_weights else 'on'}): "
        f"failed requests {med([r['total']['failed'] for r in reports])}, "
        f"requests/s {med([r['requests_per_second'] for r in reports])}, "
        f"p99 during the outage {med([r['phases']['during']['p99_ms'] for r in reports])} ms, "
        f"restarted head -> Serve healthy {med([r['restart_to_healthy_s'] for r in reports])} s "
        f"(max {max((r['restart_to_healthy_s'] or 0) for r in reports) if reports else None} s); "
        f"head restarts that needed a second start: "
        f"{sum(1 for r in reports if (r['recovery'].get('head_starts_to_recover') or 0) > 1)}"
    )
    print("median seconds from the last head start: "
          + ", ".join(f"{step} {med([r['steps'][step] for r in runs])}" for step in STEPS))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    # A faster number never counts if a request failed for it.
    ok = runs and all(r["report"]["fault_to_healthy_s"] is not None and r["report"]["total"]["failed"] == 0
                      for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
