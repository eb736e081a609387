"""Secrets the Ray pods read, synced from AWS Secrets Manager by External Secrets.

No secret value passes through CDK, cdk8s or a manifest: the charts name a Secrets Manager
secret, and the External Secrets Operator (EKS Pod Identity, IAM-scoped to these secrets)
writes the value into a Kubernetes Secret that the pods reference with `secretKeyRef`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cdk8s
from constructs import Construct

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.objects import add_api_object
from ray_serve_ha.charts.ray_pods import SecretKeyRef

SECRET_STORE_NAME = "aws-secrets-manager"
# The Kubernetes Secrets the RayService reads, and their keys.
GCS_STORE_PASSWORD = SecretKeyRef(name="gcs-store-auth", key="password")
HUGGING_FACE_TOKEN = SecretKeyRef(name="hugging-face-token", key="HF_TOKEN")
# A rotated value reaches the Secret within this interval (pods read it when they start).
REFRESH_INTERVAL = "1h"


@dataclass(frozen=True)
class SecretsInputs:
    region: str
    # ARN (or name) of the ElastiCache AUTH token secret: a plain string secret.
    gcs_store_auth_secret: str
    # Name (or ARN) of the Hugging Face token secret: a plain string secret.
    hugging_face_token_secret: str
    namespace: str = constants.SERVING_NAMESPACE


def secret_store(inputs: SecretsInputs) -> dict[str, Any]:
    return {
        "apiVersion": "external-secrets.io/v1",
        "kind": "SecretStore",
        "metadata": {"name": SECRET_STORE_NAME, "namespace": inputs.namespace},
        "spec": {
            "provider": {
                # No `auth`: the operator uses its own credentials, which EKS Pod Identity
                # gives its service account (a role that can read only this project's secrets).
                "aws": {"service": "SecretsManager", "region": inputs.region},
            }
        },
    }


def external_secret(remote_key: str, target: SecretKeyRef, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": target.name, "namespace": namespace},
        "spec": {
            "refreshInterval": REFRESH_INTERVAL,
            "secretStoreRef": {"kind": "SecretStore", "name": SECRET_STORE_NAME},
            # Owner: the Secret goes away with the ExternalSecret, never left behind unmanaged.
            "target": {"name": target.name, "creationPolicy": "Owner"},
            "data": [{"secretKey": target.key, "remoteRef": {"key": remote_key}}],
        },
    }


def secrets_manifests(inputs: SecretsInputs) -> list[dict[str, Any]]:
    return [
        secret_store(inputs),
        external_secret(inputs.gcs_store_auth_secret, GCS_STORE_PASSWORD, inputs.namespace),
        external_secret(inputs.hugging_face_token_secret, HUGGING_FACE_TOKEN, inputs.namespace),
    ]


class SecretsChart(cdk8s.Chart):
    """The SecretStore and the ExternalSecrets for the GCS store password and the HF token.

    The RayService must be deleted before this chart: KubeRay's Redis cleanup Job on
    deletion reads the GCS store password from the Secret these objects own.
    """

    def __init__(self, scope: Construct, construct_id: str, *, inputs: SecretsInputs) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        for manifest in secrets_manifests(inputs):
            add_api_object(self, manifest)
