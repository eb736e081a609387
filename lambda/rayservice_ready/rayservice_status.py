"""What a RayService's status says (KubeRay 1.7), as pure functions: is the current spec
served, with nothing pending?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A condition reason after which KubeRay stops trying until the spec changes (the operator's
# validation): waiting longer cannot help.
VALIDATION_FAILED = "ValidationFailed"
# The Ready condition's reason once the RayService has not been Ready within its
# `ray.io/initializing-timeout` since it was created: KubeRay deletes its RayClusters and
# never tries again, not even for a new spec (ray-operator rayservice_controller.go,
# `markFailedOnInitializingTimeout`); only a new RayService starts over.
INITIALIZING_TIMEOUT = "InitializingTimeout"
# A Serve application that is deployed and healthy (Ray Serve's ApplicationStatus).
APPLICATION_RUNNING = "RUNNING"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    # Why it is not ready yet (for the log), or the rejection message when `rejected`.
    detail: str
    rejected: bool = False
    # The terminal reason when `rejected`.
    reason: str = ""


def conditions(rayservice: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((rayservice.get("status") or {}).get("conditions") or [])


def _condition(rayservice: Mapping[str, Any], condition_type: str) -> dict[str, Any] | None:
    return next((c for c in conditions(rayservice) if c.get("type") == condition_type), None)


def _generation(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def evaluate(rayservice: Mapping[str, Any]) -> Readiness:
    """Ready when the status describes the current spec and the upgrade is over:

    - the operator has observed the latest generation (KubeRay writes observedGeneration
      in the same status update as the pending cluster and the conditions), and so has
      the Ready condition;
    - Ready=True (serve endpoints > 0);
    - nothing pending: no pending RayCluster and UpgradeInProgress not True (during a
      NewCluster upgrade the old cluster keeps Ready=True while the new one comes up);
    - an active RayCluster whose every Serve application is RUNNING (an in-place serve
      config change goes through DEPLOYING on the active cluster).
    """
    for condition in conditions(rayservice):
        if condition.get("reason") == VALIDATION_FAILED:
            return Readiness(
                False, str(condition.get("message") or "no message"), rejected=True, reason=VALIDATION_FAILED
            )
    ready = _condition(rayservice, "Ready")
    if ready is not None and ready.get("status") == "False" and ready.get("reason") == INITIALIZING_TIMEOUT:
        metadata = rayservice.get("metadata") or {}
        return Readiness(
            False,
            f"{ready.get('message') or 'no message'}. KubeRay has deleted its Ray clusters and will not try again, "
            "not even for a new spec: the RayService must be created anew (a first deploy's rollback deletes it; "
            f"otherwise `kubectl -n {metadata.get('namespace')} delete rayservice {metadata.get('name')}` and "
            "deploy again). Its events and the Ray pods' logs say what kept it from serving",
            rejected=True,
            reason=INITIALIZING_TIMEOUT,
        )

    status = rayservice.get("status") or {}
    generation = _generation((rayservice.get("metadata") or {}).get("generation"))
    observed = _generation(status.get("observedGeneration"))
    if generation is not None and (observed is None or observed < generation):
        return Readiness(False, f"operator has not observed generation {generation} yet (observed {observed})")

    if ready is None:
        return Readiness(False, "no Ready condition yet")
    ready_generation = _generation(ready.get("observedGeneration"))
    if generation is not None and ready_generation is not None and ready_generation < generation:
        return Readiness(False, f"the Ready condition describes generation {ready_generation}, not {generation}")
    if ready.get("status") != "True":
        return Readiness(False, f"Ready={ready.get('status')} ({ready.get('reason')}: {ready.get('message')})")

    active = status.get("activeServiceStatus") or {}
    pending = status.get("pendingServiceStatus") or {}
    if pending.get("rayClusterName"):
        return Readiness(
            False,
            f"upgrade in progress: pending RayCluster {pending['rayClusterName']} "
            f"({_applications(pending) or 'no applications yet'}); "
            f"{active.get('rayClusterName') or 'no cluster'} serves meanwhile",
        )
    upgrade = _condition(rayservice, "UpgradeInProgress")
    if upgrade is not None and upgrade.get("status") == "True":
        return Readiness(False, f"upgrade in progress ({upgrade.get('reason')})")

    if not active.get("rayClusterName"):
        return Readiness(False, "no active RayCluster yet")
    applications = active.get("applicationStatuses") or {}
    if not applications:
        return Readiness(False, f"RayCluster {active['rayClusterName']} reports no Serve application yet")
    not_running = {
        name: app.get("status") for name, app in applications.items() if app.get("status") != APPLICATION_RUNNING
    }
    if not_running:
        return Readiness(False, f"Serve applications not running yet: {_applications(active)}")
    if int(status.get("numServeEndpoints") or 0) < 1:
        return Readiness(False, "no serve endpoints yet")
    return Readiness(True, str(ready.get("reason") or "Ready"))


def _applications(service_status: Mapping[str, Any]) -> str:
    applications = service_status.get("applicationStatuses") or {}
    return ",".join(f"{name}={app.get('status', '')}" for name, app in sorted(applications.items()))


def rejection(resource_id: str, readiness: Readiness) -> str:
    """The deploy's failure message for a RayService KubeRay will not make Ready."""
    if readiness.reason == INITIALIZING_TIMEOUT:
        return f"RayService {resource_id} was not Ready within its initializing time-out ({INITIALIZING_TIMEOUT}): "
    return f"RayService {resource_id} was rejected by KubeRay ({readiness.reason}): "


def ready_data(rayservice: Mapping[str, Any]) -> dict[str, str]:
    """A few facts for Fn::GetAtt (CloudFormation attributes are strings)."""
    status = rayservice.get("status") or {}
    active = status.get("activeServiceStatus") or {}
    return {
        "ActiveRayClusterName": str(active.get("rayClusterName", "")),
        "NumServeEndpoints": str(status.get("numServeEndpoints", 0)),
        "Applications": _applications(active),
        "ObservedGeneration": str(status.get("observedGeneration", "")),
    }
