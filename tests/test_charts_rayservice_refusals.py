"""What the RayService chart refuses, each with the message that names the problem and the fix:
names KubeRay cannot derive its objects from, replicas that cannot be placed, workers that
cannot serve."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ray_serve_ha.charts.accelerators import NEURON
from ray_serve_ha.charts.rayservice import (
    PodResources,
    RayWorkers,
    accelerator_workers,
    rayservice_spec,
)
from tests.chart_inputs import eks_inputs


def test_a_47_character_name_is_accepted():
    assert rayservice_spec(replace(eks_inputs("neuron"), name="a" * 47))["metadata"]["name"] == "a" * 47


def test_a_name_longer_than_47_characters_is_refused():
    with pytest.raises(ValueError) as error:
        replace(eks_inputs("neuron"), name="a" * 48)
    assert str(error.value) == (
        f"RayService name {'a' * 48!r} is 48 characters long; KubeRay allows at most 47 because it "
        "derives the RayCluster, Service and Pod names from it"
    )


@pytest.mark.parametrize("name", ["Ray-serve", "1ray", "ray-", "ray.serve", ""])
def test_a_name_that_is_not_a_dns_1035_label_is_refused(name):
    with pytest.raises(ValueError) as error:
        replace(eks_inputs("neuron"), name=name)
    assert str(error.value) == (
        f"RayService name {name!r} is not a DNS-1035 label: use lowercase letters, digits and '-', "
        "starting with a letter and ending with a letter or digit"
    )


def test_an_engine_that_does_not_run_on_the_workers_is_refused():
    inputs = eks_inputs("nvidia")
    with pytest.raises(ValueError) as error:
        replace(inputs, serving=replace(inputs.serving, engine="neuron"))
    assert str(error.value) == "engine 'neuron' does not run on nvidia workers; they need engine 'vllm'"


def test_a_replica_larger_than_a_worker_is_refused():
    inputs = eks_inputs("neuron")
    with pytest.raises(ValueError) as error:
        replace(inputs, serving=replace(inputs.serving, tensor_parallel_degree=4))
    assert str(error.value) == (
        "one Serve replica needs 4 NeuronCores but a worker pod has 2: lower tensor_parallel_degree "
        "or pick a larger instance type"
    )


def test_more_serve_replicas_than_workers_is_refused():
    inputs = eks_inputs("neuron", max_workers=2)
    with pytest.raises(ValueError) as error:
        replace(inputs, serving=replace(inputs.serving, max_replicas=3))
    assert str(error.value) == (
        "Serve max_replicas=3 exceeds workers max_replicas=2: with one replica per node, the extra "
        "replicas would never be placed"
    )


def test_fewer_than_two_workers_is_refused():
    with pytest.raises(ValueError) as error:
        RayWorkers(resources=PodResources(cpu="1", memory="2Gi"), min_replicas=1)
    assert str(error.value) == (
        "workers min_replicas=1: at least 2 worker pods are needed to keep two Serve replicas on two nodes"
    )


def test_an_instance_type_of_another_accelerator_is_refused():
    with pytest.raises(ValueError) as error:
        accelerator_workers(NEURON, ("g6e.xlarge",), 2, 2)
    assert str(error.value).startswith(
        "instance types ['g6e.xlarge'] must be a non-empty list of neuron instance types: inf2.xlarge,"
    )


def test_accelerator_workers_without_devices_are_refused():
    with pytest.raises(ValueError) as error:
        RayWorkers(resources=PodResources(cpu="4", memory="8Gi"), accelerator=NEURON)
    assert str(error.value) == (
        "accelerator workers need devices > 0 and CPU-only workers none; got accelerator=neuron, devices=0"
    )
