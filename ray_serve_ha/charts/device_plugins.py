"""The device plugins' Helm charts, keyed by chart: accelerators that share a plugin (Neuron's
chart serves Inferentia2 and Trainium alike) share one release, on the nodes of every
accelerator that uses it. Helm refuses a second release of the same chart's objects, so a
team on one such accelerator next to serving on another must not install it again.

Managed node groups need them; EKS Auto Mode brings its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ray_serve_ha.charts.helm import HelmChartRef


@dataclass(frozen=True)
class DevicePlugin:
    """A device plugin's Helm chart, with where in its values the DaemonSet's tolerations
    and affinity go."""

    # What its release is called in the CDK app (`<name>DevicePlugin`).
    name: str
    chart: HelmChartRef
    namespace: str
    values: dict[str, Any]
    tolerations_path: tuple[str, ...]
    affinity_path: tuple[str, ...]

    def release_values(
        self, label_key: str, label_values: list[str], taint_keys: list[str], tolerated_taint_keys: tuple[str, ...]
    ) -> dict[str, Any]:
        """The chart's values: on the nodes whose `label_key` is one of `label_values` only,
        tolerating their taints and `tolerated_taint_keys` (batch teams' taints)."""
        values = copy.deepcopy(self.values)
        tolerations = [
            # Critical add-ons tolerate this (as the charts' defaults do).
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
            *({"key": key, "operator": "Exists", "effect": "NoSchedule"} for key in dict.fromkeys(taint_keys)),
            *({"key": key, "operator": "Exists", "effect": "NoSchedule"} for key in tolerated_taint_keys),
        ]
        _set(values, self.tolerations_path, tolerations)
        affinity = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": label_key, "operator": "In", "values": label_values}]}
                    ]
                }
            }
        }
        _set(values, self.affinity_path, affinity)
        return values


def _set(values: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        values = values.setdefault(key, {})
    values[path[-1]] = value


# The Neuron SDK's chart: its device plugin advertises Inferentia2 and Trainium chips alike.
NEURON_DEVICE_PLUGIN = DevicePlugin(
    name="Neuron",
    chart=HelmChartRef(
        repository="oci://public.ecr.aws/neuron/neuron-helm-chart", chart="neuron-helm-chart", version="1.10.0"
    ),
    namespace="neuron-system",
    # The node problem detector needs extra IAM; the device plugin is what we need.
    values={"npd": {"enabled": False}},
    tolerations_path=("devicePlugin", "tolerations"),
    affinity_path=("devicePlugin", "affinity"),
)

NVIDIA_DEVICE_PLUGIN = DevicePlugin(
    name="Nvidia",
    chart=HelmChartRef(
        repository="https://nvidia.github.io/k8s-device-plugin", chart="nvidia-device-plugin", version="0.19.3"
    ),
    namespace="nvidia-device-plugin",
    # The chart's default affinity waits for Node Feature Discovery labels that nothing
    # here sets: the accelerator label our nodes carry replaces it.
    values={},
    tolerations_path=("tolerations",),
    affinity_path=("affinity",),
)
