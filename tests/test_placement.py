"""The Ray workers land on the capacity the infrastructure creates: for both accelerators
and both capacity modes, every worker selector matches the labels of the accelerator
NodePool or node group, every taint there is tolerated, and the device is requested."""

from __future__ import annotations

import pytest

from ray_serve_ha.charts import constants
from tests.cluster_objects import manifests
from tests.test_serving import the_rayservice

TAINT_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


def accelerator_capacity(synthesized) -> tuple[dict[str, str], list[dict]]:
    """Labels and taints of the accelerator nodes, as the templates create them."""
    cluster = synthesized.cluster
    # The accelerator's pool: the Ray heads' pool has neither its label nor its taint.
    pools = [obj for obj in manifests(cluster)
             if obj["kind"] == "NodePool" and obj["metadata"]["name"] != constants.HEADS_POOL]
    if pools:
        (pool,) = pools
        template = pool["spec"]["template"]
        return template["metadata"]["labels"], template["spec"]["taints"]
    groups = [
        g["Properties"] for g in cluster.find_resources("AWS::EKS::Nodegroup").values() if g["Properties"].get("Taints")
    ]
    (group,) = groups
    taints = [{"key": t["Key"], "effect": TAINT_EFFECTS[t["Effect"]], **({"value": t["Value"]} if "Value" in t else {})}
              for t in group["Taints"]]
    return group["Labels"], taints


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    for toleration in tolerations:
        if toleration.get("key") != taint["key"] or toleration.get("effect", taint["effect"]) != taint["effect"]:
            continue
        if toleration.get("operator", "Equal") == "Exists" or toleration.get("value") == taint.get("value"):
            return True
    return False


@pytest.mark.parametrize(
    "fixture,device",
    [
        ("default_system", "aws.amazon.com/neuron"),
        ("auto_mode_nvidia", "nvidia.com/gpu"),
        ("node_groups_neuron", "aws.amazon.com/neuron"),
        ("node_groups_nvidia", "nvidia.com/gpu"),
    ],
)
def test_workers_fit_the_accelerator_capacity(request, fixture, device):
    synthesized = request.getfixturevalue(fixture)
    labels, taints = accelerator_capacity(synthesized)
    rayservice = the_rayservice(synthesized.serving)
    (group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    pod = group["template"]["spec"]
    assert pod["nodeSelector"].items() <= labels.items()
    assert all(tolerates(pod["tolerations"], taint) for taint in taints)
    (container,) = [c for c in pod["containers"] if c["name"] == "ray-worker"] or pod["containers"][:1]
    assert int(container["resources"]["limits"][device]) >= 1


def test_a_selector_no_node_carries_is_caught(default_system):
    labels, _ = accelerator_capacity(default_system)
    assert not ({"ray-serve-ha.dev/accelerator": "nvidia"}.items() <= labels.items())
    assert not tolerates([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                         {"key": "aws.amazon.com/neuron", "effect": "NoSchedule"})
