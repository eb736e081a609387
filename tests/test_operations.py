"""Operations in the serving stack: the readiness gate, the availability probe, its alarm
and dashboard, and the outputs that tell users the next command."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from tests.conftest import synthesize
from tests.crd_schemas import schema_errors


@pytest.fixture(scope="module")
def serving(default_system):
    return default_system.serving


def only(template, resource_type: str, props: dict | None = None) -> tuple[str, dict]:
    found = template.find_resources(resource_type, {"Properties": props} if props else None)
    assert len(found) == 1, found.keys()
    return next(iter(found.items()))


def test_readiness_gate_waits_for_the_rayservice_with_the_configured_timeout(serving):
    _, resource = only(serving, "Custom::RayServiceReady")
    properties = resource["Properties"]
    assert (properties["Namespace"], properties["RayServiceName"], properties["TimeoutSeconds"]) == (
        "ray-serving", "ray-serve-llm", "3240"
    )
    assert {"ClusterName", "Endpoint", "CertificateAuthority"} <= set(properties)
    # The Provider's waiter retries every 30 s for the whole timeout: 55 min / 30 s.
    _, machine = only(serving, "AWS::StepFunctions::StateMachine")
    definition = json.dumps(machine["Properties"]["DefinitionString"])
    assert '\\"IntervalSeconds\\":30' in definition and '\\"MaxAttempts\\":110' in definition
    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"


def test_readiness_timeout_follows_the_setting():
    template = synthesize(readinessTimeoutMinutes="30").serving
    _, resource = only(template, "Custom::RayServiceReady")
    # 60 s short of the Provider's total timeout, so the handler's own message wins.
    assert resource["Properties"]["TimeoutSeconds"] == "1740"


def test_readiness_gate_runs_in_the_vpc_on_the_lambda_runtime_without_bundling(serving):
    functions = serving.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": Match.string_like_regexp(r"^index\.(on_event|is_complete)$")}}
    )
    assert len(functions) == 2
    for function in functions.values():
        assert function["Properties"]["Runtime"] == "python3.14"
        assert function["Properties"]["VpcConfig"]["SubnetIds"]


def test_readiness_role_may_only_read_in_the_serving_namespace(serving):
    handler_id = next(iter(serving.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "index.is_complete"}})))
    role_ref = serving.find_resources("AWS::Lambda::Function")[handler_id]["Properties"]["Role"]
    _, entry = only(serving, "AWS::EKS::AccessEntry", {"PrincipalArn": role_ref})
    assert entry["Properties"]["AccessPolicies"] == [{
        "AccessScope": {"Namespaces": ["ray-serving"], "Type": "namespace"},
        "PolicyArn": {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"},
                                        ":eks::aws:cluster-access-policy/AmazonEKSViewPolicy"]]},
    }]
    # The view policy does not cover KubeRay's kinds: a group bound to a namespaced Role does.
    assert entry["Properties"]["KubernetesGroups"] == ["ray-serve-ha.dev:rayservice-readers"]
    manifests = [json.loads(r["Properties"]["Manifest"])
                 for k, r in serving.find_resources("Custom::AWSCDK-EKS-KubernetesResource").items()
                 if k.startswith("ReadinessRbac")]
    (objects,) = manifests
    role, binding = objects
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "ray-serving"
    assert role["rules"] == [
        {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    ]
    assert binding["subjects"][0]["name"] == "ray-serve-ha.dev:rayservice-readers"
    for obj in objects:
        assert schema_errors(obj) == []


def test_probe_runs_every_minute_against_the_internal_load_balancer(serving):
    probe_id, probe = only(serving, "AWS::Lambda::Function", {"Handler": "index.handler"})
    environment = probe["Properties"]["Environment"]["Variables"]
    assert environment["METRIC_NAMESPACE"] == "RayServeHA"
    assert environment["SERVICE_NAME"] == "ray-serve-ha/ray-serve-llm"
    assert "ServeEndpoint" in json.dumps(environment["SERVE_URL"])
    _, rule = only(serving, "AWS::Events::Rule")
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [probe_id, "Arn"]}
    _, lookup = only(serving, "Custom::AWSCDK-EKS-KubernetesObjectValue")
    assert lookup["Properties"]["ObjectName"] == "ray-serve-llm-serve-svc"
    assert lookup["Properties"]["JsonPath"] == ".status.loadBalancer.ingress[0].hostname"


def test_probe_may_publish_only_its_own_metrics(serving):
    serving.has_resource_properties("AWS::IAM::Policy", {"PolicyDocument": {"Statement": Match.array_with([{
        "Action": "cloudwatch:PutMetricData",
        "Condition": {"StringEquals": {"cloudwatch:namespace": "RayServeHA"}},
        "Effect": "Allow",
        "Resource": "*",
    }])}})


def test_alarm_fires_below_the_slo_or_when_the_probe_goes_silent(serving):
    _, alarm = only(serving, "AWS::CloudWatch::Alarm")
    properties = alarm["Properties"]
    assert (properties["Namespace"], properties["MetricName"], properties["Threshold"]) == (
        "RayServeHA", "Availability", 99
    )
    assert properties["ComparisonOperator"] == "LessThanThreshold"
    assert (properties["EvaluationPeriods"], properties["DatapointsToAlarm"]) == (5, 5)
    assert properties["TreatMissingData"] == "breaching"
    topic_id, _ = only(serving, "AWS::SNS::Topic")
    assert properties["AlarmActions"] == [{"Ref": topic_id}]


def test_alarm_email_subscribes_to_the_topic():
    template = synthesize(alarmEmail="oncall@example.com", availabilitySloPercent="99.5").serving
    template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "oncall@example.com"})
    template.has_resource_properties("AWS::CloudWatch::Alarm", {"Threshold": 99.5})


def test_dashboard_shows_the_probe_the_gcs_store_and_the_accelerator_nodes(serving):
    _, dashboard = only(serving, "AWS::CloudWatch::Dashboard")
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for needle in ("Availability", "Latency", "FailedRequests", "AWS/ElastiCache", "EngineCPUUtilization",
                   "ReplicationLag", "AWS/EC2", "inf2.8xlarge"):
        assert needle in body, needle


def test_outputs_tell_the_next_commands(serving):
    outputs = serving.to_json()["Outputs"]
    texts = {key: json.dumps(value["Value"]) for key, value in outputs.items()}
    assert "aws eks update-kubeconfig --name ray-serve-ha --region" in texts["UpdateKubeconfig"]
    assert texts["ChatUiPortForward"] == '"kubectl -n ray-serving port-forward svc/gradio 7860:7860"'
    assert texts["RayDashboardPortForward"] == '"kubectl -n ray-serving port-forward svc/ray-serve-llm-head-svc 8265:8265"'
    assert texts["ApiPortForward"] == '"kubectl -n ray-serving port-forward svc/ray-serve-llm-serve-svc 8000:8000"'
    assert "python -m local.drill --backend kubernetes --url http://127.0.0.1:8000" in texts["HaDrillCommand"]
    assert "ServeEndpoint" in texts["ServeApiUrl"]
    assert "cloudwatch" in texts["DashboardUrl"]


def test_ui_is_applied_after_the_rayservice_is_ready(serving):
    readiness_id, _ = only(serving, "Custom::RayServiceReady")
    (gradio,) = [r for k, r in serving.find_resources("Custom::AWSCDK-EKS-KubernetesResource").items()
                 if k.startswith("GradioChart")]
    assert readiness_id in gradio["DependsOn"]
