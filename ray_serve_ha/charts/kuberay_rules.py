"""Rules the KubeRay 1.7 operator enforces on a RayService or RayCluster that its CRD schema
does not.

The API server accepts an object that breaks them; the operator then marks it
`Ready=False` with reason `ValidationFailed` and creates nothing, which a deploy only notices
when it times out. So they run at synth: the constructs that embed these objects add them as
node validations (ray_serve_ha/constructs/kuberay_validation.py), and `python -m charts`
checks what it writes. Messages are the operator's own
(ray-operator/controllers/ray/utils/validation.go, `ValidateRayClusterSpec`), so a failure
here reads like the event it prevents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FT_ENABLED_ANNOTATION = "ray.io/ft-enabled"
EXTERNAL_STORAGE_NAMESPACE_ANNOTATION = "ray.io/external-storage-namespace"


def _head_env_names(cluster: Mapping[str, Any]) -> set[str]:
    # The operator reads the first container of the head pod (RayContainerIndex = 0).
    containers = cluster["headGroupSpec"]["template"]["spec"].get("containers") or [{}]
    return {env["name"] for env in containers[0].get("env", [])}


def operator_rule_violations(rayservice: Mapping[str, Any]) -> list[str]:
    """The operator's GCS fault-tolerance rules that `rayservice` breaks (empty: none)."""
    return raycluster_spec_violations(
        rayservice["spec"]["rayClusterConfig"], rayservice.get("metadata", {}).get("annotations", {})
    )


def raycluster_spec_violations(cluster: Mapping[str, Any], annotations: Mapping[str, Any]) -> list[str]:
    """The rules a RayCluster spec (a RayCluster's `spec`, a RayService's `rayClusterConfig`)
    breaks, with the annotations of the object that holds it."""
    start_params = cluster["headGroupSpec"].get("rayStartParams", {})
    head_env = _head_env_names(cluster)
    with_options = "gcsFaultToleranceOptions" in cluster

    violations = []
    legacy_ft = str(annotations.get(FT_ENABLED_ANNOTATION, "")).lower() == "true"
    if not with_options and not legacy_ft and "RAY_REDIS_ADDRESS" in head_env:
        violations.append(
            "RAY_REDIS_ADDRESS is set which implicitly enables GCS fault tolerance, but "
            "GcsFaultToleranceOptions is not set. Please set GcsFaultToleranceOptions to enable "
            "GCS fault tolerance"
        )
    if with_options and annotations.get(FT_ENABLED_ANNOTATION):
        violations.append(
            f"{FT_ENABLED_ANNOTATION} annotation and GcsFaultToleranceOptions are both set. "
            "Please use only GcsFaultToleranceOptions to configure GCS fault tolerance"
        )
    if with_options and start_params.get("redis-password"):
        violations.append(
            "cannot set `redis-password` in rayStartParams when GcsFaultToleranceOptions is enabled "
            "- use GcsFaultToleranceOptions.RedisPassword instead"
        )
    if with_options and "REDIS_PASSWORD" in head_env:
        violations.append(
            "cannot set `REDIS_PASSWORD` env var in head Pod when GcsFaultToleranceOptions is enabled "
            "- use GcsFaultToleranceOptions.RedisPassword instead"
        )
    if with_options and "RAY_REDIS_ADDRESS" in head_env:
        violations.append(
            "cannot set `RAY_REDIS_ADDRESS` env var in head Pod when GcsFaultToleranceOptions is enabled "
            "- use GcsFaultToleranceOptions.RedisAddress instead"
        )
    if with_options and annotations.get(EXTERNAL_STORAGE_NAMESPACE_ANNOTATION):
        violations.append(
            f"cannot set `{EXTERNAL_STORAGE_NAMESPACE_ANNOTATION}` annotation when GcsFaultToleranceOptions "
            "is enabled - use GcsFaultToleranceOptions.ExternalStorageNamespace instead"
        )
    if start_params.get("redis-username") or "REDIS_USERNAME" in head_env:
        violations.append(
            "cannot set redis username in rayStartParams or environment variables "
            "- use GcsFaultToleranceOptions.RedisUsername instead"
        )
    return violations


# The kinds KubeRay validates, and where each keeps its RayCluster spec.
_CLUSTER_SPEC = {"RayService": ("spec", "rayClusterConfig"), "RayCluster": ("spec",)}


def manifest_violations(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every rule that a RayService or RayCluster among `objects` breaks, each message naming
    the object: `RayService ray-serve-llm: <the operator's message>`."""
    found = []
    for manifest in objects:
        path = _CLUSTER_SPEC.get(str(manifest.get("kind")))
        if path is None:
            continue
        spec: Any = manifest
        for key in path:
            spec = spec[key]
        metadata = manifest.get("metadata", {})
        where = f"{manifest['kind']} {metadata.get('name')}"
        broken = raycluster_spec_violations(spec, metadata.get("annotations", {}))
        found += [f"{where}: {message}" for message in broken]
    return found
