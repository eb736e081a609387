"""Availability of a serve endpoint: a probe that sends chat requests every minute and
publishes what it saw, and an alarm on the availability SLO (stacks/observability.py holds
what they build; here they take typed props)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from stacks.observability import AvailabilityAlarm, ServeProbe
from stacks.settings import SettingsModel


def default_slo_percent() -> float:
    """The availability SLO as the settings model defaults it."""
    return SettingsModel.model_validate({}).availability_slo_percent


@dataclass(frozen=True)
class ServeAvailabilityProbeProps:
    """service_name: the metrics' Service dimension (e.g. `<cluster>/<rayservice>`).
    serve_url: the serve endpoint, `http://<internal load balancer>:8000`
    (`FaultTolerantRayService.serve_url`).
    vpc, subnets, security_group: where the probe runs; the group needs egress to the
    load balancer on the serve port and to CloudWatch on 443 (`HelperSecurityGroup` with
    `HelperReach(serve_load_balancer=True, aws_apis=True)`)."""

    service_name: str
    serve_url: str
    vpc: ec2.IVpc
    subnets: Sequence[ec2.ISubnet]
    security_group: ec2.ISecurityGroup


class ServeAvailabilityProbe(ServeProbe):
    """A Lambda in the VPC that sends chat requests to the endpoint every minute and
    publishes Availability, Latency, Requests and FailedRequests (namespace RayServeHA)."""

    def __init__(self, scope: Construct, construct_id: str, props: ServeAvailabilityProbeProps) -> None:
        super().__init__(
            scope, construct_id, service_name=props.service_name, serve_url=props.serve_url, vpc=props.vpc,
            subnets=list(props.subnets), security_group=props.security_group,
        )


@dataclass(frozen=True)
class ServeAvailabilityAlarmProps:
    """probe: whose Availability metric is watched. slo_percent: the threshold (the project's
    default unless given). email: an address subscribed to the alarm's encrypted topic."""

    probe: ServeProbe
    slo_percent: float = field(default_factory=default_slo_percent)
    email: str | None = None


class ServeAvailabilityAlarm(AvailabilityAlarm):
    """Alarms (to an encrypted SNS topic) when availability stays below the SLO for five
    minutes or the probe goes silent."""

    def __init__(self, scope: Construct, construct_id: str, props: ServeAvailabilityAlarmProps) -> None:
        super().__init__(scope, construct_id, probe=props.probe, slo_percent=props.slo_percent, email=props.email)
