"""Availability of the serving endpoint: a probe every minute, an alarm on the SLO, and a
dashboard with the probe's metrics, the GCS store's health and the accelerator nodes."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks.lambda_code import PYTHON_RUNTIME, handler_code

METRIC_NAMESPACE = "RayServeHA"
PROBE_REQUESTS = 3


class ServeProbe(Construct):
    """A Lambda in the VPC that sends a few chat requests to the serve endpoint every minute
    and publishes Availability, Latency, Requests and FailedRequests (dimension Service)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        service_name: str,
        serve_url: str,
        vpc: ec2.IVpc,
        subnets: list[ec2.ISubnet],
        security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        self.service_name = service_name
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=PYTHON_RUNTIME,
            handler="index.handler",
            code=handler_code("serve_probe"),
            description="Availability probe of the Ray Serve endpoint",
            # The endpoint is an internal NLB: probe from inside the VPC.
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnets=subnets),
            security_groups=[security_group],
            timeout=cdk.Duration.seconds(50),
            memory_size=256,
            environment={
                "SERVE_URL": serve_url,
                "PROBE_REQUESTS": str(PROBE_REQUESTS),
                "REQUEST_TIMEOUT_S": "10",
                "METRIC_NAMESPACE": METRIC_NAMESPACE,
                "SERVICE_NAME": service_name,
            },
            log_group=logs.LogGroup(
                self, "Logs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=cdk.RemovalPolicy.DESTROY
            ),
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                # PutMetricData has no resource-level permissions; the namespace condition
                # keeps the probe to its own metrics.
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}},
            )
        )
        self.schedule = events.Rule(
            self,
            "Schedule",
            description="Probe the Ray Serve endpoint every minute",
            schedule=events.Schedule.rate(cdk.Duration.minutes(1)),
            targets=[targets.LambdaFunction(self.function, retry_attempts=0)],
        )

    def metric(self, name: str, statistic: str, unit: cloudwatch.Unit | None = None) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=METRIC_NAMESPACE,
            metric_name=name,
            dimensions_map={"Service": self.service_name},
            statistic=statistic,
            period=cdk.Duration.minutes(1),
            unit=unit,
        )


class AvailabilityAlarm(Construct):
    """Alarms when the probe's availability drops below the SLO for 5 of the last 5 minutes,
    or when the probe stops reporting (missing data is breaching)."""

    def __init__(self, scope: Construct, construct_id: str, *, probe: ServeProbe, slo_percent: float,
                 email: str | None) -> None:
        super().__init__(scope, construct_id)
        key = kms.Key(self, "TopicKey", description="Ray Serve availability alarm topic", enable_key_rotation=True)
        self.topic = sns.Topic(self, "Topic", display_name="Ray Serve availability", master_key=key, enforce_ssl=True)
        # CloudWatch must be able to publish to the encrypted topic, for this account's alarms
        # only (the conditions keep another account's alarm from using the key: confused deputy).
        # Not this alarm's own ARN: the key would then depend on the alarm, which depends on
        # the topic, which depends on the key.
        stack = cdk.Stack.of(self)
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{stack.partition}:cloudwatch:{stack.region}:{stack.account}:alarm:*"
                    },
                },
            )
        )
        if email:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        self.alarm = cloudwatch.Alarm(
            self,
            "Alarm",
            alarm_description=f"Ray Serve availability below the {slo_percent:g}% SLO (probe every minute)",
            metric=probe.metric("Availability", "Average", cloudwatch.Unit.PERCENT),
            threshold=slo_percent,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints_to_alarm=5,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        self.alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.topic))
        self.alarm.add_ok_action(cloudwatch_actions.SnsAction(self.topic))
        # The topic's policy must allow CloudWatch to publish, too: `enforce_ssl` gives it a
        # policy holding only the TLS Deny, and a topic with a policy accepts nothing it does
        # not allow (the alarm's history then says "not authorized to perform SNS:Publish").
        # Only this alarm, of this account: the topic policy depends on the alarm and the
        # topic, and nothing depends on it, so the exact ARN makes no cycle.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowAvailabilityAlarmPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnEquals": {"aws:SourceArn": self.alarm.alarm_arn},
                },
            )
        )


def serving_dashboard(
    scope: Construct,
    construct_id: str,
    *,
    name: str,
    probe: ServeProbe,
    alarm: cloudwatch.Alarm,
    replication_group_id: str,
    accelerator_instance_types: tuple[str, ...],
) -> cloudwatch.Dashboard:
    dashboard = cloudwatch.Dashboard(scope, construct_id, dashboard_name=f"{name}-serving")

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
        cloudwatch.AlarmWidget(title="Availability SLO", alarm=alarm, width=8),
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
