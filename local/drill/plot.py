"""The drill's timeline as a PNG: latency of every request over time, failures marked,
the fault, the restart and Serve healthy again as vertical lines."""

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
