"""The serving system's parts as CDK constructs, for the project's own stacks and for an app
of your own (docs/operating.md, "Bring your own VPC or cluster"). Each takes a frozen dataclass of
props whose defaults are the library's:

- `GcsStore`: the ElastiCache Redis that makes the Ray head fault tolerant;
- `FaultTolerantRayService`: the charts and the readiness gate on a given EKS cluster;
- `ServeAvailabilityProbe`, `ServeAvailabilityAlarm`: the probe and the SLO alarm;
- `CloudWatchObservability`: the add-on that sends Ray Serve's own metrics to CloudWatch;
  `ServeMetricAlarms`: PromQL alarms on them (5xx, p99 latency, not Ready);
- `HelperSecurityGroup`, `HelperReach`: a group that reaches only what a helper talks to;
- `ServingAddOns`: what the RayService needs of a cluster, created or imported (capacity,
  KubeRay, External Secrets); `ClusterAutoscaler` for managed node groups.

The names are loaded when first used, so that importing one module of this package (the
settings read the props' defaults) does not load every construct and the charts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray_serve_ha.constructs.add_ons import ServingAddOns, ServingAddOnsProps
    from ray_serve_ha.constructs.availability import (
        ServeAvailabilityAlarm,
        ServeAvailabilityAlarmProps,
        ServeAvailabilityProbe,
        ServeAvailabilityProbeProps,
    )
    from ray_serve_ha.constructs.gcs_store import GcsStore, GcsStoreProps
    from ray_serve_ha.constructs.gcs_store_engine import GcsStoreEngine
    from ray_serve_ha.constructs.helper_access import HelperReach, HelperSecurityGroup, HelperSecurityGroupProps
    from ray_serve_ha.constructs.observability import CloudWatchObservability, CloudWatchObservabilityProps
    from ray_serve_ha.constructs.operators import ClusterAutoscaler, ClusterAutoscalerProps
    from ray_serve_ha.constructs.rayservice import FaultTolerantRayService, FaultTolerantRayServiceProps
    from ray_serve_ha.constructs.serve_alarms import ServeMetricAlarms, ServeMetricAlarmsProps

# Name -> the module that defines it.
_EXPORTS = {
    "CloudWatchObservability": "ray_serve_ha.constructs.observability",
    "CloudWatchObservabilityProps": "ray_serve_ha.constructs.observability",
    "ClusterAutoscaler": "ray_serve_ha.constructs.operators",
    "ClusterAutoscalerProps": "ray_serve_ha.constructs.operators",
    "FaultTolerantRayService": "ray_serve_ha.constructs.rayservice",
    "FaultTolerantRayServiceProps": "ray_serve_ha.constructs.rayservice",
    "GcsStore": "ray_serve_ha.constructs.gcs_store",
    "GcsStoreEngine": "ray_serve_ha.constructs.gcs_store_engine",
    "GcsStoreProps": "ray_serve_ha.constructs.gcs_store",
    "HelperReach": "ray_serve_ha.constructs.helper_access",
    "HelperSecurityGroup": "ray_serve_ha.constructs.helper_access",
    "HelperSecurityGroupProps": "ray_serve_ha.constructs.helper_access",
    "ServeAvailabilityAlarm": "ray_serve_ha.constructs.availability",
    "ServeAvailabilityAlarmProps": "ray_serve_ha.constructs.availability",
    "ServeAvailabilityProbe": "ray_serve_ha.constructs.availability",
    "ServeAvailabilityProbeProps": "ray_serve_ha.constructs.availability",
    "ServeMetricAlarms": "ray_serve_ha.constructs.serve_alarms",
    "ServeMetricAlarmsProps": "ray_serve_ha.constructs.serve_alarms",
    "ServingAddOns": "ray_serve_ha.constructs.add_ons",
    "ServingAddOnsProps": "ray_serve_ha.constructs.add_ons",
}
__all__ = [
    "CloudWatchObservability",
    "CloudWatchObservabilityProps",
    "ClusterAutoscaler",
    "ClusterAutoscalerProps",
    "FaultTolerantRayService",
    "FaultTolerantRayServiceProps",
    "GcsStore",
    "GcsStoreEngine",
    "GcsStoreProps",
    "HelperReach",
    "HelperSecurityGroup",
    "HelperSecurityGroupProps",
    "ServeAvailabilityAlarm",
    "ServeAvailabilityAlarmProps",
    "ServeAvailabilityProbe",
    "ServeAvailabilityProbeProps",
    "ServeMetricAlarms",
    "ServeMetricAlarmsProps",
    "ServingAddOns",
    "ServingAddOnsProps",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
