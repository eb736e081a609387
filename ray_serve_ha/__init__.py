"""The serving system's parts as CDK constructs for an app of your own (README, "Bring your
own VPC or cluster"):

- `GcsStore`: the ElastiCache Redis that makes the Ray head fault tolerant;
- `FaultTolerantRayService`: the charts and the readiness gate on a given EKS cluster;
- `ServeAvailabilityProbe`, `ServeAvailabilityAlarm`: the probe and the SLO alarm;
- `HelperSecurityGroup`, `HelperReach`: a group that reaches only what a helper talks to.

Each takes a frozen dataclass of props; the project's own stacks are built from them.
"""

from ray_serve_ha.availability import (
    ServeAvailabilityAlarm,
    ServeAvailabilityAlarmProps,
    ServeAvailabilityProbe,
    ServeAvailabilityProbeProps,
)
from ray_serve_ha.gcs_store import GcsStore, GcsStoreProps
from ray_serve_ha.rayservice import FaultTolerantRayService, FaultTolerantRayServiceProps
from stacks.helper_access import HelperReach, HelperSecurityGroup

__all__ = [
    "FaultTolerantRayService",
    "FaultTolerantRayServiceProps",
    "GcsStore",
    "GcsStoreProps",
    "HelperReach",
    "HelperSecurityGroup",
    "ServeAvailabilityAlarm",
    "ServeAvailabilityAlarmProps",
    "ServeAvailabilityProbe",
    "ServeAvailabilityProbeProps",
]
