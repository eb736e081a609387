"""The drill's timeline as a PNG: latency of every request over time, failures marked,
the fault, the restart and Serve healthy again as vertical lines; below it, when Prometheus
answered, Serve's own view of the same seconds (requests, 5xx, p99, queue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from local.drill.load import Sample
from local.drill.stats import DrillReport


def scatter_requests(axis: Any, samples: list[Sample], *, headroom: float, dot: float) -> float:
    """Every request's latency at its start; failed ones as crosses along the top, which is
    returned (the slowest success times `headroom`)."""
    ok = [s for s in samples if s.ok]
    failed = [s for s in samples if not s.ok]
    axis.scatter([s.started for s in ok], [s.latency * 1000 for s in ok], s=dot, alpha=0.5, label=f"ok ({len(ok)})")
    top: float = max((s.latency * 1000 for s in ok), default=100) * headroom
    if failed:
        axis.scatter([s.started for s in failed], [top] * len(failed), s=dot * 4, marker="x", color="crimson",
                     label=f"failed ({len(failed)})")
    return top


def save(figure: Any, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_timeline(samples: list[Sample], report: DrillReport, path: Path) -> Path:
    series = (report.server or {}).get("series") or {}
    if series:
        figure, (axis, server_axis) = plt.subplots(2, 1, figsize=(11, 7.5), dpi=110, sharex=True,
                                                   gridspec_kw={"height_ratios": [3, 2]})
        plot_server_series(server_axis, series)
    else:
        figure, axis = plt.subplots(figsize=(11, 4.5), dpi=110)
    scatter_requests(axis, samples, headroom=1.1, dot=4)
    timeline = report.timeline
    marks = [(timeline.fault_at, f"{report.fault} fault", "crimson")]
    if timeline.restarted_at is not None:
        marks.append((timeline.restarted_at, "restarted", "darkorange"))
    if timeline.healthy_at is not None:
        marks.append((timeline.healthy_at, "Serve healthy", "seagreen"))
    for at, label, color in marks:
        axis.axvline(at, color=color, linestyle="--", linewidth=1.2, label=f"{label} ({at:.1f} s)")
        if series:
            server_axis.axvline(at, color=color, linestyle="--", linewidth=1.2)
    axis.set_yscale("log")
    axis.set_xlabel("seconds since the drill started")
    axis.set_ylabel("latency (ms, log)")
    ft = "on" if report.fault_tolerance else "OFF"
    axis.set_title(
        f"HA drill ({report.backend}, fault tolerance {ft}): {report.total.requests} requests, "
        f"{report.total.failed} failed"
    )
    axis.legend(loc="upper left", fontsize=8)
    axis.grid(True, which="both", alpha=0.3)
    return save(figure, path)


def plot_server_series(axis: Any, series: dict[str, list[list[float]]]) -> None:
    """Requests and 5xx per second and the queue on the left, p99 (ms) on the right."""
    def line(target: Any, key: str, label: str, **style: Any) -> None:
        points = series.get(key) or []
        target.plot([p[0] for p in points], [p[1] for p in points], label=label, **style)

    line(axis, "requests_per_s", "requests/s (Serve)", color="tab:blue")
    line(axis, "errors_5xx_per_s", "5xx/s (Serve)", color="crimson")
    line(axis, "queued", "queued requests", color="tab:purple", linestyle=":")
    axis.set_ylabel("per second / queued")
    axis.set_xlabel("seconds since the drill started")
    latency = axis.twinx()
    line(latency, "p99_ms", "p99 ms (Serve)", color="darkorange", linestyle="--")
    latency.set_ylabel("p99 latency (ms)")
    handles = [h for a in (axis, latency) for h in a.get_legend_handles_labels()[0]]
    axis.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
    axis.set_title("Serve's own metrics (Prometheus)", fontsize=9)
    axis.grid(True, alpha=0.3)
