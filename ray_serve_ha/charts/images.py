"""Every container image the system runs, with its size, and what else a node keeps on disk.

The one owner of these numbers: the node disks (ray_serve_ha/charts/capacity_plan.py), the Auto Mode
NodeClass, the managed node groups, the replica-start budget (ray_serve_ha/charts/replica_start.py) and
The docs' tables read them from here.

Sizes are in GB (10^9 bytes). `unpacked_gb` is what the image takes on a node's disk once
pulled and unpacked; `pulled_gb` is what a pull transfers (compressed layers). No registry
can be reached from the development machine, so most of them are estimates: `basis` says
which, and from what. Where a part could be measured (a Python package installed in this
project's venv), the measurement is named.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray_serve_ha.assets import CHECKOUT


@dataclass(frozen=True)
class ContainerImage:
    name: str
    # The Dockerfile, relative to the repository root.
    dockerfile: str
    unpacked_gb: float
    pulled_gb: float
    # Which nodes pull it.
    runs_on: str
    # Where the sizes come from ("estimate: …" or "measured: …").
    basis: str

    @property
    def base(self) -> str:
        """The image it is built on: the Dockerfile's FROM line (the Dockerfile owns it; the
        images are built from a checkout, so read there)."""
        text = (CHECKOUT / self.dockerfile).read_text()
        return next(line.split()[1] for line in text.splitlines() if line.startswith("FROM "))


_SERVING_NODES = (
    "its accelerator's serving nodes (workers) and the Ray head nodes (the head, its autoscaler sidecar, "
    "KubeRay's Redis cleanup Job)"
)

SERVE_NEURON = ContainerImage(
    name="ray-serve (neuron)",
    dockerfile="images/ray-serve/Dockerfile.neuron",
    unpacked_gb=31.0,
    pulled_gb=10.5,
    runs_on=_SERVING_NODES,
    basis="estimate: the Neuron vLLM DLC (vLLM 0.16, NxD Inference, Neuron SDK 2.31, PyTorch) pulls about 10 GB "
    "of layers and unpacks to about 30 GB; plus ray[serve] 2.60 and boto3 (Ray measured at 0.24 GB installed in "
    "this project's venv)",
)
SERVE_NVIDIA = ContainerImage(
    name="ray-serve (nvidia)",
    dockerfile="images/ray-serve/Dockerfile.nvidia",
    unpacked_gb=20.0,
    pulled_gb=8.0,
    runs_on=_SERVING_NODES,
    basis="estimate: rayproject/ray-llm (CUDA 13, vLLM, PyTorch); a public reproduction of the 2.55 cu128 tag asks "
    "for about 13 GB of free Docker storage (ai-runway/airunway#399), more for CUDA 13 and vLLM's growth since",
)
SERVE_CPU = ContainerImage(
    name="ray-serve (cpu, kind only)",
    dockerfile="images/ray-serve/Dockerfile.cpu",
    unpacked_gb=4.0,
    pulled_gb=1.4,
    runs_on="kind nodes only (`python -m charts --profile kind`)",
    basis="estimate: rayproject/ray CPU image (about 2.5 GB) plus PyTorch's CPU build (0.75 GB measured in this "
    "project's venv) and transformers (0.13 GB measured)",
)
BATCH_CPU = ContainerImage(
    name="batch (cpu)",
    dockerfile="batch/Dockerfile",
    unpacked_gb=3.5,
    pulled_gb=1.2,
    runs_on="CPU and Neuron batch teams' nodes (workers) and the Ray head nodes (their heads)",
    basis="estimate: rayproject/ray:2.60.0-py312-cpu (about 2.5 GB) plus PyTorch's CPU build (0.75 GB) and "
    "xgboost-cpu (0.02 GB), both measured in this project's venv",
)
BATCH_CUDA = ContainerImage(
    name="batch (cuda)",
    dockerfile="batch/Dockerfile.cuda",
    unpacked_gb=15.0,
    pulled_gb=6.0,
    runs_on="NVIDIA batch teams' nodes (workers) and the Ray head nodes (their heads)",
    basis="estimate: rayproject/ray cu130 (CUDA 13 runtime and cuDNN, about 8 GB) plus PyTorch's CUDA build with "
    "its nvidia-* wheels (about 6 GB)",
)
GRADIO = ContainerImage(
    name="gradio (chat UI)",
    dockerfile="images/gradio/Dockerfile",
    unpacked_gb=0.6,
    pulled_gb=0.2,
    runs_on="untainted nodes: the system node group; in Auto Mode the built-in pools or the Ray head nodes",
    basis="estimate: python:3.11-slim (about 0.15 GB) plus Gradio 6 and its dependencies (gradio itself 0.08 GB "
    "measured in this project's venv)",
)

# Keyed by Dockerfile name, as the accelerator table names them (ray_serve_ha/charts/accelerators.py).
SERVING_IMAGES: dict[str, ContainerImage] = {
    "Dockerfile.neuron": SERVE_NEURON,
    "Dockerfile.nvidia": SERVE_NVIDIA,
    "Dockerfile.cpu": SERVE_CPU,
}
BATCH_IMAGES: dict[str, ContainerImage] = {"Dockerfile": BATCH_CPU, "Dockerfile.cuda": BATCH_CUDA}
ALL_IMAGES: tuple[ContainerImage, ...] = (SERVE_NEURON, SERVE_NVIDIA, SERVE_CPU, BATCH_CPU, BATCH_CUDA, GRADIO)

# A team that brings its own `rayImage` is assumed to need no more than the project's
# largest batch image.
CUSTOM_TEAM_IMAGE = BATCH_CUDA

# Images of what runs on every node besides the workload: the VPC CNI, kube-proxy, the Pod
# Identity agent, a device plugin (estimate: a few hundred MB each).
DAEMONSET_IMAGES_GB = 1.5
# The operators and cluster add-ons on the system nodes: KubeRay, External Secrets, the
# Cluster Autoscaler, CoreDNS (estimate).
OPERATOR_IMAGES_GB = 1.5

# --- what a serving replica writes besides its image ---------------------------------------
# The weights (Mistral-7B-Instruct in bf16, into the Hugging Face cache on the node's disk) and
# each engine's compile scratch are the accelerator table's (ray_serve_ha/charts/accelerators.py).
# What the compiled-artifact cache downloads from S3 on a start that finds it (Neuron).
COMPILED_ARTIFACTS_GB = 1.0
# Ray's object spilling and job scratch on a batch worker (estimate).
BATCH_SCRATCH_GB = 10.0
