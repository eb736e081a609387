"""Pinned Helm charts the cluster installs. Every version that reaches a user is pinned here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HelmChartRef:
    repository: str
    chart: str
    version: str


KUBERAY_OPERATOR = HelmChartRef(
    repository="https://ray-project.github.io/kuberay-helm/",
    chart="kuberay-operator",
    version="1.7.0",
)
EXTERNAL_SECRETS = HelmChartRef(
    repository="https://charts.external-secrets.io",
    chart="external-secrets",
    version="2.9.0",
)
# node-groups mode only: EKS Auto Mode ships its own Neuron and NVIDIA device plugins.
NEURON = HelmChartRef(
    repository="oci://public.ecr.aws/neuron/neuron-helm-chart",
    chart="neuron-helm-chart",
    version="1.10.0",
)
NVIDIA_DEVICE_PLUGIN = HelmChartRef(
    repository="https://nvidia.github.io/k8s-device-plugin",
    chart="nvidia-device-plugin",
    version="0.19.3",
)
