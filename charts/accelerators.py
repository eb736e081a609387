"""What the project knows about each accelerator: taints, device resources, AMIs, shapes.

One table used by the settings (to validate instance types), the stacks (NodePool, node
groups, device plugins) and the Ray worker specs (tolerations and device requests), so the
three cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a serving worker loads: Mistral-7B-Instruct's ≈7.24 billion parameters in bf16
# (2 bytes each), ≈14.5 GB.
MODEL_WEIGHTS_GB = 14.5
_GB_PER_GIB = 2**30 / 10**9
# Host memory a serving node needs per GB of weights: the checkpoint is read into host
# memory and converted (on Neuron: traced and compiled) before it moves to the device.
_HOST_MEMORY_PER_WEIGHT = 2


@dataclass(frozen=True)
class InstanceShape:
    """Size of one instance type, as a Ray worker on it may request."""

    vcpus: int
    memory_gib: int
    # Devices the device plugin advertises: Inferentia2 chips or NVIDIA GPUs.
    devices: int
    # Accelerator memory per device, GiB (sizes the model's tensor-parallel degree).
    device_memory_gib: int


@dataclass(frozen=True)
class Accelerator:
    name: str
    # Extended resource the device plugin advertises and pods request.
    device_resource: str
    # Taint key on every node of this accelerator (effect NoSchedule).
    taint_key: str
    # Managed node group AMI type, as named by aws_eks_v2.NodegroupAmiType (AL2023; AL2
    # reached end of support 2025-11-26).
    node_group_ami_type: str
    instance_types: dict[str, InstanceShape]
    # What the workers run on unless the settings say otherwise.
    default_instance_type: str

    @staticmethod
    def family(instance_type: str) -> str:
        return instance_type.split(".", 1)[0]

    def families(self, instance_types: tuple[str, ...]) -> list[str]:
        return sorted({self.family(t) for t in instance_types})

    def unfit_reason(self, instance_type: str) -> str | None:
        """Why one node of `instance_type` cannot serve the model, or None when it can."""
        shape = self.instance_types.get(instance_type)
        if shape is None:
            return f"{instance_type} is not a {self.name} instance type"
        host_gb = shape.memory_gib * _GB_PER_GIB
        if host_gb < _HOST_MEMORY_PER_WEIGHT * MODEL_WEIGHTS_GB:
            return (
                f"{instance_type} has {shape.memory_gib} GiB of host memory, too little to load the "
                f"≈{MODEL_WEIGHTS_GB:g} GB of bf16 Mistral-7B weights (loading needs about "
                f"{_HOST_MEMORY_PER_WEIGHT * MODEL_WEIGHTS_GB:g} GB)"
            )
        device_gb = shape.devices * shape.device_memory_gib * _GB_PER_GIB
        if device_gb < MODEL_WEIGHTS_GB:
            return (
                f"{instance_type} has {shape.devices * shape.device_memory_gib} GiB of accelerator memory, "
                f"too little for the ≈{MODEL_WEIGHTS_GB:g} GB of bf16 Mistral-7B weights"
            )
        return None


NEURON = Accelerator(
    name="neuron",
    device_resource="aws.amazon.com/neuron",
    taint_key="aws.amazon.com/neuron",
    node_group_ami_type="AL2023_X86_64_NEURON",
    instance_types={
        "inf2.xlarge": InstanceShape(vcpus=4, memory_gib=16, devices=1, device_memory_gib=32),
        "inf2.8xlarge": InstanceShape(vcpus=32, memory_gib=128, devices=1, device_memory_gib=32),
        "inf2.24xlarge": InstanceShape(vcpus=96, memory_gib=384, devices=6, device_memory_gib=32),
        "inf2.48xlarge": InstanceShape(vcpus=192, memory_gib=768, devices=12, device_memory_gib=32),
    },
    # One Inferentia2 chip (2 NeuronCores, 32 GiB): Mistral-7B at tensor parallel 2.
    default_instance_type="inf2.8xlarge",
)

NVIDIA = Accelerator(
    name="nvidia",
    device_resource="nvidia.com/gpu",
    taint_key="nvidia.com/gpu",
    node_group_ami_type="AL2023_X86_64_NVIDIA",
    instance_types={
        "g6e.xlarge": InstanceShape(vcpus=4, memory_gib=32, devices=1, device_memory_gib=48),
        "g6e.2xlarge": InstanceShape(vcpus=8, memory_gib=64, devices=1, device_memory_gib=48),
        "g6e.4xlarge": InstanceShape(vcpus=16, memory_gib=128, devices=1, device_memory_gib=48),
        "g6e.12xlarge": InstanceShape(vcpus=48, memory_gib=384, devices=4, device_memory_gib=48),
        "g6.2xlarge": InstanceShape(vcpus=8, memory_gib=32, devices=1, device_memory_gib=24),
        "g6.4xlarge": InstanceShape(vcpus=16, memory_gib=64, devices=1, device_memory_gib=24),
        "g5.2xlarge": InstanceShape(vcpus=8, memory_gib=32, devices=1, device_memory_gib=24),
        "g5.4xlarge": InstanceShape(vcpus=16, memory_gib=64, devices=1, device_memory_gib=24),
        "g5.12xlarge": InstanceShape(vcpus=48, memory_gib=192, devices=4, device_memory_gib=24),
    },
    # L40S (48 GiB): Mistral-7B in bf16 is ~14.5 GiB, which leaves ~30 GiB of KV cache for
    # continuous batching; an A10G (g5.2xlarge, 24 GiB) leaves ~8 GiB.
    default_instance_type="g6e.xlarge",
)

ACCELERATORS: dict[str, Accelerator] = {a.name: a for a in (NEURON, NVIDIA)}
