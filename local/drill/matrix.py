"""`python -m local.drill.matrix`: the chaos matrix, on ONE running local stack, in sequence:
each fault kind the fault table (`local.faults`) gives matrix runs, as many times as it says
(head SIGKILLs, graceful head stops, Redis restarts, worker-node SIGKILLs, graceful worker
drains with streams in flight, a network partition of the head). Traffic flows through the
API port (both workers' proxies, as through the serve Service) during every fault; after each
fault the stack must be healthy again (every node live, Serve healthy) before the next one.

Prints a table per fault kind (runs, requests, failed, retried, p99 during the fault, time
to Serve healthy median and max, head recoveries that needed a second start, nodes
restarted that the fault did not touch, stuck recoveries) and writes it as JSON and
Markdown. Exit 0 only with 0 failed requests, 0 stuck recoveries and 0 untouched nodes
restarted. A failed request's error is counted in the row's `errors`.

    python -m local.drill.matrix           # 10 head, 3 graceful, 3 redis, 2 worker, 2 drain, 1 partition
    python -m local.drill.matrix --runs head=2,head-graceful=1,redis=1,worker=1,worker-drain=1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from local.drill.__main__ import Progress, _bounded, _check_out, _HelpWithDefaults, default_grace, run_drill
from local.drill.backends import LocalBackend
from local.drill.stats import percentile
from local.faults import FAULTS, MATRIX

if TYPE_CHECKING:
    from local.stack import LocalStack



@dataclass
class KindResult:
    fault: str
    runs: int = 0
    requests: int = 0
    failed: int = 0
    retried: int = 0
    # Streamed requests in flight when the fault struck (the drain runs streaming clients).
    streams_in_flight: int = 0
    during_latencies_ms: list[float] = field(default_factory=list, repr=False)
    to_healthy_s: list[float] = field(default_factory=list)
    second_starts: int = 0
    untouched_restarts: int = 0
    stuck: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        healthy = self.to_healthy_s
        return {
            "fault": self.fault,
            "runs": self.runs,
            "requests": self.requests,
            "failed": self.failed,
            "retried": self.retried,
            "streams_in_flight": self.streams_in_flight,
            "p99_during_ms": _round(percentile(self.during_latencies_ms, 99)),
            "to_healthy_median_s": _round(statistics.median(healthy)) if healthy else None,
            "to_healthy_max_s": _round(max(healthy)) if healthy else None,
            "head_second_starts": self.second_starts,
            "untouched_nodes_restarted": self.untouched_restarts,
            "stuck": self.stuck,
            "errors": self.errors,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


COLUMNS = [
    ("fault", "fault"), ("runs", "runs"), ("requests", "requests"), ("failed", "failed"), ("retried", "retried"),
    ("streams_in_flight", "streams in flight at the fault"), ("p99_during_ms", "p99 during ms"),
    ("to_healthy_median_s", "to healthy median s"),
    ("to_healthy_max_s", "to healthy max s"), ("head_second_starts", "head 2nd starts"),
    ("untouched_nodes_restarted", "untouched nodes restarted"), ("stuck", "stuck"),
]


def markdown(rows: list[dict[str, object]]) -> str:
    def cell(value: object) -> str:
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[key]) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def stack_healthy(stack: LocalStack) -> bool:
    """Every supervised unit live (Redis and each node with its probe passing) and Serve
    healthy."""
    from local.state import REDIS_UNIT
    from local.topology import NODES

    names = [node.name for node in NODES] + ([REDIS_UNIT] if stack.state.fault_tolerance else [])
    records = [stack.record(name) for name in names]
    return all(r and r.state == "live" and r.probe_ok for r in records) and stack.serve_healthy()


def wait_stack_healthy(stack: LocalStack, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stack_healthy(stack):
            return True
        time.sleep(1)
    return False


def run_matrix(stack: LocalStack, plan: list[tuple[str, int]], *, clients: int, outage_s: float,
               before_s: float, after_s: float, recovery_timeout_s: float,
               progress: Progress = print) -> list[KindResult]:
    results = []
    for fault, runs in plan:
        result = KindResult(fault)
        results.append(result)
        for run in range(1, runs + 1):
            if not wait_stack_healthy(stack, recovery_timeout_s):
                result.stuck += 1
                progress(f"{fault} {run}/{runs}: the stack was not healthy before the fault; stopping")
                return results
            backend = LocalBackend(stack)
            report, samples = asyncio.run(run_drill(
                backend, fault=fault, clients=clients, before_s=before_s,
                outage_s=FAULTS[fault].matrix_outage_s or outage_s,
                grace_s=default_grace(fault) if fault == "worker-drain" else 5, after_s=after_s,
                recovery_timeout_s=recovery_timeout_s, progress=lambda *a, **k: None,
            ))
            result.runs += 1
            result.requests += report.total.requests
            result.failed += report.total.failed
            result.retried += report.total.retried
            for error, count in report.errors.items():
                result.errors[error] = result.errors.get(error, 0) + count
            result.streams_in_flight += report.streams.get("in_flight_at_fault", 0)
            timeline = report.timeline
            result.during_latencies_ms += [
                s.latency * 1000 for s in samples
                if s.ok and s.started >= timeline.fault_at
                and (timeline.healthy_at is None or s.started < timeline.healthy_at)
            ]
            if report.restart_to_healthy_s is not None:
                result.to_healthy_s.append(report.restart_to_healthy_s)
            if report.fault_to_healthy_s is None:
                result.stuck += 1
            head_starts = report.recovery.get("head_starts_to_recover")
            if isinstance(head_starts, int) and head_starts > 1:
                result.second_starts += 1
            if report.recovery.get("unplanned_restarts"):
                result.untouched_restarts += 1
            progress(
                f"{fault} {run}/{runs}: {report.total.requests} requests, {report.total.failed} failed, "
                f"{report.total.retried} retried, healthy {report.restart_to_healthy_s} s after the "
                f"{'heal' if fault == 'partition' else 'restart'}; {report.recovery}"
            )
    return results


def matrix_plan(text: str) -> list[tuple[str, int]]:
    """`--runs head=2,worker-drain=1`: fault kinds of the table, each with a count 0–100."""
    plan = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        kind, _, count = item.partition("=")
        if kind not in FAULTS:
            raise argparse.ArgumentTypeError(f"unknown fault kind {kind!r} (known: {', '.join(FAULTS)})")
        if not count.strip().isdigit() or int(count) > 100:
            raise argparse.ArgumentTypeError(f"{item!r}: give the runs as {kind}=N with N from 0 to 100")
        plan.append((kind, int(count)))
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.drill.matrix", description=__doc__.splitlines()[0],
                                     formatter_class=_HelpWithDefaults)
    seconds = _bounded(0, 600)
    parser.add_argument("--runs", type=matrix_plan, default=list(MATRIX), metavar="KIND=N[,KIND=N...]",
                        help="the faults to run and how often, in that order (default: the fault table's "
                        + ",".join(f"{k}={n}" for k, n in MATRIX) + ")")
    parser.add_argument("--outage", type=seconds, default=5.0,
                        help="seconds a killed part stays down (the partition: its table entry's 30 s)")
    parser.add_argument("--clients", type=_bounded(1, 64, int), default=4,
                        help="concurrent clients, plus one sequential")
    parser.add_argument("--before", type=seconds, default=3.0, help="seconds of traffic before each fault")
    parser.add_argument("--after", type=seconds, default=3.0, help="seconds of traffic after each recovery")
    parser.add_argument("--recovery-timeout", type=_bounded(0, 3600, low_open=True), default=180.0,
                        help="seconds within which Serve (and, before the next fault, every node) must be healthy")
    parser.add_argument("--out", type=Path, default=Path("drill-results"), help="folder for matrix.json and matrix.md")
    args = parser.parse_args(argv)
    problem = _check_out(args.out)
    if problem:
        parser.error(problem)
    plan = [(k, n) for k, n in args.runs if n]
    if not plan:
        parser.error("nothing to run: every fault count is 0")

    from local.stack import LocalStack, running_state
    from local.state import StackError

    state = running_state()
    if state is None:
        print("error: no local stack is running: start it with `make demo` (or `python -m local up --detach`)",
              file=sys.stderr)
        return 2
    if not state.fault_tolerance:
        print("error: the matrix needs GCS fault tolerance: restart the stack without --no-ft", file=sys.stderr)
        return 2
    try:
        results = run_matrix(LocalStack(state), plan, clients=args.clients, outage_s=args.outage,
                             before_s=args.before, after_s=args.after,
                             recovery_timeout_s=args.recovery_timeout)
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = [r.row() for r in results]
    table = markdown(rows)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "matrix.json").write_text(json.dumps(
        {"rows": rows, "runs": [{k: v for k, v in asdict(r).items() if k != "during_latencies_ms"} for r in results]},
        indent=2))
    (args.out / "matrix.md").write_text(table + "\n")
    bad = {
        "failed": sum(r.failed for r in results),
        "stuck": sum(r.stuck for r in results),
        "untouched_nodes_restarted": sum(r.untouched_restarts for r in results),
    }
    if any(bad.values()):
        print("FAILED: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in bad.items() if v), file=sys.stderr)
        return 1
    print("PASSED: 0 failed requests, 0 stuck recoveries, 0 untouched nodes restarted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
