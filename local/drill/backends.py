"""Where the drill sends traffic and how it injects a fault (the kinds are in `local.faults`):
the local stack (processes in network namespaces, supervised) here, or a Kubernetes cluster
(the RayService's pods: `local.drill.kube_backend`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from local.faults import FAULT_NAMES, FAULTED_WORKER, FAULTS

if TYPE_CHECKING:
    from local.stack import LocalStack
    from local.topology import RayNode

# The drill's clock: seconds since the drill started.
Clock = Callable[[], float]

CONTROLLER_TITLE = "ray::ServeController"
REPLICA_TITLE = "ray::ServeReplica:"


class DrillError(RuntimeError):
    """The drill cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class FaultTimes:
    fault_at: float
    restarted_at: float | None


class Backend(Protocol):
    name: str
    fault_tolerance: bool
    base_url: str

    def inject(self, fault: str, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes: ...

    def serve_healthy(self) -> bool: ...

    def recovery(self) -> dict[str, object]: ...


class LocalBackend:
    """Traffic through the API port (the serve Service's stand-in: both workers' proxies)
    unless another target is given; faults on the processes and links of the local stack.
    The supervisor restarts what a fault took down once the fault's outage is over."""

    name = "local"

    def __init__(self, stack: LocalStack, target_url: str | None = None) -> None:
        from local.topology import API_URL, check_local_target

        self.stack = stack
        self.fault_tolerance = stack.state.fault_tolerance
        self.base_url = check_local_target(target_url or API_URL)
        self._before: dict[str, int] = {}
        self._may_restart: tuple[str, ...] = ()
        # A fault that loses a replica: healthy only once a replacement runs on that node (node
        # IP, the fault's time, the replicas on that node before it or None if unknown).
        self._replaced_on: tuple[str, float, set[str] | None] | None = None
        self._head_generation_at_restart: int | None = None
        self.drain_took_s: float | None = None
        self._inject: dict[str, Callable[[float, float, Clock], FaultTimes]] = {
            "head": self._head, "head-graceful": self._head_graceful, "redis": self._redis,
            "redis-crash": self._redis_crash, "redis-freeze": self._redis_freeze, "worker": self._worker,
            "worker-drain": self._worker_drain, "partition": self._partition,
            "controller-kill": self._controller_kill, "replica-kill": self._replica_kill,
            "head-worker": self._head_worker,
        }

    def implemented(self) -> set[str]:
        return set(self._inject)

    def _generations(self) -> dict[str, int]:
        from local.state import REDIS_UNIT
        from local.topology import NODES

        names = [node.name for node in NODES] + ([REDIS_UNIT] if self.fault_tolerance else [])
        records = {name: self.stack.record(name) for name in names}
        return {name: record.generation if record else 0 for name, record in records.items()}

    def _restart(self, node: RayNode, outage_s: float, clock: Clock) -> float:
        """Ends a held node's outage; returns when (on the drill's clock) the supervisor
        started it again."""
        time.sleep(outage_s)
        generation = self._generations()[node.name]
        self.stack.release(node.name)
        record = self.stack.wait_restarted(node, generation)
        if node.head:
            self._head_generation_at_restart = record.generation - 1
        assert record.started_at is not None  # wait_restarted returns only a started record
        return clock() - (time.monotonic() - record.started_at)

    def inject(self, fault: str, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        kind = FAULTS.get(fault)
        if kind is None:
            raise DrillError(f"unknown fault {fault!r}; the local stack knows: {', '.join(FAULT_NAMES)}")
        if kind.needs_gcs_store and not self.fault_tolerance:
            raise DrillError(f"the {fault} fault needs the GCS store: run it without --no-ft")
        self._before = self._generations()
        self._may_restart = kind.may_restart
        self._head_generation_at_restart = None
        self._replaced_on = None
        if kind.replica_replaced_on is not None:
            from local.topology import NODE_NAMED

            node = NODE_NAMED[kind.replica_replaced_on]
            self._replaced_on = (node.ip, time.time(), self._replicas_on(node.ip))
        return self._inject[fault](outage_s, grace_s, clock)

    # -- the faults, one method each (the table in local.faults says what they stand for) --

    def _held_node_fault(self, node: RayNode, act: Callable[[], None], outage_s: float, clock: Clock) -> FaultTimes:
        fault_at = clock()
        try:
            act()
            restarted_at = self._restart(node, outage_s, clock)
        finally:
            self.stack.release(node.name)
        return FaultTimes(fault_at, restarted_at)

    def _head(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        from local.topology import HEAD

        return self._held_node_fault(HEAD, lambda: self.stack.kill_node(HEAD), outage_s, clock)

    def _head_graceful(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        from local.topology import HEAD

        return self._held_node_fault(HEAD, lambda: self.stack.terminate_node(HEAD, grace_s), outage_s, clock)

    def _worker(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        return self._held_node_fault(FAULTED_WORKER, lambda: self.stack.kill_node(FAULTED_WORKER), outage_s, clock)

    def _worker_drain(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        from local.state import StackError

        def drain() -> None:
            try:
                self.drain_took_s = self.stack.drain_node(FAULTED_WORKER, grace_s)
            except StackError as error:
                raise DrillError(str(error)) from None

        return self._held_node_fault(FAULTED_WORKER, drain, outage_s, clock)

    def _head_worker(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        from local.topology import HEAD

        fault_at = clock()
        nodes = (HEAD, FAULTED_WORKER)
        try:
            # Together, as one machine failure or one zone outage would take both.
            killers = [threading.Thread(target=self.stack.kill_node, args=(node,)) for node in nodes]
            for killer in killers:
                killer.start()
            for killer in killers:
                killer.join()
            time.sleep(outage_s)
            generations = self._generations()
            for node in nodes:
                self.stack.release(node.name)
            records = [self.stack.wait_restarted(node, generations[node.name]) for node in nodes]
            self._head_generation_at_restart = records[0].generation - 1
            started = max(r.started_at or 0.0 for r in records)
            restarted_at = clock() - (time.monotonic() - started)
        finally:
            for node in nodes:
                self.stack.release(node.name)
        return FaultTimes(fault_at, restarted_at)

    def _redis_generation(self) -> int:
        from local.state import REDIS_UNIT

        return self._generations()[REDIS_UNIT]

    def _redis_restarted_at(self, generation: int, clock: Clock) -> float:
        from local.state import REDIS_UNIT

        # The GCS loses its store and exits; the supervisor restarts Redis (from its AOF) and
        # the head (with back-off while Redis is away); the new GCS reloads from Redis.
        record = self.stack.wait_restarted(REDIS_UNIT, generation, timeout=60)
        assert record.started_at is not None
        return clock() - (time.monotonic() - record.started_at)

    def _redis(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        from local.state import REDIS_UNIT

        generation = self._redis_generation()
        fault_at = clock()
        try:
            self.stack.stop_redis()
            time.sleep(outage_s)
        finally:
            self.stack.release(REDIS_UNIT)
        return FaultTimes(fault_at, self._redis_restarted_at(generation, clock))

    def _redis_crash(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        generation = self._redis_generation()
        fault_at = clock()
        self.stack.kill_redis()
        return FaultTimes(fault_at, self._redis_restarted_at(generation, clock))

    def _redis_freeze(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        generation = self._redis_generation()
        fault_at = clock()
        pid = self.stack.freeze_redis()
        try:
            time.sleep(outage_s)
        finally:
            self.stack.thaw(pid)
        if self._redis_generation() > generation:
            # Frozen past its liveness probe: the supervisor replaced it, as ElastiCache would.
            return FaultTimes(fault_at, self._redis_restarted_at(generation, clock))
        return FaultTimes(fault_at, clock())

    def _partition(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        from local.topology import HEAD

        # Nothing restarts: the head runs on behind its cut link, the workers keep serving
        # and wait for it, and no node may be declared dead for it.
        fault_at = clock()
        self.stack.partition(HEAD)
        try:
            time.sleep(outage_s)
        finally:
            self.stack.heal(HEAD)
        return FaultTimes(fault_at, clock())

    def _controller_kill(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        from local.state import StackError
        from local.topology import HEAD

        fault_at = clock()
        try:
            self.stack.kill_ray_process(HEAD, CONTROLLER_TITLE)
        except StackError as error:
            raise DrillError(f"{error}: is Serve running?") from None
        return FaultTimes(fault_at, None)

    def _replica_kill(self, outage_s: float, grace_s: float, clock: Clock) -> FaultTimes:
        from local.state import StackError

        fault_at = clock()
        try:
            self.stack.kill_ray_process(FAULTED_WORKER, REPLICA_TITLE)
        except StackError as error:
            raise DrillError(f"{error}: is a replica running there?") from None
        return FaultTimes(fault_at, None)

    # -- recovery --

    def _replicas_on(self, ip: str) -> set[str] | None:
        """The ids of the replicas Serve places on the node (any state), None if Serve does
        not answer."""
        status = self.stack.serve_status()
        if status is None:
            return None
        return {r["replica_id"] for d in status.get("deployments", {}).values() for r in d.get("replicas", [])
                if r.get("node_ip") == ip}

    def serve_healthy(self) -> bool:
        from local.cluster_view import serve_status_healthy

        status = self.stack.serve_status()
        # Every worker's proxy answering too: a worker is a ready endpoint of the serve Service
        # only then (the Kubernetes backend waits for Ready pods).
        if not serve_status_healthy(status) or self.stack.proxies_down():
            return False
        if self._replaced_on is None:
            return True
        # Serve's status may still count the lost replica for a moment: wait for its
        # replacement on that node, a replica that was not there before the fault (a
        # replacement's start time is when Serve asked for it, which can be before a fault
        # that lands during the recovery; where Serve did not answer then, the start time it is).
        ip, since, before = self._replaced_on
        assert status is not None  # healthy implies a status was read
        replicas = [r for d in status["deployments"].values() for r in d.get("replicas", [])]
        return any(r.get("node_ip") == ip and r.get("state") == "RUNNING"
                   and (r.get("replica_id") not in before if before is not None else r.get("start_time_s", 0) > since)
                   for r in replicas)

    def recovery(self) -> dict[str, object]:
        """What the supervisor did: starts per unit since the fault, how many starts the head
        needed to recover, and restarts of units the fault may not restart (a worker wrongly
        declared dead would show up here)."""
        from local.topology import HEAD

        after = self._generations()
        starts = {name: after[name] - self._before.get(name, 0) for name in after}
        details: dict[str, object] = {"starts": starts}
        if self._head_generation_at_restart is not None:
            details["head_starts_to_recover"] = after[HEAD.name] - self._head_generation_at_restart
        details["unplanned_restarts"] = sorted(n for n, count in starts.items()
                                               if count and n not in self._may_restart)
        if self.drain_took_s is not None:
            details["drain_took_s"] = round(self.drain_took_s, 1)
        return details
