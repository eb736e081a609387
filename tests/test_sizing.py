"""Every worker fits the node Karpenter (and so EKS Auto Mode) would launch for it.

Karpenter decides whether a pod fits an instance type *before* it launches one, from an
estimate of the node's allocatable resources; a pod over that estimate stays Pending. The
estimate is written out here again, from karpenter-provider-aws
`pkg/providers/instancetype/types.go`, independently of ray_serve_ha/charts/accelerators.py, and applied
to every instance type the settings allow: serving workers and batch team workers, both
accelerators (both capacity modes size workers alike: node groups' AL2023 kubelet reserves
by the same formula)."""

from __future__ import annotations

import math
import re

import pytest

from ray_serve_ha.charts.accelerators import ACCELERATORS, NEURON, NVIDIA
from ray_serve_ha.charts.batch_teams import AcceleratorWorkerShape, BatchTeam, CpuWorkerShape, worker_resources
from ray_serve_ha.charts.models import DEFAULT_MODEL
from ray_serve_ha.charts.node_sizing import CPU_INSTANCE_TYPES, InstanceShape, cpu_instance_type
from ray_serve_ha.charts.rayservice import accelerator_workers
from tests.test_serving import the_rayservice

# DaemonSets on an accelerator node in node-groups mode, with their requests: VPC CNI
# (aws-node: 25m), kube-proxy (100m); the Pod Identity agent and the device plugins request
# nothing. What a worker leaves must cover them, twice over for agents users add.
KNOWN_DAEMONSET_CPU_MILLI = 125


def karpenter_allocatable(shape: InstanceShape) -> tuple[float, float]:
    """(CPU millicores, memory MiB) Karpenter expects the node to have allocatable."""
    cpu = shape.vcpus * 1000.0
    for core in range(1, shape.vcpus + 1):
        cpu -= 60 if core == 1 else 10 if core == 2 else 5 if core <= 4 else 2.5
    memory = shape.memory_gib * 1024.0
    memory -= math.ceil(memory * 0.075)  # VM overhead (vmMemoryOverheadPercent)
    memory -= 11 * shape.max_pods + 255  # kube-reserved
    memory -= 100  # eviction threshold
    return cpu, memory


def requested(resources) -> tuple[float, float]:
    cpu, memory = resources.cpu, resources.memory
    cpu_milli = float(cpu[:-1]) if cpu.endswith("m") else float(cpu) * 1000
    value, unit = re.fullmatch(r"(\d+)(Gi|Mi)", memory).groups()
    return cpu_milli, float(value) * (1024 if unit == "Gi" else 1)


def assert_fits(resources, shape: InstanceShape, what: str) -> None:
    cpu, memory = requested(resources)
    allocatable_cpu, allocatable_memory = karpenter_allocatable(shape)
    # Room for the DaemonSets and a margin for Auto Mode's unpublished overhead.
    assert cpu + 2 * KNOWN_DAEMONSET_CPU_MILLI <= allocatable_cpu, f"{what}: {cpu}m of {allocatable_cpu}m"
    assert memory + 1024 <= allocatable_memory, f"{what}: {memory} MiB of {allocatable_memory} MiB"
    # ...and not needlessly small: the worker gets the node (at least 80% of the estimate).
    assert memory >= 0.8 * allocatable_memory, f"{what}: only {memory} MiB of {allocatable_memory} MiB"


ALLOWED = [(a.name, t) for a in ACCELERATORS.values() for t in a.instance_types]


@pytest.mark.parametrize(("accelerator", "instance_type"), ALLOWED, ids=[t for _, t in ALLOWED])
def test_serving_workers_fit_each_allowed_instance_type(accelerator, instance_type):
    table = ACCELERATORS[accelerator]
    workers = accelerator_workers(table, (instance_type,), 2, 4)
    assert_fits(workers.resources, table.instance_types[instance_type], f"serving worker on {instance_type}")


@pytest.mark.parametrize(("accelerator", "instance_type"), ALLOWED, ids=[t for _, t in ALLOWED])
def test_batch_team_workers_fit_each_allowed_instance_type(accelerator, instance_type):
    table = ACCELERATORS[accelerator]
    team = BatchTeam(
        name="t", namespace="team-t", ray_image="img", worker_shape=AcceleratorWorkerShape(table, instance_type)
    )
    assert_fits(worker_resources(team), table.instance_types[instance_type], f"team worker on {instance_type}")


