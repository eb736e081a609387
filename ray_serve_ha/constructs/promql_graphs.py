"""Graphs of PromQL queries on a CloudWatch dashboard. A metric widget names namespace
metrics, metric math or Metrics Insights queries, not PromQL (the dashboard body's metric
widget format), and OTel Container Insights series are read with PromQL only; a custom
widget (AWS CloudWatch docs, "Details about custom widgets in CloudWatch") is drawn by a
Lambda function the dashboard invokes. This one (lambda/promql_widget) asks CloudWatch's
Prometheus-compatible QueryMetrics API (AWS CloudWatch docs, "QueryMetrics",
CloudWatch-PromQL-API-QueryMetrics) for the dashboard's time range and answers with an SVG
line chart.

The console runs a dashboard's custom widgets only once the viewer allows them (AWS
CloudWatch docs, "Security and JavaScript for custom CloudWatch widgets"), and invokes the
function as the viewer (who needs `lambda:InvokeFunction` on it: docs/operating.md)."""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from ray_serve_ha.constructs.lambda_code import PYTHON_RUNTIME, handler_code

# What QueryMetrics requires of its caller, both ("QueryMetrics", Required IAM permissions).
# Neither action has a resource type in CloudWatch's service authorization reference: "*".
QUERY_ACTIONS = ("cloudwatch:GetMetricData", "cloudwatch:ListMetrics")
# Series drawn per graph at most (QueryMetrics' own bound is 500).
DEFAULT_MAX_SERIES = 20


@dataclass(frozen=True)
class PromQLGraphsProps:
    """endpoint: the Prometheus-compatible API the graphs query (default: the region's
    CloudWatch monitoring host, signed with the function's role). max_series: lines per graph."""

    endpoint: str | None = None
    max_series: int = DEFAULT_MAX_SERIES


class PromQLGraphs(Construct):
    """The custom widgets' function, its log group and its permission to query; `widget()`
    makes one graph of a PromQL query."""

    def __init__(self, scope: Construct, construct_id: str, props: PromQLGraphsProps | None = None) -> None:
        super().__init__(scope, construct_id)
        props = props or PromQLGraphsProps()
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=PYTHON_RUNTIME,
            handler="index.render",
            code=handler_code("promql_widget"),
            description="CloudWatch dashboard custom widget: a PromQL query as an SVG line chart",
            # The dashboard waits for the chart; QueryMetrics answers well within this.
            timeout=cdk.Duration.seconds(30),
            memory_size=256,
            environment={
                "QUERY_TIMEOUT_S": "20",
                "MAX_SERIES": str(props.max_series),
                **({"PROMQL_ENDPOINT": props.endpoint} if props.endpoint else {}),
            },
            log_group=logs.LogGroup(
                self, "Logs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=cdk.RemovalPolicy.DESTROY
            ),
        )
        self.function.add_to_role_policy(iam.PolicyStatement(actions=list(QUERY_ACTIONS), resources=["*"]))

    def widget(self, title: str, query: str, unit: str, *, width: int = 8, height: int = 6) -> cloudwatch.CustomWidget:
        """A graph of `query` titled `title`, its values in `unit`, redrawn on refresh, resize
        and a change of the dashboard's time range."""
        return cloudwatch.CustomWidget(
            function_arn=self.function.function_arn,
            title=title,
            params={"query": query, "unit": unit},
            width=width,
            height=height,
            update_on_refresh=True,
            update_on_resize=True,
            update_on_time_range_change=True,
        )
