"""The kind profile's stand-in for ElastiCache: one Redis in the cluster, as in KubeRay's HA
sample. It keeps the GCS state across head restarts; it is not itself highly available.
"""

from __future__ import annotations

from typing import Any

import cdk8s
from constructs import Construct

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.objects import add_api_object
from ray_serve_ha.charts.ray_pods import GcsStore
from ray_serve_ha.charts.secrets import GCS_STORE_PASSWORD

REDIS_IMAGE = "redis:7.4.5"
REDIS_NAME = "redis"
REDIS_LABELS = {"app.kubernetes.io/name": REDIS_NAME, "app.kubernetes.io/part-of": "ray-serve-ha"}
# The official image's `redis` user: the entrypoint skips its root-only chown and gosu.
REDIS_USER = 999
# A throwaway cluster's password, written in the manifest as KubeRay's sample does: this
# Redis is reachable only inside the kind cluster. The eks profile has no literal secret.
KIND_REDIS_PASSWORD = "kind-local-gcs-store"


def in_cluster_gcs_store(namespace: str) -> GcsStore:
    """Where the Ray head finds this Redis: plain `redis://`, password from the same Secret
    name and key that External Secrets fills on EKS, so the RayService spec is the same."""
    return GcsStore(
        host=f"{REDIS_NAME}.{namespace}.svc.cluster.local",
        port=constants.REDIS_PORT,
        password=GCS_STORE_PASSWORD,
        tls=False,
    )


def redis_manifests(namespace: str) -> list[dict[str, Any]]:
    password = GCS_STORE_PASSWORD
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": password.name, "namespace": namespace},
            "type": "Opaque",
            "stringData": {password.key: KIND_REDIS_PASSWORD},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": REDIS_NAME, "namespace": namespace, "labels": REDIS_LABELS},
            "spec": {
                "selector": REDIS_LABELS,
                "ports": [{"name": "redis", "port": constants.REDIS_PORT, "targetPort": "redis"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": REDIS_NAME, "namespace": namespace, "labels": REDIS_LABELS},
            "spec": {
                "replicas": 1,
                # Never two Redis pods at once: each would hold its own copy of the GCS state.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": REDIS_LABELS},
                "template": {
                    "metadata": {"labels": REDIS_LABELS},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": REDIS_USER,
                            "runAsGroup": REDIS_USER,
                            "fsGroup": REDIS_USER,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": REDIS_NAME,
                                "image": REDIS_IMAGE,
                                # $(VAR) is expanded by the kubelet from the Secret below.
                                "args": ["--requirepass", "$(REDIS_PASSWORD)", "--appendonly", "yes"],
                                "env": [{"name": "REDIS_PASSWORD", "valueFrom": password.env_source()}],
                                "ports": [{"name": "redis", "containerPort": constants.REDIS_PORT}],
                                "readinessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 5},
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "256Mi"},
                                    "limits": {"cpu": "500m", "memory": "256Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                # The append-only file survives a Redis container restart.
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            }
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                    },
                },
            },
        },
    ]


class InClusterRedisChart(cdk8s.Chart):
    """Redis, its Service and its password Secret (kind profile only)."""

    def __init__(self, scope: Construct, construct_id: str, *, namespace: str) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        for manifest in redis_manifests(namespace):
            add_api_object(self, manifest)
