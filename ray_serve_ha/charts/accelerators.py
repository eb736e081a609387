"""Everything the project knows about each accelerator, in one table.

Settings validate instance types against it; the stacks build the NodePool, the node groups
and the device plugins from it; the Ray worker specs take their device requests, Ray
resources, tolerations and sizes from it; the serve config asks it how Ray counts a replica's
devices; the serving stack picks the Dockerfile from it. No other module branches on an
accelerator's name: adding an accelerator is one more `Accelerator` in `ACCELERATORS`
(tests/test_accelerators.py adds a made-up one and builds everything for it).

Worker sizes follow the scheduler's estimate of a node (ray_serve_ha/charts/node_sizing.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.device_plugins import NEURON_DEVICE_PLUGIN, NVIDIA_DEVICE_PLUGIN, DevicePlugin
from ray_serve_ha.charts.models import Model
from ray_serve_ha.charts.node_sizing import InstanceShape, WorkerSize

_GB = 10**9
_GIB = 2**30
# A model the table lacks gets room for its KV cache and activations beside its weights on
# the devices it shards over (ray_serve_ha/charts/models.py).
KV_CACHE_HEADROOM = 0.2

# batch/'s image for CPU-only teams (PyTorch's CPU build).
CPU_BATCH_DOCKERFILE = "Dockerfile"


@dataclass(frozen=True)
class RayDevice:
    """How Ray counts an accelerator: a custom resource with `units_per_device` units per
    device (Neuron: `neuron_cores`, two per Inferentia2 chip), or Ray's own GPU count
    (`resource` None: KubeRay derives `num-gpus` from the pod's `nvidia.com/gpu` limit)."""

    resource: str | None
    units_per_device: int
    # What one unit is called in messages ("NeuronCores", "GPUs").
    unit_word: str

    def worker_group_resources(self, devices: int) -> dict[str, str]:
        """The worker group's `resources` (what the worker's raylet advertises beyond what
        KubeRay derives from the pod): empty for Ray's own GPU count."""
        if self.resource is None:
            return {}
        return {self.resource: str(devices * self.units_per_device)}

    def actor_options(self, units: int) -> dict[str, Any]:
        """`ray_actor_options` of a Serve replica that needs `units` of this device."""
        if self.resource is None:
            return {"num_gpus": units}
        return {"resources": {self.resource: units}}


@dataclass(frozen=True)
class Accelerator:
    name: str
    # Extended resource the device plugin advertises and pods request.
    device_resource: str
    # Taint key on every node of this accelerator (effect NoSchedule).
    taint_key: str
    ray_device: RayDevice
    # The serving engine of images/ray-serve on this accelerator, and its Dockerfile there.
    engine: str
    dockerfile: str
    # Batch teams on this accelerator: their image (a Dockerfile in batch/) and whether Ray
    # Train's PyTorch workers train on the devices (`use_gpu`: CUDA) or on the node's CPUs.
    batch_dockerfile: str
    train_on_devices: bool
    # Managed node group AMI type, as named by aws_eks_v2.NodegroupAmiType (AL2023; AL2
    # reached end of support 2025-11-26).
    node_group_ami_type: str
    # The device plugin's chart for managed node groups (ray_serve_ha/charts/device_plugins.py),
    # shared with the other accelerators that use it.
    device_plugin: DevicePlugin
    instance_types: dict[str, InstanceShape]
    # What the workers run on unless the settings say otherwise.
    default_instance_type: str
    # What the chat UI calls the device ("Inferentia2", "GPU").
    ui_device_word: str
    # What the engine writes on the node's disk while it loads the model, GB (an estimate):
    # NxD Inference's compiled model and a sharded copy of the weights; vLLM's torch.compile
    # and CUDA graph caches. The nodes' disks are sized with it (ray_serve_ha/charts/capacity_plan.py).
    compile_scratch_gb: float
    # A replica's start on this accelerator, s (estimates; ray_serve_ha/charts/replica_start.py adds them
    # up): compiling the model for the devices (0: the engine loads without compiling, or
    # its compile is part of `load_s`), and loading it onto them and warming up.
    compile_s: int
    load_s: int
    # Whether aws-cdk-lib accepts this accelerator's AMI type for its instance types (see
    # TRAINIUM); when not, the node group's AMI type is set on its CloudFormation resource.
    cdk_knows_instance_family: bool = True

    @staticmethod
    def family(instance_type: str) -> str:
        return instance_type.split(".", 1)[0]

    def families(self, instance_types: tuple[str, ...]) -> list[str]:
        return sorted({self.family(t) for t in instance_types})

    def node_labels(self) -> dict[str, str]:
        """Labels on every node of this accelerator (NodePool, node groups, team capacity)."""
        return {constants.ACCELERATOR_LABEL: self.name}

    def taint(self) -> dict[str, str]:
        return {"key": self.taint_key, "effect": "NoSchedule"}

    def toleration(self) -> dict[str, str]:
        return {"key": self.taint_key, "operator": "Exists", "effect": "NoSchedule"}

    def check_instance_types(self, instance_types: tuple[str, ...]) -> None:
        unknown = [t for t in instance_types if t not in self.instance_types]
        if not instance_types or unknown:
            raise ValueError(
                f"instance types {list(instance_types)} must be a non-empty list of {self.name} "
                f"instance types: {', '.join(self.instance_types)}"
            )

    def worker_size(self, instance_types: tuple[str, ...]) -> WorkerSize:
        """One worker pod per node that fits the smallest of `instance_types`, by
        Karpenter's allocatable estimate less DaemonSets and a margin, with all its devices."""
        self.check_instance_types(instance_types)
        shapes = [self.instance_types[t] for t in instance_types]
        return WorkerSize(
            cpus=min(s.worker_cpus for s in shapes),
            memory_gib=min(s.worker_memory_gib for s in shapes),
            devices=min(s.devices for s in shapes),
        )

    def replica_units(self, model: Model, instance_types: tuple[str, ...] = ()) -> int:
        """Ray units one replica of `model` shards over (its tensor parallel degree): the models
        table's, or, for a model it does not list here, the fewest (a power of two) whose
        memory holds its weights with room for the KV cache, on the smallest device of
        `instance_types` (all listed types when empty)."""
        if self.name in model.tensor_parallel:
            return model.tensor_parallel[self.name]
        shapes = [self.instance_types[t] for t in instance_types or self.instance_types]
        unit_gib = min(s.device_memory_gib for s in shapes) / self.ray_device.units_per_device
        needed = math.ceil(model.weights_gb * (1 + KV_CACHE_HEADROOM) * _GB / (unit_gib * _GIB))
        return 1 << max(0, needed - 1).bit_length()

    def unfit_reason(self, instance_type: str, model: Model) -> str | None:
        """Why a serving worker on `instance_type` cannot hold `model`, or None if it can."""
        if instance_type not in self.instance_types:
            return (
                f"{instance_type} is not a {self.name} instance type; allowed: {', '.join(self.instance_types)}"
            )
        shape = self.instance_types[instance_type]
        size = self.worker_size((instance_type,))
        weights = f"{model.id}'s ≈{model.weights_gb:g} GB of bf16 weights"
        if size.memory_gib * _GIB < model.weights_gb * _GB:
            return (
                f"{instance_type} has {shape.memory_gib} GiB of host memory; a worker there may request "
                f"{size.memory_gib} GiB, too little to load {weights}"
            )
        units = self.replica_units(model, (instance_type,))
        devices_needed = math.ceil(units / self.ray_device.units_per_device)
        if shape.devices < devices_needed:
            return (
                f"{instance_type} has {shape.devices} device(s); one replica shards {model.id} over {units} "
                f"{self.ray_device.unit_word} ({devices_needed} device(s))"
            )
        if devices_needed * shape.device_memory_gib * _GIB < model.weights_gb * _GB:
            return (
                f"{instance_type}'s {devices_needed} x {shape.device_memory_gib} GiB of accelerator memory "
                f"cannot hold {weights}"
            )
        return None


NEURON = Accelerator(
    name="neuron",
    device_resource="aws.amazon.com/neuron",
    taint_key="aws.amazon.com/neuron",
    # KubeRay advertises `neuron_cores` only for `aws.amazon.com/neuroncore` requests; the
    # pods ask for whole chips, so the worker group tells Ray the cores they hold.
    ray_device=RayDevice(resource="neuron_cores", units_per_device=2, unit_word="NeuronCores"),
    engine="neuron",
    dockerfile="Dockerfile.neuron",
    # PyTorch on Inferentia2 needs torch-neuronx's own training path: the benchmark jobs use
    # the node's CPUs, on the CPU image.
    batch_dockerfile=CPU_BATCH_DOCKERFILE,
    train_on_devices=False,
    node_group_ami_type="AL2023_X86_64_NEURON",
    device_plugin=NEURON_DEVICE_PLUGIN,
    instance_types={
        "inf2.xlarge": InstanceShape(vcpus=4, memory_gib=16, devices=1, device_memory_gib=32, max_pods=58),
        "inf2.8xlarge": InstanceShape(vcpus=32, memory_gib=128, devices=1, device_memory_gib=32, max_pods=234),
        "inf2.24xlarge": InstanceShape(vcpus=96, memory_gib=384, devices=6, device_memory_gib=32, max_pods=737),
        "inf2.48xlarge": InstanceShape(vcpus=192, memory_gib=768, devices=12, device_memory_gib=32, max_pods=737),
    },
    # One Inferentia2 chip (2 NeuronCores, 32 GiB): Mistral-7B at tensor parallel 2.
    default_instance_type="inf2.8xlarge",
    ui_device_word="Inferentia2",
    compile_scratch_gb=16.0,
    # NxD Inference for TP 2, batch 4, 4,096 tokens: about 10 minutes (the public blueprint).
    compile_s=600,
    load_s=40,
)

NVIDIA = Accelerator(
    name="nvidia",
    device_resource="nvidia.com/gpu",
    taint_key="nvidia.com/gpu",
    ray_device=RayDevice(resource=None, units_per_device=1, unit_word="GPUs"),
    engine="vllm",
    dockerfile="Dockerfile.nvidia",
    batch_dockerfile="Dockerfile.cuda",
    train_on_devices=True,
    node_group_ami_type="AL2023_X86_64_NVIDIA",
    device_plugin=NVIDIA_DEVICE_PLUGIN,
    instance_types={
        "g6e.xlarge": InstanceShape(vcpus=4, memory_gib=32, devices=1, device_memory_gib=48, max_pods=58),
        "g6e.2xlarge": InstanceShape(vcpus=8, memory_gib=64, devices=1, device_memory_gib=48, max_pods=58),
        "g6e.4xlarge": InstanceShape(vcpus=16, memory_gib=128, devices=1, device_memory_gib=48, max_pods=234),
        "g6e.12xlarge": InstanceShape(vcpus=48, memory_gib=384, devices=4, device_memory_gib=48, max_pods=292),
        "g6.2xlarge": InstanceShape(vcpus=8, memory_gib=32, devices=1, device_memory_gib=24, max_pods=58),
        "g6.4xlarge": InstanceShape(vcpus=16, memory_gib=64, devices=1, device_memory_gib=24, max_pods=234),
        "g5.2xlarge": InstanceShape(vcpus=8, memory_gib=32, devices=1, device_memory_gib=24, max_pods=58),
        "g5.4xlarge": InstanceShape(vcpus=16, memory_gib=64, devices=1, device_memory_gib=24, max_pods=234),
        "g5.12xlarge": InstanceShape(vcpus=48, memory_gib=192, devices=4, device_memory_gib=24, max_pods=737),
    },
    # L40S (48 GiB): Mistral-7B in bf16 is ~14.5 GB, which leaves ~30 GiB of KV cache for
    # continuous batching; an A10G (g5.2xlarge, 24 GiB) leaves ~8 GiB.
    default_instance_type="g6e.xlarge",
    ui_device_word="GPU",
    compile_scratch_gb=5.0,
    # vLLM: torch.compile and CUDA graph capture (cached on the node only), then the weights
    # onto the GPU.
    compile_s=90,
    load_s=30,
)

TRAINIUM = Accelerator(
    name="trainium",
    # The Neuron SDK's device plugin advertises Trainium chips as it does Inferentia2 ones,
    # and the Neuron AMI taints nothing: the same resource and taint key.
    device_resource="aws.amazon.com/neuron",
    taint_key="aws.amazon.com/neuron",
    ray_device=RayDevice(resource="neuron_cores", units_per_device=2, unit_word="NeuronCores"),
    # vLLM on NxD Inference supports Inf2, Trn1 and Trn2 (Neuron docs, "AI Inference on
    # Neuron"): the same serving image as Inferentia2.
    engine="neuron",
    dockerfile="Dockerfile.neuron",
    batch_dockerfile=CPU_BATCH_DOCKERFILE,
    train_on_devices=False,
    node_group_ami_type="AL2023_X86_64_NEURON",
    device_plugin=NEURON_DEVICE_PLUGIN,
    # Trn1 (Trainium, NeuronCore-v2: 2 cores and 32 GiB per chip), as the Neuron SDK's
    # support matrix lists it beside Inf2; trn1n is trn1.32xlarge with more network. Max pods:
    # trn1.2xlarge as every 8-vCPU type with 4 ENIs; trn1.32xlarge is absent from the
    # eni-max-pods.txt read, and 737 (the most any type lists) sizes its pods the smallest.
    instance_types={
        "trn1.2xlarge": InstanceShape(vcpus=8, memory_gib=32, devices=1, device_memory_gib=32, max_pods=58),
        "trn1.32xlarge": InstanceShape(vcpus=128, memory_gib=512, devices=16, device_memory_gib=32, max_pods=737),
        "trn1n.32xlarge": InstanceShape(vcpus=128, memory_gib=512, devices=16, device_memory_gib=32, max_pods=737),
    },
    # One Trainium chip: the model at the Neuron table's tensor parallelism.
    default_instance_type="trn1.2xlarge",
    ui_device_word="Trainium",
    compile_scratch_gb=16.0,
    # The same NxD Inference compile as Inferentia2's (an estimate: not timed on trn1).
    compile_s=600,
    load_s=40,
    # aws-cdk-lib 2.275's list of accelerated instance classes (aws-eks-v2's
    # isGpuInstanceType) lacks trn1: given the Neuron AMI type, it refuses the pair ("The
    # specified AMI does not match the instance types architecture"). The AMI type goes on
    # the CloudFormation resource instead, where EKS checks it.
    cdk_knows_instance_family=False,
)

ACCELERATORS: dict[str, Accelerator] = {a.name: a for a in (NEURON, NVIDIA, TRAINIUM)}
# What the settings and `python -m charts` use unless told otherwise.
DEFAULT_ACCELERATOR = NEURON.name


def accelerator_of_instance_type(instance_type: str) -> Accelerator | None:
    """The accelerator whose table lists `instance_type`, if any."""
    return next((a for a in ACCELERATORS.values() if instance_type in a.instance_types), None)


def accelerators_of_plugin(plugin: DevicePlugin) -> list[Accelerator]:
    """The accelerators whose nodes the plugin's one release serves."""
    return [a for a in ACCELERATORS.values() if a.device_plugin.chart == plugin.chart]


def device_plugin_values(plugin: DevicePlugin, tolerated_taint_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The plugin chart's values: on the nodes of every accelerator that uses it (by label),
    tolerating their taints and `tolerated_taint_keys` (batch teams' taints)."""
    accelerators = accelerators_of_plugin(plugin)
    return plugin.release_values(
        constants.ACCELERATOR_LABEL,
        [a.name for a in accelerators],
        [a.taint_key for a in accelerators],
        tolerated_taint_keys,
    )
