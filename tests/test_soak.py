"""The seeded soak without a stack: its plan (the same seed draws the same faults, outages and
gaps, from every kind), its report's last line, and bad input refused with one message and
exit 2 before any fault. The soak on the running stack is in tests/test_local_stack.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from local.drill.soak import FaultResult, SoakReport, main, plan
from local.faults import FAULT_NAMES, FAULTS
from local.state import StackState
from ray_serve_ha.charts.ray_env import WORKER_TERMINATION_GRACE_S
from tests.conftest import ROOT


def test_the_same_seed_draws_the_same_plan_and_another_seed_another():
    assert plan(7, 40, FAULT_NAMES, 0.25) == plan(7, 40, FAULT_NAMES, 0.25)
    assert plan(7, 40, FAULT_NAMES, 0.25) != plan(8, 40, FAULT_NAMES, 0.25)


def test_a_long_plan_draws_every_kind_and_lands_some_faults_during_a_recovery():
    planned = plan(1, 60, FAULT_NAMES, 0.25)
    assert set(Counter(p.kind for p in planned)) == set(FAULT_NAMES)
    overlapping = [p for p in planned if p.overlap_gap_s is not None]
    assert 5 <= len(overlapping) <= 25 and planned[-1].overlap_gap_s is None
    for fault in planned:
        kind = FAULTS[fault.kind]
        assert (fault.outage_s > 0) == kind.uses_outage, fault
        if fault.kind == "worker-drain":
            assert fault.grace_s == WORKER_TERMINATION_GRACE_S  # the worker pod's grace period
        assert 0 < fault.gap_s <= 10 and (fault.overlap_gap_s is None or 0 < fault.overlap_gap_s <= 10)


def test_kinds_and_overlap_narrow_the_draws():
    planned = plan(3, 30, ("head", "redis-crash"), 0.0)
    assert {p.kind for p in planned} == {"head", "redis-crash"}
    assert all(p.overlap_gap_s is None for p in planned)


def test_the_last_line_is_exactly_the_counts():
    faults = [FaultResult(1, "head", 5, 0, 1.0, 6.0, 6.0, False, 40.0, 34.0),
              FaultResult(2, "worker", 5, 0, 50.0, 55.0, 55.0, False, stuck=True)]
    report = SoakReport(seed=1, kinds=["head", "worker"], bound_s=300, overlap=0.25, started_wall=0.0, faults=faults,
                        requests=1234, failed=0, retried=3, errors={}, p50_ms=80.0, p99_ms=300.0, duration_s=400.0)
    assert report.last_line() == "2 faults, 1234 requests, 0 failed, 1 stuck"
    assert report.to_json()["by_kind"]["head"] == {
        "faults": 1, "landed_during_recovery": 0, "to_healthy_median_s": 34.0, "to_healthy_max_s": 34.0, "stuck": 0}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--seed", "1", "--faults", "-1"], "argument --faults: -1 must be at least 1 and at most 1000"),
        (["--seed", "1", "--faults", "0"], "argument --faults: 0 must be at least 1 and at most 1000"),
        (["--seed", "1", "--faults", "100000"], "argument --faults: 100000 must be at least 1 and at most 1000"),
        (["--seed", "1", "--faults", "ten"], "argument --faults: 'ten' is not an integer"),
        (["--seed", "-3", "--faults", "2"], "argument --seed: -3 must be at least 0"),
        (["--faults", "2"], "the following arguments are required: --seed"),
        (["--seed", "1", "--faults", "2", "--kinds", "head,meteor"], "argument --kinds: unknown fault kind 'meteor'"),
        (["--seed", "1", "--faults", "2", "--kinds", ","], "argument --kinds: no fault kind given"),
        (["--seed", "1", "--faults", "2", "--overlap", "1.5"],
         "argument --overlap: 1.5 must be at least 0 and at most 1"),
        (["--seed", "1", "--faults", "2", "--bound", "0"], "argument --bound: 0 must be above 0 and at most 3600"),
        (["--seed", "1", "--faults", "2", "--out", "/etc/hostname"], "--out /etc/hostname is not a folder"),
        (["--seed", "1", "--faults", "2"], "no local stack is running: start it with `make demo`"),
        (["--seed", "1", "--faults", "2", "--kinds", "head,redis-crash"],
         "the running stack has no Redis (--no-ft), which redis-crash need"),
    ],
)
def test_bad_input_is_one_message_and_exit_2_before_any_fault(argv, message, capsys, monkeypatch):
    from local.drill import soak

    def forbidden(*_, **__):
        raise AssertionError("the soak acted before validating its input")

    monkeypatch.setattr(soak, "run_soak", forbidden)
    monkeypatch.setattr("local.drill.backends.LocalBackend.inject", forbidden)
    monkeypatch.setattr("local.stack.check_platform", lambda: None)
    no_ft = StackState(fault_tolerance=False)
    monkeypatch.setattr("local.stack.running_state", lambda: no_ft if any("redis" in a for a in argv) else None)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("error:") == 1


def test_with_no_stack_running_the_command_says_so_and_exits_2(tmp_path):
    """As a user runs it, in a state folder where no stack runs: one message, exit 2."""
    done = subprocess.run([sys.executable, "-m", "local.drill.soak", "--seed", "1", "--faults", "3"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "RAY_SERVE_HA_LOCAL_DIR": str(tmp_path / "state")})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    expected = "no local stack is running" if os.geteuid() == 0 else "needs root"
    assert expected in done.stderr.strip().splitlines()[-1]


def test_the_report_draws_every_request_and_each_fault_until_healthy(tmp_path):
    from local.drill.load import Sample
    from local.drill.soak import plot_soak

    faults = [FaultResult(1, "head", 5, 0, 10.0, 11.0, 11.0, False, 40.0, 29.0),
              FaultResult(2, "redis-crash", 0, 0, 50.0, 50.5, None, False, 70.0, 19.5)]
    report = SoakReport(seed=1, kinds=["head", "redis-crash"], bound_s=300, overlap=0.25, started_wall=0.0,
                        faults=faults, requests=3, failed=1, retried=0, errors={"ReadError": 1}, p50_ms=80.0,
                        p99_ms=90.0, duration_s=80.0)
    samples = [Sample(1.0, 0.08, True, "client-1"), Sample(20.0, 0.09, True, "client-1"),
               Sample(55.0, 0.5, False, "client-2", "ReadError")]
    path = plot_soak(samples, report, tmp_path / "nested" / "soak-1.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000
