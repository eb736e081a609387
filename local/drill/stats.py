"""What the drill reports: requests, failures and latency before, during and after the
fault, and the time from the fault to a healthy Serve again."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from local.drill.load import SEQUENTIAL, Sample


@dataclass(frozen=True)
class PhaseStats:
    requests: int
    failed: int
    retried: int  # requests that succeeded or failed only after client retries
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass(frozen=True)
class Timeline:
    fault_at: float
    # When the faulted component was started again (None: the fault needs no restart).
    restarted_at: float | None
    healthy_at: float | None
    ended_at: float


@dataclass
class DrillReport:
    fault: str
    backend: str
    fault_tolerance: bool
    timeline: Timeline
    phases: dict[str, PhaseStats]
    total: PhaseStats
    requests_per_second: float
    sequential_failures: int
    fault_to_healthy_s: float | None
    restart_to_healthy_s: float | None
    errors: dict[str, int] = field(default_factory=dict)
    # Streamed requests (streaming clients only): all, those in flight when the fault struck
    # (started before it, ended after), and the failed ones.
    streams: dict[str, int] = field(default_factory=dict)
    # What the backend saw of the recovery (local: the supervisor's records): e.g. how many
    # starts the head needed, which nodes were restarted that the fault did not touch.
    recovery: dict[str, object] = field(default_factory=dict)
    # Why the drill failed, one line each; empty when it passed.
    problems: list[str] = field(default_factory=list)
    # Serve's own series over the drill, from Prometheus (local/drill/server_series.py):
    # source, note, series (key -> [[second, value], ...]) and the PromQL of each.
    server: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def phase_stats(samples: list[Sample]) -> PhaseStats:
    latencies = [s.latency * 1000 for s in samples if s.ok]
    return PhaseStats(
        requests=len(samples),
        failed=sum(1 for s in samples if not s.ok),
        retried=sum(1 for s in samples if s.retries),
        p50_ms=_round(percentile(latencies, 50)),
        p99_ms=_round(percentile(latencies, 99)),
        max_ms=_round(max(latencies) if latencies else None),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def phase_of(sample: Sample, timeline: Timeline) -> str:
    if sample.started < timeline.fault_at:
        return "before"
    if timeline.healthy_at is None or sample.started < timeline.healthy_at:
        return "during"
    return "after"


def build_report(
    samples: list[Sample], timeline: Timeline, *, fault: str, backend: str, fault_tolerance: bool,
    recovery_timeout_s: float | None = None, max_failed: int | None = None,
    recovery: dict[str, object] | None = None,
) -> DrillReport:
    phases: dict[str, list[Sample]] = {name: [] for name in ("before", "during", "after")}
    for sample in samples:
        phases[phase_of(sample, timeline)].append(sample)
    errors: dict[str, int] = {}
    for sample in samples:
        if not sample.ok:
            errors[sample.error] = errors.get(sample.error, 0) + 1
    duration = timeline.ended_at - min((s.started for s in samples), default=0)
    healthy = timeline.healthy_at
    total = phase_stats(samples)
    problems = []
    if healthy is None:
        within = "" if recovery_timeout_s is None else f" within --recovery-timeout {recovery_timeout_s:g} s"
        problems.append(f"Serve was not healthy again{within}")
    if max_failed is not None and total.failed > max_failed:
        problems.append(f"{total.failed} requests failed (--max-failed {max_failed})")
    unplanned = (recovery or {}).get("unplanned_restarts")
    if unplanned:
        problems.append(f"nodes the fault did not touch were restarted: {unplanned}")
    streamed = [s for s in samples if s.stream]
    streams = {
        "requests": len(streamed),
        "in_flight_at_fault": sum(1 for s in streamed if s.started < timeline.fault_at < s.ended),
        "failed": sum(1 for s in streamed if not s.ok),
    } if streamed else {}
    return DrillReport(
        fault=fault,
        backend=backend,
        fault_tolerance=fault_tolerance,
        timeline=timeline,
        phases={name: phase_stats(group) for name, group in phases.items()},
        total=total,
        requests_per_second=round(len(samples) / duration, 1) if duration > 0 else 0.0,
        sequential_failures=sum(1 for s in samples if s.client == SEQUENTIAL and not s.ok),
        fault_to_healthy_s=None if healthy is None else round(healthy - timeline.fault_at, 1),
        restart_to_healthy_s=(
            None if healthy is None or timeline.restarted_at is None else round(healthy - timeline.restarted_at, 1)
        ),
        errors=errors,
        streams=streams,
        recovery=dict(recovery or {}),
        problems=problems,
    )


def format_table(report: DrillReport) -> str:
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    lines = [
        f"HA drill: fault={report.fault} backend={report.backend} "
        f"fault tolerance={'on' if report.fault_tolerance else 'OFF'}",
        f"{'phase':<8} {'requests':>9} {'failed':>7} {'retried':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for name, stats in [*report.phases.items(), ("total", report.total)]:
        lines.append(
            f"{name:<8} {stats.requests:>9} {stats.failed:>7} {stats.retried:>8} {cell(stats.p50_ms):>8} "
            f"{cell(stats.p99_ms):>8} {cell(stats.max_ms):>8}"
        )
    healthy = (
        f"{report.fault_to_healthy_s:g} s after the fault"
        + ("" if report.restart_to_healthy_s is None else f" ({report.restart_to_healthy_s:g} s after the restart)")
        if report.fault_to_healthy_s is not None
        else "never, within the drill"
    )
    lines.append(f"Serve healthy again: {healthy}; {report.requests_per_second:g} requests/s")
    lines.append(f"sequential client (KubeRay query.py style): {report.sequential_failures} failed")
    if report.streams:
        lines.append(f"streams: {report.streams['requests']}, {report.streams['in_flight_at_fault']} in flight "
                     f"when the fault struck, {report.streams['failed']} failed")
    if report.errors:
        lines.append("errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(report.errors.items())))
    if report.recovery:
        lines.append("recovery: " + ", ".join(f"{k} {v}" for k, v in report.recovery.items()))
    lines.append("PASSED" if report.passed else "FAILED: " + "; ".join(report.problems))
    return "\n".join(lines)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
