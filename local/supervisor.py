"""`python -m local.supervisor`: keeps the local stack running as the kubelet keeps a
RayService's pods running, and as a managed service keeps itself running.

What it supervises (each a *unit* with its own record, `nodes/<unit>.json`):

- **Redis**, the stand-in for ElastiCache, which recovers by itself: `redis-server` is
  restarted from its append-only file when it exits (a crash) or stops answering PING (a
  frozen or hung server), after a back-off, as a managed service replaces a failed node;
- **each Ray node** (the head, each worker) as `ray start --block` inside its network
  namespace: restarted, with a fresh temp dir as a new pod would have, when its process
  exits or its liveness probe fails. The probe is KubeRay's (the raylet's health on every
  node, the GCS's on the head), asked from inside the node's namespace as the kubelet asks
  from the node. Each node runs in a cgroup with the CPU weight of its pod's request
  (`local.cgroups`), as the kubelet gives it;
- **the Serve watchdog** (`ray_serve_llm.serve_watchdog`), a second process of the head,
  as it is a second container of the head pod on Kubernetes: it starts and stops with the
  head and is restarted if it exits on its own.

A unit that keeps failing is restarted after a growing back-off (1 s doubling to 8 s). A unit
with a hold (a file `holds/<unit>` that the drill writes while it keeps a unit down for an
outage) is left down until the hold is gone, then started at once: the drill owns its
outage, the supervisor takes over after it. SIGTERM stops every unit and exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from local import cgroups, netns, processes
from local.state import (
    LOG_DIR,
    REDIS_UNIT,
    WATCHDOG_UNIT,
    NodeRecord,
    StackState,
    held,
)
from local.topology import (
    HEAD,
    NODES,
    RayNode,
)
from local.units import (
    Liveness,
    NodeSettings,
    node_command_for,
    node_liveness,
    pod_cpu_request_milli,
    pod_env,
    redis_command,
    redis_liveness,
    watchdog_command,
)

# The kubelet's crash-loop back-off, shortened (kubelet: 10 s doubling to 5 min): the
# local units start in seconds, and a head restarted during a Redis outage should come
# back soon after Redis does.
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 8.0
# A unit that stayed live this long has recovered: its next failure starts a new back-off.
STABLE_AFTER_S = 60.0
TICK_S = 0.25
# Without CPU weights (no writable cgroup): the older stand-in for a head pod's own CPUs.
HEAD_NICENESS = -10
AGENT_NICENESS = -20
AGENT_SCRIPTS = (b"dashboard/agent.py", b"runtime_env/agent/main.py", b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")


def backoff_s(consecutive_failures: int) -> float:
    """Wait before restart number `consecutive_failures` (1-based) of a failing unit."""
    if consecutive_failures <= 0:
        return 0.0
    return min(BACKOFF_INITIAL_S * 2.0 ** (consecutive_failures - 1), BACKOFF_MAX_S)


class Prober(threading.Thread):
    """Runs one unit's liveness probe every period (from inside its namespace, if any).
    `latest` counts up with each probe; the supervisor reads the newest."""

    def __init__(self, name: str, liveness: Liveness):
        super().__init__(name=f"probe-{name}", daemon=True)
        self.liveness = liveness
        self.lock = threading.Lock()
        self.sequence = 0
        self.ok: bool | None = None
        self.detail = ""
        self.stop = threading.Event()

    def run(self) -> None:
        if self.liveness.namespace:
            netns.enter(self.liveness.namespace)
        # One probe every period, start to start, as the kubelet runs them: a probe that
        # waits out its time-out does not stretch the period.
        next_at = time.monotonic() + self.liveness.period_s
        while not self.stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + self.liveness.period_s
            ok, detail = self.liveness.check()
            with self.lock:
                self.sequence += 1
                self.ok, self.detail = ok, detail

    def latest(self) -> tuple[int, bool | None, str]:
        with self.lock:
            return self.sequence, self.ok, self.detail


# ---- the supervisor ----------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    name: str
    command: Callable[[int], list[str]]  # generation -> argv (inside the namespace)
    env: dict[str, str]
    namespace: str | None = None
    liveness: Liveness | None = None
    node: RayNode | None = None  # a Ray node: its generation ends with everything in its namespace
    cgroup: Path | None = None


class Supervisor:
    def __init__(self, settings: NodeSettings, *, cpu_weights: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.hierarchy, self.cpu_weights_problem = cgroups.available() if cpu_weights else (None, "turned off")
        self.units: dict[str, Unit] = {}
        if settings.fault_tolerance:
            self.units[REDIS_UNIT] = Unit(REDIS_UNIT, lambda _: redis_command(), {},
                                          liveness=redis_liveness(settings.redis_password))
        for node in NODES:
            group = None
            if self.hierarchy is not None:
                group = cgroups.create(self.hierarchy, node.name, pod_cpu_request_milli(node))
            self.units[node.name] = Unit(
                node.name, node_command_for(node, settings), pod_env(node, settings), namespace=node.namespace,
                liveness=node_liveness(node), node=node, cgroup=group,
            )
        head = self.units[HEAD.name]
        self.units[WATCHDOG_UNIT] = Unit(WATCHDOG_UNIT, lambda _: watchdog_command(), head.env,
                                         namespace=HEAD.namespace, cgroup=head.cgroup)
        self.records = {name: NodeRecord(name) for name in self.units}
        self.children: dict[str, subprocess.Popen[bytes] | None] = {name: None for name in self.units}
        self.probers = {name: Prober(name, unit.liveness) for name, unit in self.units.items() if unit.liveness}
        self.seen_probe = {name: 0 for name in self.units}
        self.was_held = {name: False for name in self.units}
        self.live_once: set[str] = set()
        self.stopping = threading.Event()

    # -- one unit's life --

    def start(self, unit: Unit, why: str) -> None:
        record = self.records[unit.name]
        record.generation += 1
        log = LOG_DIR / f"{unit.name}-{record.generation}.log"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        command = unit.command(record.generation)
        if unit.namespace:
            command = ["ip", "netns", "exec", unit.namespace, *command]
        if unit.cgroup is not None:
            command = [*cgroups.enter_command(unit.cgroup), *command]
        elif unit.node is not None and unit.node.head:
            # No CPU weights: the head pod's own CPUs stood in for by a higher CPU priority,
            # or a restart under load can starve the head's dashboard agent past the
            # raylet's wait for it.
            command = ["nice", "-n", str(HEAD_NICENESS), *command]
        with open(log, "ab") as out:
            child = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **unit.env}, start_new_session=True,
            )
        self.children[unit.name] = child
        now = self.clock()
        record.pid, record.started_at, record.live_since = child.pid, now, None
        record.state, record.probe_ok, record.probe_detail, record.probe_failures = "starting", None, "", 0
        record.restarts = [*record.restarts[-49:], {"at": now, "generation": record.generation, "why": why}]
        if unit.name in self.probers:
            self.seen_probe[unit.name] = self.probers[unit.name].latest()[0]
        record.save()

    def _kill(self, unit: Unit) -> None:
        """Whatever the generation left goes with it, as with a pod: for a Ray node every
        process in its namespace; otherwise the unit's process group."""
        if unit.node is not None:
            processes.kill_namespace(unit.node.namespace)
            return
        child = self.children[unit.name]
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)

    def _ended(self, unit: Unit, why: str, *, failure: bool = True) -> None:
        """The unit's generation is over (exited, killed for a failed probe, or stopped
        with the head it belongs to)."""
        record = self.records[unit.name]
        self._kill(unit)
        self.children[unit.name] = None
        now = self.clock()
        if failure:
            stable = record.live_since is not None and now - record.live_since >= STABLE_AFTER_S
            record.consecutive_failures = 1 if stable else record.consecutive_failures + 1
            record.next_start_at = now + backoff_s(record.consecutive_failures)
            record.state = "backoff"
        else:
            record.consecutive_failures, record.next_start_at, record.state = 0, now, "waiting"
        record.pid, record.live_since, record.last_exit = None, None, why
        record.save()
        if unit.node is not None and unit.node.head and self.children[WATCHDOG_UNIT] is not None:
            # The watchdog is a container of the head pod: it goes with the head.
            self._ended(self.units[WATCHDOG_UNIT], f"the head ended ({why})", failure=False)

    def _may_start(self, unit: Unit) -> bool:
        """First bring-up order (Redis, then the head, then the workers), and the watchdog
        only beside a running head."""
        if unit is self.units[WATCHDOG_UNIT]:
            return self.children[HEAD.name] is not None and not held(HEAD.name)
        if unit.node is None:
            return True
        if unit.node.head:
            return not self.settings.fault_tolerance or REDIS_UNIT in self.live_once
        return HEAD.name in self.live_once

    def step(self, unit: Unit) -> None:
        record, child = self.records[unit.name], self.children[unit.name]
        now = self.clock()
        if child is not None and child.poll() is not None:
            self._ended(unit, f"exited with code {child.returncode}")
            child = None
        if held(unit.name):
            self.was_held[unit.name] = True
            if record.state != "held" and child is None:
                record.state = "held"
                record.save()
            return
        if self.was_held[unit.name]:
            # The drill's outage is over: start now, as a replacement pod would be.
            self.was_held[unit.name] = False
            record.consecutive_failures, record.next_start_at = 0, now
            if child is None and self._may_start(unit):
                self.start(unit, "the drill's outage ended")
                return
        if child is None:
            if not self._may_start(unit):
                return
            if now >= record.next_start_at:
                self.start(unit, record.last_exit or "first start")
            elif record.state != "backoff":
                record.state = "backoff"
                record.save()
            return
        if unit.liveness is None:
            if record.state != "live":
                record.live_since, record.state = now, "live"
                self.live_once.add(unit.name)
                record.save()
            return
        if record.state == "starting" and unit.node is not None:
            self._hurry_agents(unit.node)
        self._check_liveness(unit, now)

    def _hurry_agents(self, node: RayNode) -> None:
        """While a node starts, its raylet waits at most 15 s (fixed in Ray 2.60) for the
        dashboard agent to write its ports, then aborts the start. On this shared 2-core
        machine the agent's imports compete with a dozen other processes of the same node
        starting at the same moment: give the agents the CPU first, within the node."""
        for pid in processes.namespace_pids(node.namespace):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                is_agent = any(agent in command for agent in AGENT_SCRIPTS)
                if is_agent and os.getpriority(os.PRIO_PROCESS, pid) > AGENT_NICENESS:
                    os.setpriority(os.PRIO_PROCESS, pid, AGENT_NICENESS)
            except (OSError, ProcessLookupError):
                continue

    def _check_liveness(self, unit: Unit, now: float) -> None:
        assert unit.liveness is not None
        record, liveness = self.records[unit.name], unit.liveness
        sequence, ok, detail = self.probers[unit.name].latest()
        if sequence == self.seen_probe[unit.name] or ok is None:
            return
        self.seen_probe[unit.name] = sequence
        assert record.started_at is not None
        changed = (ok, detail) != (record.probe_ok, record.probe_detail)
        record.probe_ok, record.probe_detail = ok, detail
        if ok:
            record.probe_failures = 0
            if record.live_since is None:
                record.live_since, record.state, changed = now, "live", True
                self.live_once.add(unit.name)
        elif now - record.started_at >= liveness.initial_delay_s or record.live_since is not None:
            record.probe_failures += 1
            changed = True
            if record.probe_failures >= liveness.failure_threshold:
                self._ended(unit, f"liveness probe failed {record.probe_failures} times ({detail})")
                return
        if changed:
            record.save()

    # -- the loop --

    def run(self) -> None:
        for prober in self.probers.values():
            prober.start()
        for record in self.records.values():
            record.save()
        while not self.stopping.is_set():
            for unit in self.units.values():
                self.step(unit)
            self.stopping.wait(TICK_S)
        self.stop_all()

    def stop_all(self) -> None:
        # The watchdog and the nodes first (the head last of the nodes), Redis last: the GCS
        # must not see its store go while it still runs.
        order = [WATCHDOG_UNIT, *(node.name for node in reversed(NODES)), REDIS_UNIT]
        for name in order:
            unit = self.units.get(name)
            if unit is None:
                continue
            child = self.children[name]
            if unit.node is not None:
                processes.terminate_namespace(unit.node.namespace, grace=5)
            elif child is not None:
                processes.terminate(child.pid, grace=10)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=10)
            record = self.records[name]
            record.pid, record.state = None, "stopped"
            record.save()
        if self.hierarchy is not None:
            cgroups.remove(self.hierarchy, [node.name for node in NODES])


def main() -> int:
    state = StackState.load()
    if state is None:
        print("error: no local stack state; start the stack with `python -m local up`", file=sys.stderr)
        return 2
    supervisor = Supervisor(NodeSettings(
        fault_tolerance=state.fault_tolerance, redis_password=state.redis_password,
        storage_namespace=state.storage_namespace, auth_token_path=str(state.auth_token_path),
    ), cpu_weights=state.cpu_weights)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stopping.set())
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
