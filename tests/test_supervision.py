"""What the local supervisor is made of, without the stack: the CPU weights it gives each node
(the kubelet's conversion, a cgroup entered before anything runs, a clear fallback), the
liveness probe of Redis against a real redis-server (answering, frozen, gone), and the fault
table every drill reads. The running stack is in tests/test_local_stack.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from local import cgroups
from local.faults import FAULT_KINDS, FAULT_NAMES, FAULTS, KUBERNETES_FAULTS
from local.redis_client import RedisClient, ping
from local.state import REDIS_UNIT, WATCHDOG_UNIT, NodeRecord, StackState, unit_names
from local.topology import HEAD, NODES, WORKERS
from local.units import pod_cpu_request_milli
from ray_serve_ha.charts.ray_pods import KIND_HEAD_RESOURCES, KIND_WORKER_RESOURCES, SERVE_WATCHDOG_RESOURCES

# ---- CPU weights, as the kubelet sets them -------------------------------------------------


@pytest.mark.parametrize("quantity,milli,shares,weight", [
    ("1", 1000, 1024, 39), ("100m", 100, 102, 4), ("2", 2000, 2048, 79), ("1.5", 1500, 1536, 59),
    ("1m", 1, 2, 1), ("500", 500_000, 262144, 10000),
])
def test_cpu_requests_become_the_kubelets_shares_and_weights(quantity, milli, shares, weight):
    assert cgroups.milli_cpu(quantity) == milli
    assert cgroups.shares_for(milli) == shares
    assert cgroups.weight_for(shares) == weight


def test_each_node_gets_the_cpu_request_of_its_pod_in_the_kind_profile():
    """The chart's own CPU pods (kind profile), the same workload: the head pod is its Ray
    container plus the watchdog container; a worker is one container."""
    head = pod_cpu_request_milli(HEAD)
    assert head == cgroups.milli_cpu(KIND_HEAD_RESOURCES.cpu) + cgroups.milli_cpu(SERVE_WATCHDOG_RESOURCES.cpu) == 1100
    workers = [pod_cpu_request_milli(w) for w in WORKERS]
    assert workers == [cgroups.milli_cpu(KIND_WORKER_RESOURCES.cpu)] * 2 == [1000] * 2


def test_a_node_cgroup_gets_its_weight_and_a_process_is_born_inside_it(tmp_path):
    hierarchy = cgroups.Hierarchy(1, tmp_path, "cpu.shares")
    group = cgroups.create(hierarchy, "head", 1100)
    assert group == tmp_path / "rsha-head" and (group / "cpu.shares").read_text() == "1126"
    assert cgroups.read_weight(hierarchy, "head") == 1126
    (group / "cgroup.procs").write_text("")
    # The prefix writes the shell's own PID, then execs the command in that same process.
    done = subprocess.run([*cgroups.enter_command(group), "sh", "-c", "echo $$"], capture_output=True, text=True)
    assert done.returncode == 0 and (group / "cgroup.procs").read_text().strip() == done.stdout.strip()
    (group / "cgroup.procs").unlink()
    (group / "cpu.shares").unlink()
    cgroups.remove(hierarchy, ["head", "worker-1"])
    assert not group.exists()


def test_cgroup_v2_takes_the_mapped_weight(tmp_path):
    hierarchy = cgroups.Hierarchy(2, tmp_path, "cpu.weight")
    assert (cgroups.create(hierarchy, "worker-1", 1000) / "cpu.weight").read_text() == "39"


def test_without_a_writable_cgroup_it_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path)
    hierarchy, why = cgroups.available()
    assert hierarchy is None and why == f"no cgroup cpu controller mounted under {tmp_path}"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cgroups.available() == (None, "not root: cgroups cannot be written")


# ---- Redis's liveness probe, against a real redis-server ------------------------------------


def test_redis_liveness_answers_fails_when_frozen_and_when_gone(redis_server):
    server, port = redis_server
    assert ping("127.0.0.1", port, "pw", 1.0) == (True, "PONG")
    assert ping("127.0.0.1", port, "wrong", 1.0)[0] is False
    os.kill(server.pid, signal.SIGSTOP)  # the redis-freeze fault: connections accepted, nothing answered
    started = time.monotonic()
    assert ping("127.0.0.1", port, "pw", 1.0) == (False, "PING: TimeoutError")
    assert time.monotonic() - started < 3
    os.kill(server.pid, signal.SIGCONT)
    assert ping("127.0.0.1", port, "pw", 1.0) == (True, "PONG")
    server.kill()
    server.wait()
    assert ping("127.0.0.1", port, "pw", 1.0) == (False, "PING: ConnectionRefusedError")


def test_the_client_reads_and_writes_binary_hash_fields(redis_server):
    _, port = redis_server
    with RedisClient("127.0.0.1", port, password="pw") as client:
        assert client.command("HSET", "RAYns@NODE", b"\x00\xffid", b"\x01\x02") == 1
        assert client.hash("RAYns@NODE") == {b"\x00\xffid": b"\x01\x02"}
        assert client.command("HGET", "RAYns@NODE", b"missing") is None


# ---- the fault table --------------------------------------------------------------------------


def test_every_fault_kind_is_implemented_and_described():
    from local.drill.backends import LocalBackend

    class Stack:
        state = StackState(fault_tolerance=True)

    assert LocalBackend(Stack()).implemented() == set(FAULT_NAMES)
    assert set(FAULT_NAMES) == {"head", "head-graceful", "redis", "redis-crash", "redis-freeze", "worker",
                                "worker-drain", "partition", "controller-kill", "replica-kill", "head-worker"}
    units = set(unit_names())
    for kind in FAULT_KINDS:
        assert kind.summary and set(kind.may_restart) <= units - {WATCHDOG_UNIT}, kind
        assert kind.replica_replaced_on in (None, *(n.name for n in NODES))
    assert {k.name for k in FAULT_KINDS if k.needs_gcs_store} == {"redis", "redis-crash", "redis-freeze"}
    assert all(REDIS_UNIT in FAULTS[k].may_restart for k in ("redis", "redis-crash", "redis-freeze"))
    assert KUBERNETES_FAULTS == ("head", "head-graceful", "worker-drain")


def test_state_knows_every_supervised_unit():
    assert unit_names() == ["redis", "head", "worker-1", "worker-2", "serve-watchdog"]


def test_the_chaos_matrix_plan_comes_from_the_fault_table():
    import argparse

    from local.drill.matrix import matrix_plan
    from local.faults import MATRIX

    assert MATRIX == (("head", 10), ("head-graceful", 3), ("redis", 3), ("worker", 2), ("worker-drain", 2),
                      ("partition", 1))
    assert FAULTS["partition"].matrix_outage_s == 30.0
    assert matrix_plan("worker-drain=3, head=0") == [("worker-drain", 3), ("head", 0)]
    for bad, says in (("drain=1", "unknown fault kind 'drain'"), ("head=x", "head=N with N from 0 to 100"),
                      ("head=101", "head=N with N from 0 to 100"), ("head", "head=N")):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(says)):
            matrix_plan(bad)


def test_status_says_a_unit_exited_and_is_held_before_the_supervisor_has_seen_it(monkeypatch):
    """Right after a drill kills and holds a node, its record still says live: status tells
    what is true (its process is gone, a hold keeps it down), not the stale record."""
    import local.__main__ as cli

    gone = subprocess.Popen(["true"])
    gone.wait()
    monkeypatch.setattr(cli, "held", lambda name: name == "worker-2")
    record = NodeRecord("worker-2", pid=gone.pid, generation=1, state="live", probe_ok=True, probe_detail="success")
    ok, text = cli._unit_line(record)
    assert not ok
    assert text.startswith("process NOT running (pid ")
    assert "exited, not yet seen by the supervisor, held (kept down until the drill releases it)" in text
    record.state = "held"
    assert "), held, generation 1" in cli._unit_line(record)[1]
