"""The kind profile's HA check: a Job that queries the serve Service while the head dies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cdk8s
from constructs import Construct

from ray_serve_ha.charts.objects import add_api_object

QUERY_IMAGE = "python:3.12.11-slim-bookworm"
QUERY_NAME = "ha-query"
QUERY_SCRIPT = Path(__file__).with_name("ha_query.py")
QUERY_USER = 65534  # nobody: the script needs no privileges and writes nothing
# Enough back-to-back requests to span a head restart with the tiny model (~50 ms each).
REQUEST_COUNT = 3000


def query_job_manifests(openai_base_url: str, model_id: str, namespace: str) -> list[dict[str, Any]]:
    """A ConfigMap with `ray_serve_ha/charts/ha_query.py` and a Job that runs it once.

    A Job's pod template cannot change: delete the Job to run the check again.
    """
    script_name = QUERY_SCRIPT.name
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": QUERY_NAME, "namespace": namespace},
            "data": {script_name: QUERY_SCRIPT.read_text()},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": QUERY_NAME, "namespace": namespace},
            "spec": {
                # The script's exit code is the verdict: a retry would hide a failed run.
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": QUERY_USER,
                            "runAsGroup": QUERY_USER,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": QUERY_NAME,
                                "image": QUERY_IMAGE,
                                "command": ["python", f"/scripts/{script_name}"],
                                "env": [
                                    {"name": "OPENAI_BASE_URL", "value": openai_base_url},
                                    {"name": "MODEL_ID", "value": model_id},
                                    {"name": "REQUEST_COUNT", "value": str(REQUEST_COUNT)},
                                    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                                ],
                                "resources": {
                                    "requests": {"cpu": "100m", "memory": "64Mi"},
                                    "limits": {"cpu": "500m", "memory": "128Mi"},
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "scripts", "mountPath": "/scripts", "readOnly": True}],
                            }
                        ],
                        "volumes": [{"name": "scripts", "configMap": {"name": QUERY_NAME}}],
                    }
                },
            },
        },
    ]


class QueryJobChart(cdk8s.Chart):
    def __init__(
        self, scope: Construct, construct_id: str, *, openai_base_url: str, model_id: str, namespace: str
    ) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        for manifest in query_job_manifests(openai_base_url, model_id, namespace):
            add_api_object(self, manifest)
