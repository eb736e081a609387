"""`python -m local.drill.soak --seed N --faults K`: a seeded random soak of faults in sequence,
on the running local stack, with traffic throughout.

Faults come in sequences: a second one during the recovery from the first, a crash of the
part that stands in for a managed service. The soak draws K faults from every kind the stack
knows (`local.faults`), each with its own outage or notice, and draws the gaps between them:
some faults wait for the stack to be healthy again and some land during the previous
recovery (`--overlap`, the share of those). The same seed draws the same plan.

Traffic (the drill's clients, retrying as the OpenAI SDK does) runs from before the first
fault until the stack is healthy after the last. After each fault, or each run of faults that
landed during a recovery, the whole stack must be healthy again (Redis and every node live,
Serve healthy with a replacement for any lost replica) within `--bound` seconds, or that
recovery is stuck and the soak stops there.

Exit status 0 only with 0 failed requests and 0 stuck recoveries; 1 otherwise; 2 for bad
input (a fault count out of range, an unknown fault kind, no stack running), before any fault.
The last line is exactly `K faults, N requests, F failed, S stuck`. The report goes to
`--out` as soak-<seed>.json and soak-<seed>.png.

    python -m local.drill.soak --seed 1 --faults 60
    python -m local.drill.soak --seed 7 --faults 5 --kinds head,redis-crash,worker-drain
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local.drill.__main__ import _bounded, _check_out, _HelpWithDefaults, _served_model
from local.drill.backends import DrillError, LocalBackend
from local.drill.load import LoadGenerator, LoadSpec, Sample
from local.drill.soak_plan import FaultResult, PlannedFault, SoakReport, plan, plot_soak
from local.drill.stats import percentile
from local.faults import FAULT_NAMES, FAULTS

if TYPE_CHECKING:
    from local.stack import LocalStack

MAX_FAULTS = 1000
DEFAULT_BOUND_S = 300.0
class Soak:
    def __init__(self, stack: LocalStack, planned: list[PlannedFault], *, bound_s: float, progress: Any = print):
        self.stack = stack
        self.planned = planned
        self.bound_s = bound_s
        self.progress = progress
        self.zero = time.monotonic()
        self.backend = LocalBackend(stack)

    def clock(self) -> float:
        return time.monotonic() - self.zero

    def healthy(self) -> bool:
        from local.drill.matrix import stack_healthy

        return stack_healthy(self.stack) and self.backend.serve_healthy()

    def wait_healthy(self, since: float) -> float | None:
        deadline = since + self.bound_s
        while self.clock() < deadline:
            if self.healthy():
                return self.clock()
            time.sleep(1)
        return None

    def _recovery(self, chain: set[str]) -> dict[str, object]:
        recovery = self.backend.recovery()
        unplanned = recovery.get("unplanned_restarts")
        if isinstance(unplanned, list):
            recovery["unplanned_restarts"] = [name for name in unplanned if name not in chain]
        return recovery

    def run(self) -> list[FaultResult]:
        results: list[FaultResult] = []
        landed_during_recovery = False
        # Units the faults since the stack was last healthy may restart: in a run of faults
        # that land during each other's recovery, a restart belongs to any of them.
        chain: set[str] = set()
        for fault in self.planned:
            injected_at = self.clock()
            chain |= set(FAULTS[fault.kind].may_restart)
            restarted_at, error, broken = None, "", False
            try:
                restarted_at = self.backend.inject(fault.kind, fault.outage_s, fault.grace_s, self.clock).restarted_at
            except DrillError as skipped:
                # What it acts on is not there (a replica not yet replaced after the fault
                # before): not injected; the recovery is still judged.
                error = f"not injected: {skipped}"
            except Exception as failure:  # the supervisor did not restart what it must: stuck
                error, broken = f"{type(failure).__name__}: {failure}", True
            result = FaultResult(fault.index, fault.kind, fault.outage_s, fault.grace_s, injected_at, self.clock(),
                                 restarted_at, landed_during_recovery, error=error)
            results.append(result)
            if broken:
                result.stuck = True
                self.progress(f"fault {fault.index}/{len(self.planned)} {fault.kind}: {error}; stopping")
                break
            if fault.overlap_gap_s is not None and not error:
                time.sleep(fault.overlap_gap_s)
                landed_during_recovery = not self.healthy()
                result.recovery = self._recovery(chain)
                self.progress(f"fault {fault.index}/{len(self.planned)} {fault.kind}: next fault "
                              f"{fault.overlap_gap_s:g} s later, "
                              f"{'during its recovery' if landed_during_recovery else 'already healthy'}")
                continue
            healthy_at = self.wait_healthy(result.injection_done_at)
            result.recovery = self._recovery(chain)
            result.healthy_at = healthy_at
            # A run of overlapping faults is judged from the last one's injection.
            if healthy_at is None:
                result.stuck = True
            else:
                result.to_healthy_s = round(healthy_at - result.injection_done_at, 1)
            self.progress(
                f"fault {fault.index}/{len(self.planned)} {fault.kind}"
                f"{' (landed during a recovery)' if result.landed_during_recovery else ''}: "
                + (f"healthy {result.to_healthy_s} s after it" if not result.stuck
                   else f"NOT healthy within {self.bound_s:g} s: stuck, stopping")
                + (f"; {error}" if error else "")
            )
            if result.stuck:
                break
            landed_during_recovery, chain = False, set()
            time.sleep(fault.gap_s)
        return results


async def run_soak(stack: LocalStack, planned: list[PlannedFault], *, seed: int, kinds: tuple[str, ...], bound_s: float,
                   overlap: float, clients: int, progress: Any = print) -> tuple[SoakReport, list[Sample]]:
    model = await _served_model(stack_url())
    soak = Soak(stack, planned, bound_s=bound_s, progress=progress)
    budget_s = len(planned) * (bound_s + 120) + 600
    load = LoadGenerator(LoadSpec(base_url=stack_url(), model=model, clients=clients, max_seconds=budget_s), soak.zero)
    traffic = asyncio.create_task(load.run())
    started_wall = time.time()
    try:
        await asyncio.sleep(5)  # traffic before the first fault
        results = await asyncio.to_thread(soak.run)
        await asyncio.sleep(5)
    finally:
        load.stop()
        await traffic
    samples = load.samples
    errors: dict[str, int] = {}
    for sample in samples:
        if not sample.ok:
            errors[sample.error] = errors.get(sample.error, 0) + 1
    latencies = [s.latency * 1000 for s in samples if s.ok]
    report = SoakReport(
        seed=seed, kinds=list(kinds), bound_s=bound_s, overlap=overlap, started_wall=started_wall, faults=results,
        requests=len(samples), failed=sum(1 for s in samples if not s.ok),
        retried=sum(1 for s in samples if s.retries), errors=errors,
        p50_ms=_round(percentile(latencies, 50)), p99_ms=_round(percentile(latencies, 99)),
        duration_s=round(soak.clock(), 1),
    )
    return report, samples


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def stack_url() -> str:
    from local.topology import API_URL

    return API_URL


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULTS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind {unknown[0]!r}" if unknown else "no fault kind given"
        ) from None
    return kinds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local.drill.soak", description=__doc__.splitlines()[0],
                                     formatter_class=_HelpWithDefaults)
    parser.add_argument("--seed", type=_bounded(0, 2**63 - 1, int), required=True,
                        help="draws the plan: the same seed, the same faults, outages and gaps")
    parser.add_argument("--faults", type=_bounded(1, MAX_FAULTS, int), required=True, help="how many faults")
    parser.add_argument("--kinds", type=_kinds, default=FAULT_NAMES,
                        help=f"comma-separated fault kinds to draw from (default: all: {','.join(FAULT_NAMES)})")
    parser.add_argument("--overlap", type=_bounded(0, 1), default=0.25,
                        help="share of faults whose successor lands during their recovery")
    parser.add_argument("--bound", type=_bounded(0, 3600, low_open=True), default=DEFAULT_BOUND_S,
                        help="seconds within which the stack must be healthy again after a fault")
    parser.add_argument("--clients", type=_bounded(1, 64, int), default=2,
                        help="concurrent clients, plus one sequential")
    parser.add_argument("--out", type=Path, default=Path("drill-results"), help="folder for the JSON and PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    problem = _check_out(args.out)
    if problem:
        parser.error(problem)
    if args.kinds is FAULT_NAMES:
        kinds: tuple[str, ...] = FAULT_NAMES
    else:
        kinds = args.kinds

    from local.stack import LocalStack, check_platform, running_state
    from local.state import StackError

    try:
        check_platform()
    except StackError as error:
        parser.error(str(error))
    state = running_state()
    if state is None:
        parser.error("no local stack is running: start it with `make demo` (or `python -m local up --detach`)")
    needs_store = [k for k in kinds if FAULTS[k].needs_gcs_store]
    if not state.fault_tolerance and needs_store:
        parser.error(f"the running stack has no Redis (--no-ft), which {', '.join(needs_store)} need: "
                     "restart it without --no-ft or leave them out of --kinds")
    planned = plan(args.seed, args.faults, kinds, args.overlap)
    print(f"Seeded soak: seed {args.seed}, {args.faults} faults drawn from {', '.join(kinds)}; "
          f"{sum(1 for p in planned if p.overlap_gap_s is not None)} followed during their recovery; "
          f"bound {args.bound:g} s", flush=True)
    for fault in planned:
        print(f"  {fault.index:3d}. {fault.kind:<15} outage {fault.outage_s:5.1f} s  grace {fault.grace_s:5.1f} s  "
              + (f"next after {fault.overlap_gap_s:g} s, during its recovery" if fault.overlap_gap_s is not None
                 else f"next {fault.gap_s:g} s after healthy"), flush=True)
    stack = LocalStack(state)
    try:
        report, samples = asyncio.run(run_soak(stack, planned, seed=args.seed, kinds=kinds, bound_s=args.bound,
                                               overlap=args.overlap, clients=args.clients,
                                               progress=lambda line: print(line, flush=True)))
    except (DrillError, StackError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"soak-{args.seed}"
    (args.out / f"{stem}.json").write_text(json.dumps(report.to_json(), indent=2))
    plot_soak(samples, report, args.out / f"{stem}.png")
    print(f"Report: {args.out / (stem + '.json')}  Timeline: {args.out / (stem + '.png')}")
    if report.errors:
        print("errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(report.errors.items())))
    for kind, row in report.to_json()["by_kind"].items():
        print(f"  {kind:<15} {row}")
    print(f"retried requests: {report.retried}; faults after which a bystander unit was restarted: "
          f"{report.bystanders_restarted}")
    print(report.last_line())
    return 0 if report.failed == 0 and report.stuck == 0 and report.faults else 1


if __name__ == "__main__":
    sys.exit(main())
