"""The local stack's fault primitives, as a part of `LocalStack`: the supervisor's records,
holds that keep a unit down for an outage, and one action per way a part of the stack fails
(a node killed, terminated or drained, Redis stopped, crashed or frozen, a Ray actor's process
killed, a link cut). The drill's faults (`local.faults`, `local.drill.backends`) are made of
these."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from local import netns, processes
from local.state import LOG_DIR, REDIS_UNIT, WATCHDOG_UNIT, NodeRecord, StackError, StackState, hold, release
from local.topology import RayNode


class FaultActions:
    """Mixed into `LocalStack`, whose state says whether the stack runs Redis."""

    state: StackState

    @staticmethod
    def node_record(node: RayNode) -> NodeRecord | None:
        return NodeRecord.load(node.name)

    @staticmethod
    def record(unit: str) -> NodeRecord | None:
        """The supervisor's record of a unit: a node's name, "redis" or "serve-watchdog"."""
        return NodeRecord.load(unit)

    @staticmethod
    def hold(unit: str) -> None:
        """Keeps the supervisor from restarting `unit` until `release` (a drill's outage)."""
        hold(unit)

    @staticmethod
    def release(unit: str) -> None:
        release(unit)

    def kill_node(self, node: RayNode) -> None:
        """SIGKILL every process of the node (a crashed pod); it stays down while held."""
        self.hold(node.name)
        processes.kill_namespace(node.namespace)

    def terminate_node(self, node: RayNode, grace: float) -> None:
        """SIGTERM every process, SIGKILL after `grace`; it stays down while held."""
        self.hold(node.name)
        processes.terminate_namespace(node.namespace, grace)

    def drain_node(self, node: RayNode, grace: float) -> float:
        """A deleted pod with a grace period, as node expiry, consolidation and a spot
        interruption delete one: SIGTERM to the pod's main process only (`ray start --block`,
        which marks its node draining in the GCS and waits for it to drain), SIGKILL of
        whatever is left after `grace`. The node stays down while held (no endpoint of the
        API port meanwhile, as a terminating pod leaves the Service's endpoints). Returns how
        long the node took to exit."""
        record = self.node_record(node)
        if record is None or not record.pid or not processes.alive(record.pid):
            raise StackError(f"{node.name} is not running: nothing to drain")
        self.hold(node.name)
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
        processes.wait_gone([record.pid], grace)
        took = time.monotonic() - started
        processes.kill_namespace(node.namespace)
        return took

    def wait_restarted(self, node: RayNode | str, after_generation: int, timeout: float = 30) -> NodeRecord:
        """Waits until the supervisor has started the unit again; returns its record."""
        name = node if isinstance(node, str) else node.name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.record(name)
            if record and record.generation > after_generation and record.started_at is not None:
                return record
            time.sleep(0.1)
        raise StackError(f"the supervisor did not restart {name} within {timeout:.0f} s; see {LOG_DIR}")

    def _redis_pid(self) -> int:
        if not self.state.fault_tolerance:
            raise StackError("this stack runs without Redis (--no-ft): there is no Redis to fault")
        record = self.record(REDIS_UNIT)
        if record is None or not record.pid or not processes.alive(record.pid):
            raise StackError(f"Redis is not running (supervisor record: {record.state if record else 'none'})")
        return record.pid

    def stop_redis(self) -> None:
        """Stops Redis cleanly and keeps it down (held) until `release("redis")`."""
        pid = self._redis_pid()
        self.hold(REDIS_UNIT)
        processes.terminate(pid, grace=10)

    def kill_redis(self) -> None:
        """SIGKILL (a crash): nothing holds it, the supervisor restarts it from its AOF."""
        pid = self._redis_pid()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def freeze_redis(self) -> int:
        """SIGSTOP: Redis keeps its port and connections and answers nothing. Returns the PID
        to `thaw` (the supervisor may have replaced a frozen Redis by then)."""
        pid = self._redis_pid()
        os.kill(pid, signal.SIGSTOP)
        return pid

    @staticmethod
    def thaw(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    @staticmethod
    def ray_processes(node: RayNode, title: str) -> list[int]:
        """PIDs in the node's namespace whose process title (Ray sets it per actor) starts
        with `title`."""
        found = []
        for pid in processes.namespace_pids(node.namespace):
            try:
                name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if name.startswith(title):
                found.append(pid)
        return found

    def kill_ray_process(self, node: RayNode, title: str) -> int:
        """SIGKILL one Ray actor's worker process (Serve's controller, a replica)."""
        pids = self.ray_processes(node, title)
        if not pids:
            raise StackError(f"no process titled {title!r} in {node.name}")
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def pause_watchdog(self) -> None:
        """Stops the Serve watchdog and keeps it stopped until `resume_watchdog`."""
        self.hold(WATCHDOG_UNIT)
        record = self.record(WATCHDOG_UNIT)
        if record and record.pid:
            processes.terminate(record.pid, grace=5)

    def resume_watchdog(self) -> None:
        self.release(WATCHDOG_UNIT)

    @staticmethod
    def partition(node: RayNode) -> None:
        """Cuts the node off the bridge (its link down on the bridge side): its processes
        run on, nothing reaches them and they reach nothing."""
        netns.set_link(node, up=False)

    @staticmethod
    def heal(node: RayNode) -> None:
        netns.set_link(node, up=True)

