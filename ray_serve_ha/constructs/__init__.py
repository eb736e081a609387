"""The serving system's parts as CDK constructs, for the project's own stacks and for an app
of your own (README, "Bring your own VPC or cluster"). Each takes a frozen dataclass of
props whose defaults are the library's:

- `GcsStore`: the ElastiCache Redis that makes the Ray head fault tolerant;
- `FaultTolerantRayService`: the charts and the readiness gate on a given EKS cluster;
- `ServeAvailabilityProbe`, `ServeAvailabilityAlarm`: the probe and the SLO alarm;
- `HelperSecurityGroup`, `HelperReach`: a group that reaches only what a helper talks to;
- `ServingAddOns`: what the RayService needs of a cluster, created or imported (capacity,
  KubeRay, External Secrets); `ClusterAutoscaler` for managed node groups.
"""

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
from ray_serve_ha.constructs.operators import ClusterAutoscaler, ClusterAutoscalerProps
from ray_serve_ha.constructs.rayservice import FaultTolerantRayService, FaultTolerantRayServiceProps

__all__ = [
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
    "ServingAddOns",
    "ServingAddOnsProps",
]
