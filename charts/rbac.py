"""Kubernetes RBAC for the readiness gate: EKS access policies grant the built-in `view`
role, which does not cover KubeRay's custom resources, so the gate's IAM role is mapped to
a Kubernetes group that may read RayServices (and their events) in one namespace."""

from __future__ import annotations

from typing import Any

import cdk8s
from constructs import Construct

from charts import constants
from charts.objects import add_api_object

RAYSERVICE_READERS_GROUP = f"{constants.LABEL_DOMAIN}:rayservice-readers"
ROLE_NAME = "rayservice-reader"


def rayservice_reader_rbac(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": ROLE_NAME, "namespace": namespace},
            "rules": [
                {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ROLE_NAME, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE_NAME},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": RAYSERVICE_READERS_GROUP}],
        },
    ]


class RayServiceReaderChart(cdk8s.Chart):
    def __init__(self, scope: Construct, construct_id: str, *, namespace: str) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        for manifest in rayservice_reader_rbac(namespace):
            add_api_object(self, manifest)
