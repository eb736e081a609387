"""The KubeRay operator's rules (ray_serve_ha/charts/kuberay_rules.py) as a node validation:
a construct that embeds a RayService or RayCluster fails `cdk synth` with the operator's
message when the object breaks one, instead of a deploy that waits for a RayService the
operator has marked ValidationFailed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jsii
from constructs import Construct, IValidation

from ray_serve_ha.charts.kuberay_rules import manifest_violations


@jsii.implements(IValidation)
class KubeRayRules:
    """Validates `objects` (Kubernetes manifests as dicts) when the app is synthesized."""

    def __init__(self, objects: Sequence[Mapping[str, Any]]) -> None:
        self.objects = list(objects)

    def validate(self) -> list[str]:
        return manifest_violations(self.objects)


def add_kuberay_rules(scope: Construct, objects: Sequence[Mapping[str, Any]]) -> None:
    """Checks the RayServices and RayClusters among `objects` when `scope`'s app synthesizes."""
    scope.node.add_validation(KubeRayRules(objects))
