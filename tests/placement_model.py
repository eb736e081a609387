"""A small model of where pods and Serve replicas can land, read from synthesized templates:
the kinds of node the cluster stack can launch (labels, with the capacity type as each capacity
mode labels it, and taints), whether a pod spec fits one (node selector, required node
affinity, taints), and, for each Serve deployment of a RayService, the capacity types of the
nodes its replicas can run on (a worker group that advertises the Ray resources a replica
requires, on a node its pods fit)."""

from __future__ import annotations

import yaml

from ray_serve_ha.charts import constants
from tests.cluster_objects import manifests
from tests.test_placement import TAINT_EFFECTS, tolerates


def node_kinds(cluster) -> list[dict]:
    """Every kind of node the cluster stack can launch: labels (with the capacity type as each
    mode labels it) and taints. Auto Mode: one per NodePool and capacity type it allows;
    node groups: one per managed node group."""
    kinds = []
    for pool in (o for o in manifests(cluster) if o["kind"] == "NodePool"):
        template = pool["spec"]["template"]
        (capacity,) = [r for r in template["spec"]["requirements"] if r["key"] == "karpenter.sh/capacity-type"]
        for capacity_type in capacity["values"]:
            kinds.append({
                "name": pool["metadata"]["name"],
                "capacity": capacity_type,
                "labels": {**template["metadata"]["labels"], "karpenter.sh/nodepool": pool["metadata"]["name"],
                           constants.KARPENTER_CAPACITY_TYPE_LABEL: capacity_type},
                "taints": template["spec"]["taints"],
            })
    by_value = {v: k for k, v in constants.NODE_GROUP_CAPACITY_TYPES.items()}
    for logical_id, group in cluster.find_resources("AWS::EKS::Nodegroup").items():
        props = group["Properties"]
        capacity_type = props.get("CapacityType", "ON_DEMAND")
        kinds.append({
            "name": logical_id,
            "capacity": by_value[capacity_type],
            "labels": {**props.get("Labels", {}), constants.NODE_GROUP_CAPACITY_TYPE_LABEL: capacity_type},
            "taints": [{"key": t["Key"], "effect": TAINT_EFFECTS[t["Effect"]],
                        **({"value": t["Value"]} if "Value" in t else {})} for t in props.get("Taints", [])],
        })
    return kinds


def _term_matches(term: dict, labels: dict) -> bool:
    for expression in term["matchExpressions"]:
        assert expression["operator"] == "In", expression  # the only operator the charts use
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def pod_fits(pod: dict, kind: dict) -> bool:
    """Whether the scheduler may put `pod` (a pod spec) on a node of `kind`."""
    if not pod.get("nodeSelector", {}).items() <= kind["labels"].items():
        return False
    required = pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if required and not any(_term_matches(t, kind["labels"]) for t in required["nodeSelectorTerms"]):
        return False
    return all(tolerates(pod.get("tolerations", []), taint) for taint in kind["taints"]
               if taint["effect"] in ("NoSchedule", "NoExecute"))


def custom_resources(options: dict) -> set[str]:
    return set(options.get("resources", {}))


def replica_capacity(rayservice: dict, kinds: list[dict]) -> dict[str, set[str]]:
    """For each Serve deployment: the capacity types of the nodes its replicas can run on (a
    worker group that advertises what the replica requires, on a node its pods fit)."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    (application,) = config["applications"]
    where: dict[str, set[str]] = {}
    for deployment in application["deployments"]:
        needs = custom_resources(deployment.get("ray_actor_options", {}))
        where[deployment["name"]] = {
            kind["capacity"]
            for group in cluster["workerGroupSpecs"]
            if needs <= set(group.get("resources", {}))
            for kind in kinds
            if pod_fits(group["template"]["spec"], kind)
        }
    return where


def head_capacity(rayservice: dict, kinds: list[dict]) -> set[str]:
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    return {kind["capacity"] for kind in kinds if pod_fits(head, kind)}
