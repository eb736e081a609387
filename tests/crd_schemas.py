"""Validation of Kubernetes objects against the real schemas: built-ins with
kubernetes-validate (Kubernetes 1.35, strict), custom resources with their CRD's
openAPIV3Schema, made strict the same way.

Strict matters: the API server prunes fields a structural schema does not know, so a
misspelled `gcsFaultToleranceOptions` would be applied without complaint and silently do
nothing. Here an unknown field is an error.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

from tests.conftest import schemas_dir

KUBERNETES_VERSION = "1.35"

# apiVersion/kind -> CRD file under the schema folder.
CRD_FILES = {
    ("karpenter.sh/v1", "NodePool"): "karpenter/v1.14.1/karpenter.sh_nodepools.yaml",
    # EKS Auto Mode's NodeClass: an openAPIV3Schema dumped from a cluster (its SOURCE.md), not a CRD file.
    ("eks.amazonaws.com/v1", "NodeClass"): "eks-auto-mode/2024-12/eks.amazonaws.com_nodeclass_v1.json",
    ("ray.io/v1", "RayService"): "kuberay/v1.7.0/ray.io_rayservices.yaml",
    ("ray.io/v1", "RayCluster"): "kuberay/v1.7.0/ray.io_rayclusters.yaml",
    ("ray.io/v1", "RayJob"): "kuberay/v1.7.0/ray.io_rayjobs.yaml",
    ("external-secrets.io/v1", "ExternalSecret"): "external-secrets/v2.9.0/external-secrets.io_externalsecrets.yaml",
    ("external-secrets.io/v1", "SecretStore"): "external-secrets/v2.9.0/external-secrets.io_secretstores.yaml",
    (
        "external-secrets.io/v1",
        "ClusterSecretStore",
    ): "external-secrets/v2.9.0/external-secrets.io_clustersecretstores.yaml",
}


def _closed(schema):
    """The schema with unknown properties refused wherever it lists the known ones."""
    if isinstance(schema, dict):
        closed = {key: _closed(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@cache
def crd_schema(api_version: str, kind: str) -> dict:
    path = Path(schemas_dir()) / CRD_FILES[(api_version, kind)]
    if path.suffix == ".json":
        schema = json.loads(path.read_text())
        # ObjectMeta by reference to another file of the dump: an object, as in a CRD.
        schema["properties"]["metadata"] = {"type": "object"}
        return schema
    # libyaml: the KubeRay CRDs are ~1 MB each, seconds to parse in pure Python.
    crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
    version = api_version.split("/")[1]
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


@cache
def strict_crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft7Validator(_closed(crd_schema(api_version, kind)))


def schema_errors(obj: dict) -> list[str]:
    """Every schema violation of `obj` as 'path: message' lines (empty when valid)."""
    if (obj["apiVersion"], obj["kind"]) in CRD_FILES:
        validator = strict_crd_validator(obj["apiVersion"], obj["kind"])
        return [
            f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in validator.iter_errors(obj)
        ]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'/'.join(str(p) for p in error.path) or '<root>'}: {error.message}"]
    return []
