"""What the local stack keeps on disk, in one module that imports nothing else of the stack:
the stack's state file (what `up` decided and started), the supervisor's record of each unit
it keeps running (a Ray node, Redis, the Serve watchdog), and the holds a drill puts on a
unit to keep it down for an outage.

`local.stack` (bring-up, teardown, faults) and `local.supervisor` (the loop that keeps the
units running) both read and write these; neither imports the other.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from local.topology import NODES, STATE_DIR

STATE_FILE = STATE_DIR / "state.json"
NODE_DIR = STATE_DIR / "nodes"
HOLD_DIR = STATE_DIR / "holds"
LOG_DIR = STATE_DIR / "logs"
REDIS_DIR = STATE_DIR / "redis"
REDIS_CONFIG = REDIS_DIR / "redis.conf"
# The serve config the stack deployed: what the local stand-in for KubeRay submits again when
# the cluster has lost its Serve application (KubeRay keeps it in the RayService spec).
SERVE_CONFIG_FILE = STATE_DIR / "serve-config.json"
# What the Serve control-plane watchdog last saw and did (it writes, `status` reads).
WATCHDOG_STATUS_FILE = STATE_DIR / "serve-watchdog.json"

# The supervised units besides the Ray nodes (whose names come from local.topology).
REDIS_UNIT = "redis"
WATCHDOG_UNIT = "serve-watchdog"


class StateDirError(RuntimeError):
    """The state directory cannot be used; the message says why and what to do."""


class StackError(RuntimeError):
    """The local stack cannot do what was asked; the message says why and what to do."""


def private_state_dir() -> None:
    """The state directory, root's alone (it may exist from an earlier run, or be a
    world-writable /tmp path someone else created: then it is refused)."""
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = STATE_DIR.stat()
    if info.st_uid != os.geteuid():
        raise StateDirError(f"{STATE_DIR} belongs to another user (uid {info.st_uid}): "
                            "remove it or set RAY_SERVE_HA_LOCAL_DIR")
    STATE_DIR.chmod(0o700)


@dataclass
class StackState:
    fault_tolerance: bool
    redis_password: str = ""
    supervisor_pid: int | None = None
    forwarder_pid: int | None = None
    gradio_pid: int | None = None
    prometheus_pid: int | None = None
    # The foreground `up` process: `down` from another terminal ends it too.
    owner_pid: int | None = None
    # Identical across head restarts, as KubeRay uses the RayCluster's UID.
    storage_namespace: str = field(default_factory=lambda: f"local-{secrets.token_hex(4)}")
    # Give each node's processes a CPU weight from its pod's request (a cgroup per node, as
    # the kubelet does); False: the older stand-in, the head at a higher CPU priority (nice).
    cpu_weights: bool = True

    @property
    def auth_token_path(self) -> Path:
        return STATE_DIR / "ray-auth-token"

    def pids(self) -> list[int]:
        found = [self.supervisor_pid, self.forwarder_pid, self.gradio_pid, self.prometheus_pid]
        for name in unit_names():
            record = NodeRecord.load(name)
            if record and record.pid:
                found.append(record.pid)
        return [p for p in found if p]

    def save(self) -> None:
        private_state_dir()
        temporary = STATE_FILE.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2))
        temporary.chmod(0o600)
        os.replace(temporary, STATE_FILE)

    @staticmethod
    def load() -> StackState | None:
        try:
            return StackState(**json.loads(STATE_FILE.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def unit_names() -> list[str]:
    return [REDIS_UNIT, *(node.name for node in NODES), WATCHDOG_UNIT]


@dataclass
class NodeRecord:
    """What the supervisor knows of one unit (a Ray node, Redis, the watchdog); written to
    nodes/<name>.json on each change."""

    name: str
    pid: int | None = None
    generation: int = 0  # how many times the unit was started; names a node's temp dir
    started_at: float | None = None  # time.monotonic() of the last start (same clock machine-wide)
    live_since: float | None = None  # first passing probe of this generation
    state: str = "waiting"  # waiting | starting | live | held | backoff | stopped
    probe_ok: bool | None = None
    probe_detail: str = ""
    probe_failures: int = 0  # consecutive failed probes of this generation
    consecutive_failures: int = 0  # failed generations in a row (back-off)
    next_start_at: float = 0.0
    last_exit: str = ""  # why the previous generation ended
    restarts: list[dict[str, Any]] = field(default_factory=list)  # {"at", "generation", "why"}, newest last

    def save(self) -> None:
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        path = NODE_DIR / f"{self.name}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temporary, path)

    @staticmethod
    def load(name: str) -> NodeRecord | None:
        try:
            return NodeRecord(**json.loads((NODE_DIR / f"{name}.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None


def hold_path(name: str) -> Path:
    return HOLD_DIR / name


def held(name: str) -> bool:
    return hold_path(name).exists()


def hold(name: str) -> None:
    """Keeps the supervisor from starting unit `name` until `release` (a drill's outage)."""
    HOLD_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    hold_path(name).write_text(str(os.getpid()))


def release(name: str) -> None:
    hold_path(name).unlink(missing_ok=True)
