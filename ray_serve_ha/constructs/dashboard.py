"""A CloudWatch dashboard of a serving system: the availability probe's metrics and alarm,
the GCS store's health, and the accelerator nodes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from ray_serve_ha.constructs.availability import ServeAvailabilityProbe


@dataclass(frozen=True)
class ServingDashboardProps:
    """name: the dashboard is `<name>-serving`. probe, alarm: the availability probe and its
    SLO alarm. replication_group_id: the GCS store's (`GcsStore.replication_group.ref`).
    accelerator_instance_types: the serving nodes' types, counted from EC2's metrics."""

    name: str
    probe: ServeAvailabilityProbe
    alarm: cloudwatch.Alarm
    replication_group_id: str
    accelerator_instance_types: Sequence[str]


def serving_dashboard(scope: Construct, construct_id: str, props: ServingDashboardProps) -> cloudwatch.Dashboard:
    """The probe's latency and requests, the SLO alarm, the GCS store's CPU, memory and
    replication lag, and how many accelerator nodes run."""
    probe, replication_group_id = props.probe, props.replication_group_id
    accelerator_instance_types = props.accelerator_instance_types
    dashboard = cloudwatch.Dashboard(scope, construct_id, dashboard_name=f"{props.name}-serving")

    def elasticache(metric: str, label: str) -> cloudwatch.MathExpression:
        # The primary moves on failover: search every member of the replication group.
        return cloudwatch.MathExpression(
            expression=(
                f"SEARCH('{{AWS/ElastiCache,CacheClusterId}} MetricName=\"{metric}\" "
                f"{replication_group_id}', 'Average', 60)"
            ),
            label=label,
            period=cdk.Duration.minutes(1),
        )

    types = " OR ".join(f'\"{t}\"' for t in accelerator_instance_types)
    accelerator_nodes = cloudwatch.MathExpression(
        # Basic EC2 monitoring sends one CPU datapoint per instance every 5 minutes, so the
        # sample count per instance type and 5 minutes is the number of running instances
        # (of this account and region).
        expression=(
            f"SUM(SEARCH('{{AWS/EC2,InstanceType}} MetricName=\"CPUUtilization\" InstanceType=({types})', "
            "'SampleCount', 300))"
        ),
        label=f"running {', '.join(accelerator_instance_types)} instances",
        period=cdk.Duration.minutes(5),
    )
    dashboard.add_widgets(
        cloudwatch.AlarmWidget(title="Availability SLO", alarm=props.alarm, width=8),
        cloudwatch.GraphWidget(
            title="Probe latency (ms)",
            left=[probe.metric("Latency", "p50"), probe.metric("Latency", "p99"), probe.metric("Latency", "Maximum")],
            width=8,
        ),
        cloudwatch.GraphWidget(
            title="Probe requests",
            left=[probe.metric("Requests", "Sum"), probe.metric("FailedRequests", "Sum")],
            width=8,
        ),
    )
    dashboard.add_widgets(
        cloudwatch.GraphWidget(
            title="GCS store (ElastiCache): engine CPU %",
            left=[elasticache("EngineCPUUtilization", "engine CPU")],
            width=8,
        ),
        cloudwatch.GraphWidget(
            title="GCS store: memory % and replication lag (s)",
            left=[elasticache("DatabaseMemoryUsagePercentage", "memory")],
            right=[elasticache("ReplicationLag", "replication lag")],
            width=8,
        ),
        cloudwatch.GraphWidget(title="Accelerator nodes", left=[accelerator_nodes], width=8),
    )
    return dashboard
