"""Availability of a serve endpoint: a probe that sends chat requests every minute and
publishes what it saw, and an alarm on the availability SLO."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from ray_serve_ha.constructs.api_keys import SERVE_PROBE
from ray_serve_ha.constructs.lambda_code import PYTHON_RUNTIME, handler_code, handler_log_group

METRIC_NAMESPACE = "RayServeHA"
PROBE_REQUESTS = 3
# The alarm fires below this percentage of successful probe requests, unless told otherwise.
DEFAULT_SLO_PERCENT = 99.0


@dataclass(frozen=True)
class ServeAvailabilityProbeProps:
    """service_name: the metrics' Service dimension (e.g. `<cluster>/<rayservice>`).
    serve_url: the serve endpoint, `http://<internal load balancer>:8000`
    (`FaultTolerantRayService.serve_url`).
    vpc, subnets, security_group: where the probe runs; the group needs egress to the
    load balancer on the serve port and to CloudWatch on 443 (`HelperSecurityGroup` with
    `HelperReach(serve_load_balancer=True, aws_apis=True)`).
    api_keys: the API keys secret (`ApiKeys.secret`), whose `api_key_name` entry the probe
    sends; None: an open API."""

    service_name: str
    serve_url: str
    vpc: ec2.IVpc
    subnets: Sequence[ec2.ISubnet]
    security_group: ec2.ISecurityGroup
    api_keys: secretsmanager.ISecret | None = None
    api_key_name: str = SERVE_PROBE


class ServeAvailabilityProbe(Construct):
    """A Lambda in the VPC that sends a few chat requests to the serve endpoint every minute
    and publishes Availability, Latency, Requests and FailedRequests (dimension Service)."""

    def __init__(self, scope: Construct, construct_id: str, props: ServeAvailabilityProbeProps) -> None:
        super().__init__(scope, construct_id)
        self.service_name = service_name = props.service_name
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=PYTHON_RUNTIME,
            handler="index.handler",
            code=handler_code("serve_probe"),
            description="Availability probe of the Ray Serve endpoint",
            # The endpoint is an internal NLB: probe from inside the VPC.
            vpc=props.vpc,
            vpc_subnets=ec2.SubnetSelection(subnets=list(props.subnets)),
            security_groups=[props.security_group],
            timeout=cdk.Duration.seconds(50),
            memory_size=256,
            environment={
                "SERVE_URL": props.serve_url,
                "PROBE_REQUESTS": str(PROBE_REQUESTS),
                "REQUEST_TIMEOUT_S": "10",
                "METRIC_NAMESPACE": METRIC_NAMESPACE,
                "SERVICE_NAME": service_name,
                **({"API_KEYS_SECRET_ARN": props.api_keys.secret_arn, "API_KEY_NAME": props.api_key_name}
                   if props.api_keys is not None else {}),
            },
            log_group=handler_log_group(self, "Logs"),
        )
        if props.api_keys is not None:
            # Its key, from the one secret of API keys (and nothing else in Secrets Manager).
            self.function.add_to_role_policy(iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"], resources=[props.api_keys.secret_arn]
            ))
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


@dataclass(frozen=True)
class ServeAvailabilityAlarmProps:
    """probe: whose Availability metric is watched. slo_percent: the threshold.
    email: an address subscribed to the alarm's encrypted topic."""

    probe: ServeAvailabilityProbe
    slo_percent: float = DEFAULT_SLO_PERCENT
    email: str | None = None


class ServeAvailabilityAlarm(Construct):
    """Alarms when the probe's availability drops below the SLO for 5 of the last 5 minutes,
    or when the probe stops reporting (missing data is breaching)."""

    def __init__(self, scope: Construct, construct_id: str, props: ServeAvailabilityAlarmProps) -> None:
        super().__init__(scope, construct_id)
        probe, slo_percent, email = props.probe, props.slo_percent, props.email
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
