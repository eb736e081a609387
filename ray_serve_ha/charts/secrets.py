"""Secrets the Ray pods read, synced from AWS Secrets Manager by External Secrets.

No secret value passes through CDK, cdk8s or a manifest: the charts name a Secrets Manager
secret, and the External Secrets Operator (EKS Pod Identity, IAM-scoped to these secrets)
writes the value into a Kubernetes Secret that the pods reference with `secretKeyRef` (read
when they start) or mount as a volume (the API keys: reread while they run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cdk8s
from constructs import Construct

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.key_propagation import API_KEYS_REFRESH_S
from ray_serve_ha.charts.objects import add_api_object
from ray_serve_ha.charts.ray_pods import SecretKeyRef

SECRET_STORE_NAME = "aws-secrets-manager"
# The Kubernetes Secrets the RayService reads, and their keys.
GCS_STORE_PASSWORD = SecretKeyRef(name="gcs-store-auth", key="password")
HUGGING_FACE_TOKEN = SecretKeyRef(name="hugging-face-token", key="HF_TOKEN")
# The API keys, {name: key} as JSON: mounted as a file in the Serve pods, which reread it.
API_KEYS = SecretKeyRef(name="api-keys", key="api-keys.json")
# The chat UI's own key (its entry of the API keys), mounted as a file in the UI's pods, which
# read it at each request.
CHAT_UI_API_KEY = SecretKeyRef(name="chat-ui-api-key", key="api-key")
# The name of the chat UI's key in the API keys (ray_serve_ha/constructs/api_keys.py makes it).
CHAT_UI_KEY_NAME = "chat-ui"
# A rotated value reaches the Secret within this interval (pods read it when they start).
REFRESH_INTERVAL = "1h"
API_KEYS_REFRESH_INTERVAL = f"{API_KEYS_REFRESH_S}s"


@dataclass(frozen=True)
class SecretsInputs:
    region: str
    # ARN (or name) of the ElastiCache AUTH token secret: a plain string secret.
    gcs_store_auth_secret: str
    # Name (or ARN) of the Hugging Face token secret: a plain string secret.
    hugging_face_token_secret: str
    namespace: str = constants.SERVING_NAMESPACE
    # ARN (or name) of the API keys secret: a JSON object {name: key}. None: no keys (open API).
    api_keys_secret: str | None = None


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


def external_secret(
    remote_key: str,
    target: SecretKeyRef,
    namespace: str,
    *,
    refresh_interval: str = REFRESH_INTERVAL,
    remote_property: str | None = None,
) -> dict[str, Any]:
    """One key of a Kubernetes Secret from a Secrets Manager secret: all of its text, or one
    property of its JSON (`remote_property`)."""
    remote_ref: dict[str, Any] = {"key": remote_key}
    if remote_property is not None:
        remote_ref["property"] = remote_property
    return {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": target.name, "namespace": namespace},
        "spec": {
            "refreshInterval": refresh_interval,
            "secretStoreRef": {"kind": "SecretStore", "name": SECRET_STORE_NAME},
            # Owner: the Secret goes away with the ExternalSecret, never left behind unmanaged.
            "target": {"name": target.name, "creationPolicy": "Owner"},
            "data": [{"secretKey": target.key, "remoteRef": remote_ref}],
        },
    }


def secrets_manifests(inputs: SecretsInputs) -> list[dict[str, Any]]:
    manifests = [
        secret_store(inputs),
        external_secret(inputs.gcs_store_auth_secret, GCS_STORE_PASSWORD, inputs.namespace),
        external_secret(inputs.hugging_face_token_secret, HUGGING_FACE_TOKEN, inputs.namespace),
    ]
    if inputs.api_keys_secret is not None:
        manifests += [
            external_secret(
                inputs.api_keys_secret, API_KEYS, inputs.namespace, refresh_interval=API_KEYS_REFRESH_INTERVAL
            ),
            external_secret(
                inputs.api_keys_secret, CHAT_UI_API_KEY, inputs.namespace,
                refresh_interval=API_KEYS_REFRESH_INTERVAL, remote_property=CHAT_UI_KEY_NAME,
            ),
        ]
    return manifests


class SecretsChart(cdk8s.Chart):
    """The SecretStore and the ExternalSecrets for the GCS store password, the HF token and
    the API keys (all of them for the Serve pods, its own for the chat UI).

    The RayService must be deleted before this chart: KubeRay's Redis cleanup Job on
    deletion reads the GCS store password from the Secret these objects own.
    """

    def __init__(self, scope: Construct, construct_id: str, *, inputs: SecretsInputs) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        for manifest in secrets_manifests(inputs):
            add_api_object(self, manifest)
