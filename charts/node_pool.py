"""The Karpenter NodePool that gives EKS Auto Mode accelerator capacity for the Ray workers.

Auto Mode's built-in pools launch only C/M/R families, so inf2 or GPU nodes need a pool of
their own (karpenter.sh/v1, node class `eks.amazonaws.com/NodeClass`).
"""

from __future__ import annotations

from typing import Any

from charts import constants
from charts.accelerators import Accelerator


def accelerator_node_pool(
    accelerator: Accelerator, instance_types: tuple[str, ...], max_nodes: int
) -> dict[str, Any]:
    shapes = [accelerator.instance_types[t] for t in instance_types]
    # Limits bound the pool by what `max_nodes` of its largest instance type would add up to.
    largest_vcpus = max(s.vcpus for s in shapes)
    largest_memory = max(s.memory_gib for s in shapes)
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": constants.accelerator_pool_name(accelerator.name)},
        "spec": {
            "template": {
                "metadata": {"labels": {constants.ACCELERATOR_LABEL: accelerator.name}},
                "spec": {
                    "nodeClassRef": {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": "default"},
                    "requirements": [
                        {
                            "key": "eks.amazonaws.com/instance-family",
                            "operator": "In",
                            "values": accelerator.families(instance_types),
                        },
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": list(instance_types)},
                        # Model replicas take minutes to load: no Spot interruptions.
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    ],
                    "taints": [{"key": accelerator.taint_key, "effect": "NoSchedule"}],
                },
            },
            "limits": {
                "cpu": str(max_nodes * largest_vcpus),
                "memory": f"{max_nodes * largest_memory}Gi",
            },
            "disruption": {
                # Only empty nodes are removed: consolidating a busy node would move a model
                # replica (minutes of load) for a small saving.
                "consolidationPolicy": "WhenEmpty",
                "consolidateAfter": "10m",
                "budgets": [{"nodes": "1"}],
            },
        },
    }
