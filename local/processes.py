"""Starting and stopping the local stack's processes by PID, never by name (`ray stop`
would kill every Ray process on the machine, other users' included)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def spawn(
    command: list[str], *, log: Path, env: dict[str, str] | None = None, namespace: str | None = None
) -> int:
    """Starts `command` in its own session (inside `namespace` if given), output to `log`."""
    if namespace:
        command = ["ip", "netns", "exec", namespace, *command]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return process.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not yet reaped) is not alive.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def namespace_pids(namespace: str) -> list[int]:
    """Every process inside a network namespace: what a pod's "all processes" is here."""
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
    return [int(p) for p in result.stdout.split()] if result.returncode == 0 else []


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pids)
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def kill_namespace(namespace: str) -> list[int]:
    """SIGKILLs every process in the namespace (a crashed pod). Returns the PIDs."""
    pids = namespace_pids(namespace)
    _signal(pids, signal.SIGKILL)
    wait_gone(pids, 10)
    return pids


def terminate_namespace(namespace: str, grace: float) -> list[int]:
    """SIGTERM, then SIGKILL after `grace` seconds, as Kubernetes stops a pod (SIGTERM can
    leave gcs_server hanging)."""
    pids = namespace_pids(namespace)
    _signal(pids, signal.SIGTERM)
    if not wait_gone(pids, grace):
        _signal(namespace_pids(namespace), signal.SIGKILL)
        wait_gone(pids, 10)
    return pids


def terminate(pid: int, grace: float = 5) -> None:
    """SIGTERM a process group started by `spawn`, SIGKILL after `grace` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not wait_gone([pid], grace):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_gone([pid], 10)
