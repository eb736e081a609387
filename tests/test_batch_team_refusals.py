"""What a batch team's inputs must be, each refusal with the message that names the problem
and the fix: DNS names, namespaces of their own, worker bounds, capacity types, shapes, and
jobs that fit the team cluster."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ray_serve_ha.charts.accelerators import NEURON
from ray_serve_ha.charts.batch_jobs import (
    PyTorchBenchmark,
    XGBoostBenchmark,
    pytorch_rayjob,
    xgboost_rayjob,
)
from ray_serve_ha.charts.batch_teams import (
    AcceleratorWorkerShape,
    CpuWorkerShape,
    check_distinct_teams,
)
from tests.batch_team_inputs import CPU_TEAM, NEURON_TEAM, TEAMS

# --- refusals --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Analytics", "1team", "team-", "team.a", "team_a", ""])
def test_a_team_name_that_is_not_a_dns_1035_label_is_refused(name):
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, name=name)
    assert str(error.value) == (
        f"team name {name!r} is not a DNS-1035 label: use lowercase letters, digits and '-', "
        "starting with a letter and ending with a letter or digit"
    )


def test_a_39_character_team_name_is_accepted_and_40_refused():
    team = replace(CPU_TEAM, name="a" * 39)
    assert len(pytorch_rayjob(team)["metadata"]["name"]) == 47
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, name="a" * 40)
    assert str(error.value) == (
        f"team name {'a' * 40!r} is 40 characters long; at most 39 are allowed because the team's "
        "RayCluster and RayJob names are made from it"
    )


@pytest.mark.parametrize("namespace", ["Team", "team_a", "-team", "a" * 64])
def test_a_namespace_that_is_not_a_dns_1123_label_is_refused(namespace):
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, namespace=namespace)
    assert str(error.value) == (
        f"team 'analytics' namespace {namespace!r} is not a DNS-1123 label: at most 63 lowercase letters, "
        "digits and '-', starting and ending with a letter or digit"
    )


@pytest.mark.parametrize("namespace", ["ray-serving", "kube-system", "default"])
def test_a_shared_namespace_is_refused(namespace):
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, namespace=namespace)
    assert str(error.value) == (
        f"team 'analytics' namespace {namespace!r} is reserved; a team needs a namespace of its own, not one of: "
        "default, external-secrets, kube-node-lease, kube-public, kube-system, kuberay-system, neuron-system, "
        "nvidia-device-plugin, ray-serving"
    )


def test_min_workers_above_max_workers_is_refused():
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, min_workers=5, max_workers=4)
    assert str(error.value) == "team 'analytics' min_workers=5 is above max_workers=4"


@pytest.mark.parametrize(("min_workers", "max_workers"), [(-1, 2), (0, 0)])
def test_negative_or_no_workers_are_refused(min_workers, max_workers):
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, min_workers=min_workers, max_workers=max_workers)
    assert str(error.value) == (
        f"team 'analytics' min_workers={min_workers}, max_workers={max_workers}: min_workers must be at least 0 "
        "and max_workers at least 1"
    )


def test_an_unknown_capacity_type_is_refused():
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, capacity_type="preemptible")
    assert str(error.value) == "team 'analytics' capacity_type 'preemptible' must be one of: on-demand, spot"


def test_an_empty_image_and_a_shape_of_the_wrong_type_are_refused():
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, ray_image="")
    assert str(error.value) == "team 'analytics' ray_image '' must be an image reference"
    with pytest.raises(ValueError) as error:
        replace(CPU_TEAM, worker_shape={"cpu": "4"})
    assert str(error.value) == (
        "team 'analytics' worker_shape must be a CpuWorkerShape or an AcceleratorWorkerShape, got dict"
    )


def test_bad_worker_shapes_are_refused():
    with pytest.raises(ValueError) as error:
        AcceleratorWorkerShape(accelerator=NEURON, instance_type="g5.2xlarge")
    assert str(error.value) == (
        "instance type 'g5.2xlarge' is not a neuron instance type: inf2.xlarge, inf2.8xlarge, inf2.24xlarge, "
        "inf2.48xlarge"
    )
    with pytest.raises(ValueError) as error:
        CpuWorkerShape(cpus=0, memory_gib=4)
    assert str(error.value) == "CPU worker shape cpus=0, memory_gib=4: both must be at least 1"


def test_teams_sharing_a_name_or_namespace_are_refused():
    check_distinct_teams(TEAMS)
    with pytest.raises(ValueError) as error:
        check_distinct_teams([CPU_TEAM, replace(NEURON_TEAM, namespace=CPU_TEAM.namespace)])
    assert str(error.value) == "two teams have the namespace 'team-analytics'; each team needs its own"
    with pytest.raises(ValueError) as error:
        check_distinct_teams([CPU_TEAM, replace(NEURON_TEAM, name=CPU_TEAM.name)])
    assert str(error.value) == "two teams have the name 'analytics'; each team needs its own"


def test_a_job_larger_than_the_team_cluster_is_refused():
    with pytest.raises(ValueError) as error:
        xgboost_rayjob(CPU_TEAM, XGBoostBenchmark(workers=5))
    assert str(error.value) == (
        "5 Ray Train workers of 4 CPUs do not fit on team 'analytics''s 4 worker pods of 4 CPUs"
    )
    with pytest.raises(ValueError) as error:
        pytorch_rayjob(CPU_TEAM, PyTorchBenchmark(cpus_per_worker=8))
    assert str(error.value) == (
        "4 Ray Train workers of 8 CPUs do not fit on team 'analytics''s 4 worker pods of 4 CPUs"
    )


def test_bad_job_inputs_are_refused():
    with pytest.raises(ValueError) as error:
        XGBoostBenchmark(rows=0)
    assert str(error.value) == "XGBoost benchmark rows=0 must be at least 1"
    with pytest.raises(ValueError) as error:
        PyTorchBenchmark(epochs=0)
    assert str(error.value) == "PyTorch benchmark epochs=0 must be at least 1"
    with pytest.raises(ValueError) as error:
        xgboost_rayjob(CPU_TEAM, XGBoostBenchmark(rows=2))
    assert str(error.value) == "2 rows are fewer than the 4 Ray Train workers: every worker needs rows"
    with pytest.raises(ValueError) as error:
        xgboost_rayjob(CPU_TEAM, name="Nightly_XGBoost")
    assert str(error.value) == "RayJob name 'Nightly_XGBoost' must be a DNS-1035 label of at most 47 characters"
