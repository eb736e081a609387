"""Validation of custom resources against the real CRD schemas (openAPIV3Schema)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from tests.conftest import schemas_dir

# apiVersion/kind -> CRD file under the schema folder.
CRD_FILES = {
    ("karpenter.sh/v1", "NodePool"): "karpenter/v1.14.1/karpenter.sh_nodepools.yaml",
    ("ray.io/v1", "RayService"): "kuberay/v1.7.0/ray.io_rayservices.yaml",
    ("ray.io/v1", "RayCluster"): "kuberay/v1.7.0/ray.io_rayclusters.yaml",
    ("ray.io/v1", "RayJob"): "kuberay/v1.7.0/ray.io_rayjobs.yaml",
    ("external-secrets.io/v1", "ExternalSecret"): "external-secrets/v2.9.0/external-secrets.io_externalsecrets.yaml",
    ("external-secrets.io/v1", "SecretStore"): "external-secrets/v2.9.0/external-secrets.io_secretstores.yaml",
    ("external-secrets.io/v1", "ClusterSecretStore"): "external-secrets/v2.9.0/external-secrets.io_clustersecretstores.yaml",
}


@lru_cache(maxsize=None)
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    path = Path(schemas_dir()) / CRD_FILES[(api_version, kind)]
    crd = yaml.safe_load(path.read_text())
    version = api_version.split("/")[1]
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    return validator_class(schema)


def crd_errors(obj: dict) -> list[str]:
    """Every schema violation of `obj`, as 'path: message' lines (empty when valid)."""
    validator = crd_validator(obj["apiVersion"], obj["kind"])
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(obj)
    ]
