"""Ray Serve's own metrics on EKS, in the templates: the CloudWatch Observability add-on
(pinned, OTel Container Insights, Pod Identity) in both capacity modes, the PromQL alarms on
5xx, p99 latency and a RayService not Ready with the series names the add-on keeps, their
topic's policy, the dashboard's graphs of every series (custom widgets drawn from PromQL, their
function and what its role may call), and the alarm thresholds as settings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ray_serve_ha.charts import serve_metrics
from ray_serve_ha.charts.serve_metrics import ServeQueries
from ray_serve_ha.constructs.lambda_code import PYTHON_RUNTIME
from ray_serve_ha.constructs.observability import ADD_ON_NAME, ADD_ON_VERSION
from ray_serve_ha.constructs.promql_graphs import QUERY_ACTIONS
from stacks.settings import Settings, SettingsError
from tests.conftest import context, synthesize
from tests.deployed import ACCOUNT, OTHER_ACCOUNT, deployment_of, logical_id_of, only, stack
from tests.iam_policy import Deployment, Request, decide, role, service
from tests.test_resource_policies import assume

SELECTOR = '"@resource.k8s.cluster.name"="ray-serve-ha", "@resource.k8s.namespace.name"="ray-serving"'


@pytest.fixture(scope="module")
def deployment(default_system) -> Deployment:
    return deployment_of(default_system)


def add_on(template) -> dict[str, Any]:
    (resource,) = template.find_resources("AWS::EKS::Addon", {"Properties": {"AddonName": ADD_ON_NAME}}).values()
    return resource


@pytest.mark.parametrize("system", ["default_system", "node_groups_neuron"])
def test_the_add_on_runs_in_otel_mode_at_the_version_that_scrapes_ray(system, request):
    cluster = request.getfixturevalue(system).cluster
    resource = add_on(cluster)
    properties = resource["Properties"]
    major = int(ADD_ON_VERSION.removeprefix("v").split(".")[0])
    assert properties["AddonVersion"] == ADD_ON_VERSION and major >= 8
    assert json.loads(properties["ConfigurationValues"]) == {"otelContainerInsights": {"enabled": True}}
    (association_id, association), = cluster.find_resources(
        "AWS::EKS::PodIdentityAssociation", {"Properties": {"ServiceAccount": "cloudwatch-agent"}}).items()
    assert association["Properties"]["Namespace"] == "amazon-cloudwatch"
    # Credentials are injected at pod start: the association exists before the agent's pods.
    assert association_id in resource["DependsOn"]
    role_id = logical_id_of(association["Properties"]["RoleArn"])
    role = cluster.to_json()["Resources"][role_id]["Properties"]
    assert json.dumps(role["ManagedPolicyArns"]).endswith(':iam::aws:policy/CloudWatchAgentServerPolicy"]]}]')


def test_with_managed_node_groups_the_association_waits_for_the_pod_identity_agent(node_groups_neuron):
    cluster = node_groups_neuron.cluster
    (agent_id,) = cluster.find_resources("AWS::EKS::Addon", {"Properties": {"AddonName": "eks-pod-identity-agent"}})
    (association,) = cluster.find_resources(
        "AWS::EKS::PodIdentityAssociation", {"Properties": {"ServiceAccount": "cloudwatch-agent"}}).values()
    assert agent_id in association["DependsOn"]


def test_an_existing_cluster_brings_its_own_add_on(in_existing_cluster):
    assert not in_existing_cluster.cluster.find_resources("AWS::EKS::Addon")
    # The alarms still watch the series its own add-on sends.
    assert len(in_existing_cluster.serving.find_resources("AWS::CloudWatch::Alarm")) == 4


def test_only_eks_pod_identity_may_assume_the_agents_role(deployment):
    _, association = only(deployment, "cluster", "AWS::EKS::PodIdentityAssociation", ServiceAccount="cloudwatch-agent")
    role_id = logical_id_of(association["Properties"]["RoleArn"])
    for action in ("sts:AssumeRole", "sts:TagSession"):
        assert assume(deployment, "cluster", role_id, "pods.eks.amazonaws.com", action)
    assert not assume(deployment, "cluster", role_id, "ec2.amazonaws.com", "sts:AssumeRole")


@pytest.fixture(scope="module")
def promql_alarms(default_system) -> dict[str, dict[str, Any]]:
    alarms = default_system.serving.find_resources("AWS::CloudWatch::Alarm")
    found = {}
    for logical_id, alarm in alarms.items():
        criteria = alarm["Properties"].get("EvaluationCriteria")
        if criteria:
            found[logical_id] = {**alarm["Properties"], "Query": criteria["PromQLCriteria"]["Query"],
                                 "Pending": criteria["PromQLCriteria"]["PendingPeriod"]}
    assert len(found) == 3
    return found


def alarm_of(promql_alarms, word: str) -> dict[str, Any]:
    (alarm,) = [a for a in promql_alarms.values() if word in a["AlarmDescription"]]
    return alarm


# The proxies' gates answer beyond their share themselves, out of sight of Serve's own counts.
PROXY_SHEDS = f"(sum(rate(ray_serve_llm_proxy_shed_requests_total{{{SELECTOR}}}[2m])) or vector(0))"


def test_the_5xx_alarm_divides_the_proxies_5xx_answers_by_all(promql_alarms):
    """All answers: the proxies' own and their gates' 429s (a flood that is shed is no 5xx)."""
    alarm = alarm_of(promql_alarms, "5xx")
    assert alarm["Query"] == (
        f'100 * (sum(rate(ray_serve_num_http_requests_total{{{SELECTOR}, application!="", status_code=~"5.."}}'
        f"[2m]))) / "
        f'(sum(rate(ray_serve_num_http_requests_total{{{SELECTOR}, application!=""}}[2m])) + {PROXY_SHEDS}) > 1'
    )


def test_the_request_and_4xx_panels_count_the_proxies_sheds_and_the_5xx_panel_does_not():
    panels = ServeQueries(serve_metrics.eks_selector("ray-serve-ha", "ray-serving")).panels()
    assert panels["Requests per second"].endswith(f" + {PROXY_SHEDS}")
    assert panels["4xx per second"].endswith(f" + {PROXY_SHEDS}")
    assert "proxy_shed" not in panels["5xx per second"]


def test_the_latency_alarm_reads_the_proxies_latency_histogram(promql_alarms):
    alarm = alarm_of(promql_alarms, "p99")
    assert alarm["Query"] == (
        "histogram_quantile(0.99, sum by (le) "
        f'(rate(ray_serve_http_request_latency_ms_bucket{{{SELECTOR}, application!=""}}[2m]))) > 30000'
    )


def test_the_not_ready_alarm_fires_after_60_s_of_an_application_not_running_or_no_controller(promql_alarms):
    alarm = alarm_of(promql_alarms, "RUNNING")
    status = f"ray_serve_application_status{{{SELECTOR}}}"
    assert alarm["Query"] == f"(min({status}) < 6) or absent({status})"
    assert alarm["Pending"] == 60 and alarm["EvaluationInterval"] <= 30


def test_every_serve_alarm_notifies_the_alarm_topic(default_system, promql_alarms):
    (topic_id,) = default_system.serving.find_resources("AWS::SNS::Topic")
    for alarm in promql_alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}] and alarm["OKActions"] == [{"Ref": topic_id}]


def test_the_serve_alarms_are_created_once_the_rayservice_is_ready(default_system, promql_alarms):
    # Before that, no Serve controller reports: the not-Ready alarm would fire during a first deploy.
    serving = default_system.serving.to_json()["Resources"]
    (gate_id,) = [k for k, r in serving.items() if r["Type"] == "Custom::RayServiceReady"]
    for logical_id in promql_alarms:
        assert gate_id in serving[logical_id]["DependsOn"]


def test_cloudwatch_may_publish_each_serve_alarm_and_no_other(deployment):
    serving = stack(deployment, "serving")
    topic_id, _ = only(deployment, "serving", "AWS::SNS::Topic")
    _, policy = only(deployment, "serving", "AWS::SNS::TopicPolicy")
    document = deployment.resolve(serving, policy["Properties"]["PolicyDocument"])
    topic = deployment.ref(serving, topic_id)
    alarms = [k for k, a in deployment.resources(serving, "AWS::CloudWatch::Alarm").items()
              if "EvaluationCriteria" in a["Properties"]]

    def publish(alarm: str, account: str = ACCOUNT) -> Request:
        return Request(service("cloudwatch.amazonaws.com"), "sns:Publish", topic, {
            "aws:SourceAccount": account, "aws:SourceArn": alarm, "aws:SecureTransport": "true"})

    for alarm_id in alarms:
        arn = deployment.get_att(serving, alarm_id, "Arn")
        assert decide(publish(arn), resource_policy=document, resource_account=ACCOUNT)
        assert not decide(publish(arn, OTHER_ACCOUNT), resource_policy=document, resource_account=ACCOUNT)
    other = f"arn:aws:cloudwatch:us-east-2:{ACCOUNT}:alarm:someone-elses-alarm"
    assert not decide(publish(other), resource_policy=document, resource_account=ACCOUNT)


def graph_function(deployment) -> tuple[str, dict[str, Any]]:
    return only(deployment, "serving", "AWS::Lambda::Function", Handler="index.render")


def dashboard_widgets(deployment) -> list[dict[str, Any]]:
    _, dashboard = only(deployment, "serving", "AWS::CloudWatch::Dashboard")
    return json.loads(deployment.resolve(stack(deployment, "serving"), dashboard["Properties"]["DashboardBody"]))[
        "widgets"]


def test_the_dashboard_graphs_every_serve_series_from_its_promql_beside_the_alarms(deployment, promql_alarms):
    serving = stack(deployment, "serving")
    function_id, _ = graph_function(deployment)
    widgets = dashboard_widgets(deployment)
    graphs = [w for w in widgets if w["type"] == "custom"]
    # One custom widget per panel, titled as the panel, its query and unit in the params,
    # drawn by the graph function and redrawn when the range, the size or the data change.
    assert [(w["properties"]["title"], w["properties"]["params"]) for w in graphs] == [
        (p.title, {"query": p.query, "unit": p.unit}) for p in ServeQueries(selector=SELECTOR).graphs()
    ]
    for widget in graphs:
        assert widget["properties"]["endpoint"] == deployment.get_att(serving, function_id, "Arn")
        assert widget["properties"]["updateOn"] == {"refresh": True, "resize": True, "timeRange": True}
    assert "ray_serve_llm_generated_tokens_total" in graphs[-1]["properties"]["params"]["query"]
    (alarm_status,) = [w for w in widgets if w["type"] == "alarm"]
    assert sorted(alarm_status["properties"]["alarms"]) == sorted(
        deployment.get_att(serving, alarm_id, "Arn") for alarm_id in promql_alarms)
    # The PromQL is graphed, no longer printed.
    assert not [w for w in widgets if w["type"] == "text"]


def test_the_graph_function_runs_the_widget_handler_with_exactly_the_two_query_actions(default_system, deployment):
    _, function = graph_function(deployment)
    properties = function["Properties"]
    assert properties["Runtime"] == PYTHON_RUNTIME.name and "VpcConfig" not in properties
    # No endpoint set: the region's CloudWatch monitoring host.
    assert "PROMQL_ENDPOINT" not in properties["Environment"]["Variables"]
    role_id = logical_id_of(properties["Role"])
    (policy,) = default_system.serving.find_resources(
        "AWS::IAM::Policy", {"Properties": {"Roles": [{"Ref": role_id}]}}).values()
    assert policy["Properties"]["PolicyDocument"]["Statement"] == [
        {"Action": list(QUERY_ACTIONS), "Effect": "Allow", "Resource": "*"}]
    assert set(QUERY_ACTIONS) == {"cloudwatch:GetMetricData", "cloudwatch:ListMetrics"}
    log_group = logical_id_of(properties["LoggingConfig"]["LogGroup"])
    assert default_system.serving.to_json()["Resources"][log_group]["Properties"]["RetentionInDays"] == 30


def test_the_graph_function_may_call_what_query_metrics_needs_and_nothing_more(deployment):
    serving = stack(deployment, "serving")
    _, function = graph_function(deployment)
    role_id = logical_id_of(function["Properties"]["Role"])
    assert assume(deployment, "serving", role_id, "lambda.amazonaws.com", "sts:AssumeRole")
    assert not assume(deployment, "serving", role_id, "events.amazonaws.com", "sts:AssumeRole")
    principal = role(deployment.get_att(serving, role_id, "Arn"))
    identity = deployment.role_policies(serving, role_id)

    def may(action: str) -> bool:
        return bool(decide(Request(principal, action, "*"), identity_policies=identity, resource_account=ACCOUNT))

    assert may("cloudwatch:GetMetricData") and may("cloudwatch:ListMetrics")
    for action in ("cloudwatch:PutMetricData", "cloudwatch:DeleteAlarms", "cloudwatch:PutDashboard",
                   "secretsmanager:GetSecretValue"):
        assert not may(action), action


def test_the_dashboards_serve_parts_come_together():
    import aws_cdk as cdk

    from ray_serve_ha.constructs.dashboard import ServingDashboardProps, serving_dashboard

    # Refused before anything is made: the other props are not even looked at.
    props = ServingDashboardProps(name="x", probe=None, alarm=None, replication_group_id="rg",
                                  accelerator_instance_types=["inf2.8xlarge"], serve_queries=ServeQueries())
    with pytest.raises(ValueError, match="serve_alarms, serve_queries and serve_graphs go together"):
        serving_dashboard(cdk.Stack(), "Dashboard", props)


def test_the_panels_cover_what_operators_watch():
    panels = ServeQueries().panels()
    assert set(panels) == {"Requests per second", "4xx per second", "5xx per second", "Latency p50 (ms)",
                           "Latency p99 (ms)", "Ongoing requests", "Queued requests", "Healthy replicas",
                           "Generated tokens per second"}
    assert panels["Healthy replicas"] == f"sum({serve_metrics.HEALTHY_REPLICAS})"


def test_thresholds_are_settings():
    serving = synthesize(serveErrorAlarmPercent="2.5", serveLatencyAlarmMs="12000").serving
    queries = [a["Properties"]["EvaluationCriteria"]["PromQLCriteria"]["Query"]
               for a in serving.find_resources("AWS::CloudWatch::Alarm").values()
               if "EvaluationCriteria" in a["Properties"]]
    assert any(q.endswith(" > 2.5") for q in queries) and any(q.endswith(" > 12000") for q in queries)


@pytest.mark.parametrize("key", ["serveErrorAlarmPercent", "serveLatencyAlarmMs"])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_non_positive_threshold_is_one_message(key, value):
    with pytest.raises(SettingsError) as refused:
        Settings.from_context(context(**{key: value}))
    message = str(refused.value)
    assert key in message and value in message and message.count("\n") <= 2
