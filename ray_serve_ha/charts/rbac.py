"""Kubernetes RBAC for the operations roles (readiness gate, HA drill): EKS access policies
grant built-in roles that do not cover KubeRay's custom resources, so each IAM role is
mapped to a Kubernetes group bound to a Role in the serving namespace, with only the verbs
it needs."""

from __future__ import annotations

from typing import Any

from ray_serve_ha.charts import constants

RAYSERVICE_READERS_GROUP = f"{constants.LABEL_DOMAIN}:rayservice-readers"
ROLE_NAME = "rayservice-reader"
# The HA drill (post-deploy pipeline step) reads the RayService and deletes its head pod.
HA_DRILL_GROUP = f"{constants.LABEL_DOMAIN}:ha-drill"
HA_DRILL_ROLE_NAME = "ha-drill"


def rayservice_reader_rbac(namespace: str) -> list[dict[str, Any]]:
    return _role_for_group(
        namespace, ROLE_NAME, RAYSERVICE_READERS_GROUP,
        [
            {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
            # On teardown the gate waits for the deleted RayService's clusters to be gone
            # (services are listed under EKS's namespaced view policy).
            {"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["list"]},
        ],
    )


def ha_drill_rbac(namespace: str) -> list[dict[str, Any]]:
    return _role_for_group(
        namespace, HA_DRILL_ROLE_NAME, HA_DRILL_GROUP,
        [
            {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
        ],
    )


def _role_for_group(namespace: str, name: str, group: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
        },
    ]
