"""What is still left of a deleted RayService (KubeRay 1.7), as pure functions: its
RayClusters (whose Redis cleanup finalizer runs a Job that reads the password Secret) and
the LoadBalancer Services (whose controller finalizer deletes the NLB and its security
groups). Until both are gone, the Secret, Redis, the cluster and the VPC must stay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _describe(kind: str, item: Mapping[str, Any]) -> str:
    metadata = item.get("metadata") or {}
    finalizers = metadata.get("finalizers") or []
    waiting = f" (finalizers: {', '.join(finalizers)})" if finalizers else ""
    return f"{kind} {metadata.get('name', '?')}{waiting}"


def leftovers(
    rayservice: Mapping[str, Any] | None,
    rayclusters: list[Mapping[str, Any]],
    services: list[Mapping[str, Any]],
) -> list[str]:
    """What still exists, in words; empty when teardown is complete."""
    left = []
    if rayservice is not None:
        left.append(_describe("RayService", rayservice))
    left += [_describe("RayCluster", item) for item in rayclusters]
    left += [
        _describe("Service", item) for item in services if (item.get("spec") or {}).get("type") == "LoadBalancer"
    ]
    return left