def test_a_worker_of_several_instance_types_fits_each_of_them():
    types = ("g6e.12xlarge", "g6e.xlarge", "g6e.4xlarge")
    workers = accelerator_workers(NVIDIA, types, 2, 4)
    for instance_type in types:
        cpu, memory = requested(workers.resources)
        allocatable_cpu, allocatable_memory = karpenter_allocatable(NVIDIA.instance_types[instance_type])
        assert cpu + 2 * KNOWN_DAEMONSET_CPU_MILLI <= allocatable_cpu
        assert memory + 1024 <= allocatable_memory


@pytest.mark.parametrize(("cpus", "memory_gib"), [(1, 4), (2, 8), (4, 16), (7, 26), (16, 60), (48, 200)])
def test_cpu_team_workers_fit_the_node_group_type_chosen_for_them(cpus, memory_gib):
    instance_type = cpu_instance_type(cpus, memory_gib)
    team = BatchTeam(name="t", namespace="team-t", ray_image="img", worker_shape=CpuWorkerShape(cpus, memory_gib))
    shape = CPU_INSTANCE_TYPES[instance_type]
    cpu, memory = requested(worker_resources(team))
    allocatable_cpu, allocatable_memory = karpenter_allocatable(shape)
    assert cpu + 2 * KNOWN_DAEMONSET_CPU_MILLI <= allocatable_cpu
    assert memory + 1024 <= allocatable_memory
    # The smallest that fits: the next smaller type would not.
    smaller = list(CPU_INSTANCE_TYPES)[: list(CPU_INSTANCE_TYPES).index(instance_type)]
    assert all(cpu_instance_type(cpus, memory_gib) != t for t in smaller)


def test_a_cpu_team_larger_than_every_type_gets_none():
    assert cpu_instance_type(64, 300) is None


@pytest.mark.parametrize(
    ("fixture", "instance_type"),
    [
        ("default_system", "inf2.8xlarge"),
        ("auto_mode_nvidia", "g6e.xlarge"),
        ("node_groups_neuron", "inf2.8xlarge"),
        ("node_groups_nvidia", "g6e.xlarge"),
    ],
)
def test_the_synthesized_rayservice_workers_fit_their_nodes(request, fixture, instance_type):
    rayservice = the_rayservice(request.getfixturevalue(fixture).serving)
    (group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    accelerator = next(a for a in ACCELERATORS.values() if instance_type in a.instance_types)

    class Resources:
        cpu, memory = limits["cpu"], limits["memory"]

    assert_fits(Resources, accelerator.instance_types[instance_type], f"{fixture} worker")


def test_the_old_sizing_would_stay_pending_on_inf2_8xlarge():
    # 31 CPU / 119 GiB (the whole node less 1 vCPU, 5% and 2 GiB) is over Karpenter's 115.5 GiB.
    _, allocatable_memory = karpenter_allocatable(NEURON.instance_types["inf2.8xlarge"])
    assert allocatable_memory < 119 * 1024
    assert round(allocatable_memory / 1024, 1) == 115.5


def test_max_pods_are_the_eni_figures():
    # aws/amazon-vpc-cni-k8s misc/eni-max-pods.txt
    assert NEURON.instance_types["inf2.8xlarge"].max_pods == 234
    assert NEURON.instance_types["inf2.xlarge"].max_pods == 58
    assert NVIDIA.instance_types["g6e.xlarge"].max_pods == 58
    assert NVIDIA.instance_types["g5.12xlarge"].max_pods == 737


@pytest.mark.parametrize(
    ("accelerator", "instance_type", "reason"),
    [
        (
            NEURON,
            "inf2.xlarge",
            "inf2.xlarge has 16 GiB of host memory; a worker there may request 12 GiB, too little to load "
            "mistralai/Mistral-7B-Instruct-v0.2's ≈14.5 GB of bf16 weights",
        ),
        (NEURON, "inf2.8xlarge", None),
        (NVIDIA, "g6e.xlarge", None),
        (NVIDIA, "g5.2xlarge", None),
        (
            NEURON,
            "g6e.xlarge",
            "g6e.xlarge is not a neuron instance type; allowed: inf2.xlarge, inf2.8xlarge, inf2.24xlarge, "
            "inf2.48xlarge",
        ),
    ],
)
def test_unfit_reason_says_why_an_instance_type_cannot_hold_the_model(accelerator, instance_type, reason):
    assert accelerator.unfit_reason(instance_type, DEFAULT_MODEL) == reason


def test_every_default_instance_type_holds_the_model():
    assert all(a.unfit_reason(a.default_instance_type, DEFAULT_MODEL) is None for a in ACCELERATORS.values())
