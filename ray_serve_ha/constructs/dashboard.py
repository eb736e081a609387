"""A CloudWatch dashboard of a serving system: the availability probe's metrics and alarm,
the GCS store's health, the accelerator nodes and, from the CloudWatch Observability add-on,
Ray Serve's own series (their alarms, and a graph of each, drawn from PromQL)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from ray_serve_ha.charts.serve_metrics import ServeQueries
from ray_serve_ha.constructs.availability import ServeAvailabilityProbe
from ray_serve_ha.constructs.promql_graphs import PromQLGraphs
from ray_serve_ha.constructs.serve_alarms import ServeMetricAlarms


@dataclass(frozen=True)
class ServingDashboardProps:
    """name: the dashboard is `<name>-serving`. probe, alarm: the availability probe and its
    SLO alarm. replication_group_id: the GCS store's (`GcsStore.replication_group.ref`).
    accelerator_instance_types: the serving nodes' types, counted from EC2's metrics.
    serve_alarms, serve_queries, serve_graphs: the alarms on Serve's own metrics, the queries
    of its graphs and the custom widgets' function that draws them, when the cluster runs the
    CloudWatch Observability add-on (all three, or none)."""

    name: str
    probe: ServeAvailabilityProbe
    alarm: cloudwatch.Alarm
    replication_group_id: str
    accelerator_instance_types: Sequence[str]
    serve_alarms: ServeMetricAlarms | None = None
    serve_queries: ServeQueries | None = None
    serve_graphs: PromQLGraphs | None = None


def serving_dashboard(scope: Construct, construct_id: str, props: ServingDashboardProps) -> cloudwatch.Dashboard:
    """The probe's latency and requests, the SLO alarm, the GCS store's CPU, memory and
    replication lag, and how many accelerator nodes run."""
    serve = (props.serve_alarms, props.serve_queries, props.serve_graphs)
    if any(part is None for part in serve) and any(part is not None for part in serve):
        raise ValueError(
            "ServingDashboardProps: serve_alarms, serve_queries and serve_graphs go together "
            "(Serve's own metrics need all three); give all of them or none"
        )
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
    if props.serve_alarms is not None and props.serve_queries is not None and props.serve_graphs is not None:
        _add_serve_metrics(dashboard, props.serve_alarms, props.serve_queries, props.serve_graphs)
    return dashboard


def _add_serve_metrics(
    dashboard: cloudwatch.Dashboard, alarms: ServeMetricAlarms, queries: ServeQueries, graphs: PromQLGraphs
) -> None:
    """The PromQL alarms' states, then a graph of each Serve series: OTel Container Insights
    series are read with PromQL only, and a metric widget cannot hold PromQL, so each graph is
    a custom widget whose function queries CloudWatch's QueryMetrics API."""
    dashboard.add_widgets(
        cloudwatch.AlarmStatusWidget(
            title="Ray Serve (its own metrics): 5xx, p99 latency, not Ready", alarms=alarms.alarms, width=24, height=3,
        ),
    )
    dashboard.add_widgets(*(graphs.widget(panel.title, panel.query, panel.unit) for panel in queries.graphs()))
