"""Karpenter NodePools for EKS Auto Mode: the serving accelerator pool, and the builder the
batch teams' pools share with it.

Auto Mode's built-in pools launch only C/M/R families, so inf2 or GPU nodes need a pool of
their own (karpenter.sh/v1, node class `eks.amazonaws.com/NodeClass`). The accelerator pool and
the Ray heads' pool get NodeClasses of their own, whose ephemeral storage holds what their
nodes keep (ray_serve_ha/charts/capacity_plan.py); the built-in `default` NodeClass gives 80 GiB.
"""

from __future__ import annotations

from typing import Any

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import Accelerator

# Auto Mode's own node lifetime (its built-in pools expire nodes after 14 days; nodes are
# also replaced when they drift to a new AMI, about weekly), written here so it is visible.
EXPIRE_AFTER = "336h"
# How long a node's drain respects the workers' PodDisruptionBudget before Karpenter forces it:
# a replacement replica has this long to load before the second replica may go.
TERMINATION_GRACE_PERIOD = "24h"
# Auto Mode's built-in NodeClass (its disk: charts/capacity_plan.AUTO_MODE_DEFAULT_DISK_GIB).
DEFAULT_NODE_CLASS = "default"


def auto_mode_node_class(
    name: str, *, role: str, subnet_ids: list[str], security_group_ids: list[str], disk_gib: int
) -> dict[str, Any]:
    """An Auto Mode NodeClass (eks.amazonaws.com/v1) like the built-in one (the cluster's
    subnets and security group), with `disk_gib` of ephemeral storage (gp3 at its baseline
    3,000 IOPS and 125 MiB/s). `role`: the nodes' IAM role name, with an EC2 access entry."""
    return {
        "apiVersion": "eks.amazonaws.com/v1",
        "kind": "NodeClass",
        "metadata": {"name": name},
        "spec": {
            "role": role,
            "subnetSelectorTerms": [{"id": subnet_id} for subnet_id in subnet_ids],
            "securityGroupSelectorTerms": [{"id": group_id} for group_id in security_group_ids],
            "ephemeralStorage": {"size": f"{disk_gib}Gi"},
        },
    }


def node_pool(
    name: str,
    *,
    node_labels: dict[str, str],
    taints: list[dict[str, str]],
    requirements: list[dict[str, Any]],
    limits: dict[str, str],
    disruption: dict[str, Any],
    labels: dict[str, str] | None = None,
    node_spec: dict[str, Any] | None = None,
    node_class: str = DEFAULT_NODE_CLASS,
) -> dict[str, Any]:
    """A NodePool on an Auto Mode NodeClass: what every pool here has in common."""
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": metadata,
        "spec": {
            "template": {
                "metadata": {"labels": node_labels},
                "spec": {
                    "nodeClassRef": {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": node_class},
                    "requirements": requirements,
                    "taints": taints,
                    **(node_spec or {}),
                },
            },
            "limits": limits,
            "disruption": disruption,
        },
    }


def instance_type_requirements(accelerator: Accelerator, instance_types: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"key": "eks.amazonaws.com/instance-family", "operator": "In", "values": accelerator.families(instance_types)},
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": list(instance_types)},
    ]


def capacity_requirements(capacity_type: str) -> list[dict[str, Any]]:
    return [
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [capacity_type]},
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
    ]


def accelerator_node_pool(
    accelerator: Accelerator,
    instance_types: tuple[str, ...],
    max_nodes: int,
    upgrade_surge_nodes: int,
    node_class: str = DEFAULT_NODE_CLASS,
    capacity_type: str = "on-demand",
) -> dict[str, Any]:
    """The serving workers' pool on `capacity_type` (the spot pool has a name of its own).
    `upgrade_surge_nodes`: the nodes a NewCluster upgrade adds next to the running cluster (its
    workers' minimum) until traffic switches."""
    shapes = [accelerator.instance_types[t] for t in instance_types]
    # Limits bound the pool by what its largest instance type would add up to, for the
    # workers at their maximum plus an upgrade's new cluster.
    nodes = max_nodes + upgrade_surge_nodes
    spot = capacity_type == "spot"
    return node_pool(
        (constants.accelerator_spot_pool_name if spot else constants.accelerator_pool_name)(accelerator.name),
        node_labels=accelerator.node_labels(),
        taints=[accelerator.taint()],
        # Model replicas take minutes to load: spot only for the replicas above the on-demand
        # floor (servingCapacityType=mixed), whose workers select this pool's capacity type.
        # Auto Mode handles a spot interruption itself: it cordons and drains the node when
        # the two-minute notice arrives (the workers' grace period ends before it runs out).
        requirements=[*instance_type_requirements(accelerator, instance_types), *capacity_requirements(capacity_type)],
        # Expiry is forceful in Karpenter v1 (no budget applies), but a drain still waits on
        # the workers' PodDisruptionBudget (one worker at a time, and a worker counts only once
        # its replica serves) for up to the grace period.
        node_spec={"expireAfter": EXPIRE_AFTER, "terminationGracePeriod": TERMINATION_GRACE_PERIOD},
        node_class=node_class,
        limits={
            "cpu": str(nodes * max(s.vcpus for s in shapes)),
            "memory": f"{nodes * max(s.memory_gib for s in shapes)}Gi",
        },
        disruption={
            # Only empty nodes are removed: consolidating a busy node would move a model
            # replica (minutes of load) for a small saving.
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": "10m",
            # One accelerator node at a time, for every reason a budget governs (Empty,
            # Drifted - a new Auto Mode AMI - and Underutilized): never both replicas.
            "budgets": [{"nodes": "1"}],
        },
    )


# The heads pool's limits per head it holds: a head asks for 2.5 CPUs and 8.5 GiB, so room for
# each on a node of its own, about twice over.
HEAD_NODE_LIMIT_CPUS = 8
HEAD_NODE_LIMIT_GIB = 32


def heads_node_pool(heads: int, node_class: str) -> dict[str, Any]:
    """The Ray heads' pool (serving and batch teams): on-demand C/M/R nodes, like Auto Mode's
    general-purpose pool, but on a NodeClass whose disk holds every head's image (the built-in
    pool's 80 GiB cannot hold the serving image twice beside a team's during an upgrade).
    No taint: the heads select it by name. `heads`: how many heads it holds at most."""
    return node_pool(
        constants.HEADS_POOL,
        node_labels={},
        taints=[],
        requirements=[
            {"key": "eks.amazonaws.com/instance-category", "operator": "In", "values": ["c", "m", "r"]},
            {"key": "eks.amazonaws.com/instance-generation", "operator": "Gt", "values": ["4"]},
            *capacity_requirements("on-demand"),
        ],
        node_class=node_class,
        limits={"cpu": str(heads * HEAD_NODE_LIMIT_CPUS), "memory": f"{heads * HEAD_NODE_LIMIT_GIB}Gi"},
        # Heads carry karpenter.sh/do-not-disrupt; only empty nodes go, one at a time.
        disruption={"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10m", "budgets": [{"nodes": "1"}]},
    )

