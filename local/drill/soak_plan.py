"""The seeded soak's plan and report: what the seed draws (`plan`), each fault's result, the
report with its last line, its table by fault kind, and its PNG. `local.drill.soak` runs them."""

from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from local.drill.load import Sample
from local.faults import FAULTS
from ray_serve_ha.charts.ray_env import WORKER_TERMINATION_GRACE_S

# What the draws range over, per fault kind: seconds down (an outage, a freeze, a cut link),
# the notice of a graceful head stop. A drain always gets the worker pod's grace period.
OUTAGE_S = (2.0, 15.0)
PARTITION_S = (5.0, 30.0)
FREEZE_S = (3.0, 30.0)  # past 20 s the supervisor replaces the frozen Redis
HEAD_GRACE_S = (2.0, 10.0)
OVERLAP_GAP_S = (1.0, 10.0)  # after a fault's injection, into its recovery
HEALTHY_GAP_S = (2.0, 10.0)  # after the stack is healthy again


@dataclass(frozen=True)
class PlannedFault:
    index: int
    kind: str
    outage_s: float
    grace_s: float
    # Inject the next fault this long after this one, without waiting for the stack to be
    # healthy (lands during the recovery); None: wait for healthy, then `gap_s`.
    overlap_gap_s: float | None
    gap_s: float


def plan(seed: int, faults: int, kinds: tuple[str, ...], overlap: float) -> list[PlannedFault]:
    """The soak's draws, all from `seed`: the same seed gives the same plan."""
    rng = random.Random(seed)
    planned = []
    for index in range(faults):
        kind = rng.choice(kinds)
        span = PARTITION_S if kind == "partition" else FREEZE_S if kind == "redis-freeze" else OUTAGE_S
        outage = round(rng.uniform(*span), 1) if FAULTS[kind].uses_outage else 0.0
        grace = 0.0
        if kind == "worker-drain":
            grace = float(WORKER_TERMINATION_GRACE_S)
        elif FAULTS[kind].uses_grace:
            grace = round(rng.uniform(*HEAD_GRACE_S), 1)
        overlapping = rng.random() < overlap and index < faults - 1
        overlap_gap = round(rng.uniform(*OVERLAP_GAP_S), 1) if overlapping else None
        planned.append(PlannedFault(index + 1, kind, outage, grace, overlap_gap, round(rng.uniform(*HEALTHY_GAP_S), 1)))
    return planned


@dataclass
class FaultResult:
    index: int
    kind: str
    outage_s: float
    grace_s: float
    injected_at: float  # the soak's clock
    injection_done_at: float
    restarted_at: float | None
    # The stack was not healthy when this fault struck: it landed during a recovery.
    landed_during_recovery: bool
    healthy_at: float | None = None
    # None: the next fault came before it could be judged (its recovery is judged with that one).
    to_healthy_s: float | None = None
    stuck: bool = False
    recovery: dict[str, object] = field(default_factory=dict)
    error: str = ""


@dataclass
class SoakReport:
    seed: int
    kinds: list[str]
    bound_s: float
    overlap: float
    started_wall: float
    faults: list[FaultResult]
    requests: int
    failed: int
    retried: int
    errors: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    duration_s: float

    @property
    def stuck(self) -> int:
        return sum(1 for f in self.faults if f.stuck)

    def last_line(self) -> str:
        return f"{len(self.faults)} faults, {self.requests} requests, {self.failed} failed, {self.stuck} stuck"

    @property
    def bystanders_restarted(self) -> int:
        """Faults after which a unit none of the faults since the last healthy state may
        restart was restarted (a worker wrongly declared dead would be one)."""
        return sum(1 for f in self.faults if f.recovery.get("unplanned_restarts"))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stuck"] = self.stuck
        data["bystanders_restarted"] = self.bystanders_restarted
        data["by_kind"] = by_kind(self.faults)
        return data


def by_kind(faults: list[FaultResult]) -> dict[str, dict[str, object]]:
    table: dict[str, dict[str, object]] = {}
    for kind in sorted({f.kind for f in faults}):
        mine = [f for f in faults if f.kind == kind]
        times = [f.to_healthy_s for f in mine if f.to_healthy_s is not None]
        table[kind] = {
            "faults": len(mine),
            "landed_during_recovery": sum(1 for f in mine if f.landed_during_recovery),
            "to_healthy_median_s": None if not times else round(statistics.median(times), 1),
            "to_healthy_max_s": None if not times else round(max(times), 1),
            "stuck": sum(1 for f in mine if f.stuck),
        }
    return table


def plot_soak(samples: list[Sample], report: SoakReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from local.drill.plot import save, scatter_requests

    figure, axis = plt.subplots(figsize=(14, 5), dpi=110)
    top = scatter_requests(axis, samples, headroom=1.3, dot=3)

    palette = [plt.get_cmap("tab20")(i) for i in range(20)]
    kinds = sorted({f.kind for f in report.faults})
    color = {kind: palette[i % len(palette)] for i, kind in enumerate(kinds)}
    for position, fault in enumerate(report.faults):
        # Shaded from the fault to healthy again (an overlapped fault: to the next fault).
        following = report.faults[position + 1].injected_at if position + 1 < len(report.faults) else None
        end = fault.healthy_at if fault.healthy_at is not None else following or fault.injection_done_at
        axis.axvspan(fault.injected_at, max(end, fault.injected_at + 0.5), color=color[fault.kind], alpha=0.3)
        axis.text(fault.injected_at, top * 1.05, f"{fault.index} {fault.kind}", fontsize=6, rotation=90,
                  va="bottom", color="black")
    handles, _ = axis.get_legend_handles_labels()
    handles += [Patch(color=color[kind], alpha=0.5, label=kind) for kind in kinds]
    axis.set_yscale("log")
    axis.set_xlabel("seconds since the soak started (shaded: from a fault to healthy again)")
    axis.set_ylabel("latency (ms, log)")
    axis.set_title(f"seeded soak (seed {report.seed}): {report.last_line()}")
    axis.set_ylim(top=top * 6)
    axis.legend(handles=handles, loc="lower left", fontsize=7, ncol=6)
    axis.grid(True, which="both", alpha=0.3)
    return save(figure, path)


