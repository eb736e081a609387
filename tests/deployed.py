"""The synthesized system as one deployment in a made-up account and region, for the policy
evaluator (tests/iam_policy.py), and lookups of its resources."""

from __future__ import annotations

from typing import Any

from tests.iam_policy import Deployment

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
REGION = "us-east-2"


def deployment_of(synthesized) -> Deployment:
    system = synthesized.system
    stacks = {"network": synthesized.network, "cluster": synthesized.cluster,
              "gcs_store": synthesized.gcs_store, "serving": synthesized.serving}
    names = {"network": system.network, "cluster": system.cluster, "gcs_store": system.gcs_store,
             "serving": system.serving}
    return Deployment({names[k].stack_name: t.to_json() for k, t in stacks.items() if t is not None},
                      account=ACCOUNT, region=REGION)


def stack(deployment: Deployment, suffix: str) -> str:
    (name,) = [n for n in deployment.templates if n.endswith(suffix)]
    return name


def only(deployment: Deployment, suffix: str, type_: str, **properties: Any) -> tuple[str, dict[str, Any]]:
    """The one resource of `type_` in the stack whose properties hold `properties`."""
    name = stack(deployment, suffix)
    found = [(k, r) for k, r in deployment.resources(name, type_).items()
             if all(r["Properties"].get(p) == v for p, v in properties.items())]
    assert len(found) == 1, f"{type_} {properties} in {name}: {[k for k, _ in found]}"
    return found[0]


def logical_id_of(reference: dict[str, Any]) -> str:
    return reference["Fn::GetAtt"][0] if "Fn::GetAtt" in reference else reference["Ref"]
