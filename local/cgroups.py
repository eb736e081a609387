"""A CPU weight for each local node, from its pod's CPU request, as the kubelet gives one.

On Kubernetes every pod runs in a cgroup whose CPU weight the kubelet derives from the
pod's CPU request (`cpu.shares` = milliCPU × 1024 / 1000 on cgroup v1; on cgroup v2 that
figure mapped onto `cpu.weight`). Under contention each pod then gets CPU in proportion to
its request, however many processes it runs. Without it, on this shared machine, a Ray head
restarting under load competes process by process with two workers' replicas and the
clients, and its start is measured slower than a pod with CPU of its own would start.

The local stack makes one cgroup per node (`rsha-<node>`) under the supervisor's own cgroup,
with the weight of the pod that runs the same thing on Kubernetes (the kind profile of
`charts/profiles.py`: CPU workers serving the tiny model), and starts each node's processes
inside it. Only the weight is applied (the request), not a CPU limit.

Where no cgroup can be written (no cgroup v1 `cpu` hierarchy and no cgroup v2 `cpu`
controller, or not as root), `available()` says why and the supervisor falls back to the
older stand-in: the head's processes at a higher CPU priority (nice).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from local.topology import PREFIX

CGROUP_ROOT = Path(os.environ.get("RAY_SERVE_HA_CGROUP_ROOT", "/sys/fs/cgroup"))

# The kubelet's conversion (pkg/kubelet/cm/helpers_linux.go MilliCPUToShares, and the
# cgroup v2 mapping of runc/libcontainer ConvertCPUSharesToCgroupV2Value).
MIN_SHARES = 2
MAX_SHARES = 262144
SHARES_PER_CPU = 1024


def shares_for(milli_cpu: int) -> int:
    if milli_cpu <= 0:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, milli_cpu * SHARES_PER_CPU // 1000))


def weight_for(shares: int) -> int:
    """cgroup v2 `cpu.weight` (1..10000) for a v1 `cpu.shares` value."""
    return 1 + ((shares - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


def milli_cpu(quantity: str) -> int:
    """A Kubernetes CPU quantity ("1", "500m", "1.5") in millicores."""
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return round(float(quantity) * 1000)


@dataclass(frozen=True)
class Hierarchy:
    """Where node cgroups go and which file takes the weight."""

    version: int  # 1 or 2
    parent: Path  # the supervisor's own cgroup: node groups are made under it
    weight_file: str  # cpu.shares (v1) or cpu.weight (v2)

    def describe(self) -> str:
        return f"cgroup v{self.version} {self.weight_file} under {self.parent}"

    def value(self, milli: int) -> int:
        shares = shares_for(milli)
        return shares if self.version == 1 else weight_for(shares)

    def group(self, name: str) -> Path:
        return self.parent / f"{PREFIX}-{name}"


def _own_cgroup(controller: str | None) -> str:
    """This process's cgroup path for a v1 controller (None: the v2 unified path)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (controller in controllers.split(",")):
            return path.lstrip("/")
    return ""


def _mounts() -> list[tuple[str, str, str]]:
    entries = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4:
            entries.append((fields[1], fields[2], fields[3]))  # mount point, type, options
    return entries


def available() -> tuple[Hierarchy | None, str]:
    """The hierarchy to use, or None and why none can be written."""
    if os.geteuid() != 0:
        return None, "not root: cgroups cannot be written"
    problems = []
    for point, kind, options in _mounts():
        if kind == "cgroup" and "cpu" in options.split(",") and Path(point).resolve().is_relative_to(CGROUP_ROOT):
            parent = Path(point) / _own_cgroup("cpu")
            if os.access(parent, os.W_OK) and (parent / "cpu.shares").exists():
                return Hierarchy(1, parent, "cpu.shares"), ""
            problems.append(f"cgroup v1 cpu at {parent} is not writable")
    for point, kind, _ in _mounts():
        if kind != "cgroup2" or not Path(point).resolve().is_relative_to(CGROUP_ROOT):
            continue
        parent = Path(point) / _own_cgroup(None)
        try:
            controllers = (parent / "cgroup.controllers").read_text().split()
        except OSError as error:
            problems.append(f"cgroup v2 at {point}: {error.strerror}")
            continue
        if "cpu" not in controllers:
            problems.append(f"cgroup v2 at {point} has no cpu controller")
            continue
        try:
            (parent / "cgroup.subtree_control").write_text("+cpu")
        except OSError as error:
            problems.append(f"cgroup v2 at {parent}: cannot enable cpu for children ({error.strerror})")
            continue
        return Hierarchy(2, parent, "cpu.weight"), ""
    return None, "; ".join(problems) or f"no cgroup cpu controller mounted under {CGROUP_ROOT}"


def create(hierarchy: Hierarchy, name: str, milli: int) -> Path:
    """The node's cgroup with the weight of `milli` millicores; returns its path."""
    group = hierarchy.group(name)
    group.mkdir(exist_ok=True)
    (group / hierarchy.weight_file).write_text(str(hierarchy.value(milli)))
    return group


def enter_command(group: Path) -> list[str]:
    """A command prefix that moves itself into `group` and then runs the rest: every process
    the node starts is born inside its cgroup (no window in the root group)."""
    return ["sh", "-c", f'echo $$ > "{group}/cgroup.procs" && exec "$@"', "sh"]


def read_weight(hierarchy: Hierarchy, name: str) -> int | None:
    try:
        return int((hierarchy.group(name) / hierarchy.weight_file).read_text())
    except (OSError, ValueError):
        return None


def remove(hierarchy: Hierarchy, names: list[str]) -> None:
    """Removes the node cgroups (each must be empty: their processes are gone first)."""
    for name in names:
        with contextlib.suppress(OSError):
            hierarchy.group(name).rmdir()


def leftovers(names: list[str]) -> list[str]:
    hierarchy, _ = available()
    if hierarchy is None:
        return []
    return [f"cgroup {hierarchy.group(n)}" for n in names if hierarchy.group(n).exists()]
