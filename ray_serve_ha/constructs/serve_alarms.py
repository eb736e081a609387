"""Alarms on Ray Serve's own metrics, as the CloudWatch Observability add-on sends them
(ray_serve_ha/constructs/observability.py): PromQL alarms, since OTel Container Insights
series live behind CloudWatch's OTLP endpoint with their Prometheus names, not in a metric
namespace (AWS CloudWatch docs, "PromQL alarms").

- 5xx: the share of the proxies' answers with a 5xx status, over a threshold.
- p99 latency: the proxies' end-to-end p99, over a threshold.
- Not Ready: some Serve application not RUNNING, or no Serve controller reporting at all,
  for more than 60 s. KubeRay's RayService `Ready` condition follows the Serve applications'
  status, which the Serve controller exports as `ray_serve_application_status` (a metric the
  add-on collects). Kube-state-metrics knows no RayService (a custom resource), and the
  readiness gate Lambda runs only during a deploy. `absent()` makes a selector that matches
  nothing fire too: a label the backend does not carry cannot silence the alarms unseen."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from constructs import Construct

from ray_serve_ha.charts.serve_metrics import ServeQueries

# The 5xx alarm fires above this share of answers, percent, unless told otherwise.
DEFAULT_SERVER_ERROR_PERCENT = 1.0
# The latency alarm fires above this p99, milliseconds: a full 4096-token answer of a 7B
# model at ~18 tokens/s on one Inferentia2 chip takes minutes, a chat answer seconds.
DEFAULT_LATENCY_P99_MS = 30_000.0
# KubeRay's RayService must be Ready again within this long.
NOT_READY_PENDING = cdk.Duration.seconds(60)


@dataclass(frozen=True)
class ServeMetricAlarmsProps:
    """queries: Serve's series, narrowed to this service (`ServeQueries(selector=...)`).
    topic: where the alarms notify (e.g. `ServeAvailabilityAlarm.topic`; its key must let
    CloudWatch encrypt for this account's alarms). server_error_percent, latency_p99_ms:
    the thresholds (above zero)."""

    queries: ServeQueries
    topic: sns.ITopic
    server_error_percent: float = DEFAULT_SERVER_ERROR_PERCENT
    latency_p99_ms: float = DEFAULT_LATENCY_P99_MS


class ServeMetricAlarms(Construct):
    """The three PromQL alarms, each notifying `topic` on ALARM and OK."""

    def __init__(self, scope: Construct, construct_id: str, props: ServeMetricAlarmsProps) -> None:
        super().__init__(scope, construct_id)
        for name, value in (("server_error_percent", props.server_error_percent),
                            ("latency_p99_ms", props.latency_p99_ms)):
            if value <= 0:
                raise ValueError(f"ServeMetricAlarmsProps.{name}={value:g}: a threshold must be above 0")
        queries, topic = props.queries, props.topic
        minute = cdk.Duration.minutes(1)
        self.server_errors = cloudwatch.PromQLAlarm(
            self,
            "ServerErrors",
            alarm_description=f"Ray Serve answers more than {props.server_error_percent:g}% 5xx",
            query=f"{queries.error_percent('5')} > {props.server_error_percent:g}",
            evaluation_interval=minute,
            pending_period=cdk.Duration.minutes(3),
            recovery_period=cdk.Duration.minutes(5),
        )
        self.latency = cloudwatch.PromQLAlarm(
            self,
            "LatencyP99",
            alarm_description=f"Ray Serve p99 latency above {props.latency_p99_ms:g} ms",
            query=f"{queries.latency_ms(0.99)} > {props.latency_p99_ms:g}",
            evaluation_interval=minute,
            pending_period=cdk.Duration.minutes(5),
            recovery_period=cdk.Duration.minutes(5),
        )
        self.not_ready = cloudwatch.PromQLAlarm(
            self,
            "NotReady",
            alarm_description="The RayService's Serve applications not RUNNING for more than 60 s",
            query=queries.not_running(),
            evaluation_interval=cdk.Duration.seconds(20),
            pending_period=NOT_READY_PENDING,
            recovery_period=minute,
        )
        self.alarms = [self.server_errors, self.latency, self.not_ready]
        for alarm in self.alarms:
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))
            alarm.add_ok_action(cloudwatch_actions.SnsAction(topic))
        # A topic with a policy accepts nothing it does not allow: these alarms, of this account.
        stack = cdk.Stack.of(self)
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowServeMetricAlarmsPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnEquals": {"aws:SourceArn": [a.alarm_arn for a in self.alarms]},
                },
            )
        )
