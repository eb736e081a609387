"""The namespace every serving object lives in; applied before anything namespaced."""

from __future__ import annotations

from typing import Any

import cdk8s
from constructs import Construct

from ray_serve_ha.charts.objects import add_api_object


def namespace_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            # Nothing here needs privileges (devices come through the device plugin): the Pod
            # Security admission refuses any pod that asks for them.
            "labels": {"pod-security.kubernetes.io/enforce": "baseline"},
        },
    }


class NamespaceChart(cdk8s.Chart):
    def __init__(self, scope: Construct, construct_id: str, *, name: str) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.namespace_object = add_api_object(self, namespace_manifest(name))
