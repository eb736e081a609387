"""Operations in the serving stack: the readiness gate, the availability probe, its alarm
and dashboard, and the outputs that tell users the next command."""

from __future__ import annotations

import json
import re

import pytest
from aws_cdk.assertions import Match

from ray_serve_ha.constructs.readiness import READINESS_TIMEOUT_MAX_MINUTES
from tests.conftest import ROOT, synthesize
from tests.crd_schemas import schema_errors


@pytest.fixture(scope="module")
def serving(default_system):
    return default_system.serving


def only(template, resource_type: str, props: dict | None = None) -> tuple[str, dict]:
    found = template.find_resources(resource_type, {"Properties": props} if props else None)
    assert len(found) == 1, found.keys()
    return next(iter(found.items()))


@pytest.fixture(scope="module")
def changed():
    """Another model (one the models table lacks, with its size) and a shorter readiness timeout."""
    return synthesize(
        modelId="mistralai/Mistral-7B-Instruct-v0.3", modelWeightsGb=14.5, readinessTimeoutMinutes="30"
    ).serving


def waiter_seconds(template) -> int:
    """How long the Provider's waiter polls: interval × attempts of its state machine."""
    _, machine = only(template, "AWS::StepFunctions::StateMachine")
    definition = json.dumps(machine["Properties"]["DefinitionString"])
    interval = int(re.search(r'IntervalSeconds\\":(\d+)', definition).group(1))
    attempts = int(re.search(r'MaxAttempts\\":(\d+)', definition).group(1))
    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"
    return interval * attempts


def test_readiness_gate_waits_for_the_rayservice_with_the_configured_timeout(serving):
    _, resource = only(serving, "Custom::RayServiceReady")
    properties = resource["Properties"]
    assert (properties["Namespace"], properties["RayServiceName"]) == ("ray-serving", "ray-serve-llm")
    assert {"ClusterName", "Endpoint", "CertificateAuthority"} <= set(properties)
    # The default is the longest wait CloudFormation allows: the Provider's waiter polls
    # every 30 s for the whole timeout, the handler gives up 60 s earlier with its message.
    assert waiter_seconds(serving) == READINESS_TIMEOUT_MAX_MINUTES * 60
    assert properties["TimeoutSeconds"] == str(READINESS_TIMEOUT_MAX_MINUTES * 60 - 60)


def test_the_longest_readiness_wait_fits_cloudformations_custom_resource_limit(serving):
    # CloudFormation fails a custom resource after ServiceTimeout (at most 3,600 s) whatever
    # the Provider would still do: the whole wait, and a margin for the start, fit in it.
    _, resource = only(serving, "Custom::RayServiceReady")
    assert resource["Properties"]["ServiceTimeout"] == "3600"
    assert waiter_seconds(serving) + 5 * 60 <= 3600


def test_readiness_timeout_follows_the_setting(changed):
    _, resource = only(changed, "Custom::RayServiceReady")
    assert waiter_seconds(changed) == 30 * 60
    # 60 s short of the Provider's total timeout, so the handler's own message wins.
    assert resource["Properties"]["TimeoutSeconds"] == "1740"


def intrinsics(value) -> list[str]:
    """Every CloudFormation intrinsic (a dict other than Fn::Join) inside a property, as text."""
    if isinstance(value, list):
        return [found for item in value for found in intrinsics(item)]
    if isinstance(value, dict):
        if "Fn::Join" in value:
            return intrinsics(value["Fn::Join"][1])
        return [json.dumps(value, sort_keys=True)]
    return []


def test_readiness_gate_sees_every_deploy_time_value_of_the_rayservice(serving):
    # Images, the Redis endpoint: when CloudFormation resolves any of them to something new,
    # the RayService manifest changes and so do the gate's properties (an Update: it waits
    # again for the new spec).
    (manifest,) = [r["Properties"]["Manifest"] for k, r in
                   serving.find_resources("Custom::AWSCDK-EKS-KubernetesResource").items()
                   if k.startswith("RayserviceChart")]
    _, resource = only(serving, "Custom::RayServiceReady")
    in_manifest = set(intrinsics(manifest))
    assert any("container-assets" in item for item in in_manifest)  # the Ray Serve image
    assert in_manifest <= set(intrinsics(resource["Properties"]["DeployTimeValues"]))


def test_readiness_gate_runs_again_when_the_rayservice_spec_changes(serving, changed):
    def spec_hash(template) -> str:
        return only(template, "Custom::RayServiceReady")[1]["Properties"]["RayServiceSpecHash"]

    assert re.fullmatch(r"[0-9a-f]{64}", spec_hash(serving))
    # Another model changes the serve config in the RayService: a new hash, an Update.
    assert spec_hash(changed) != spec_hash(serving)
    # The same settings give the same hash (token names do not leak into it): no Update.
    assert spec_hash(synthesize().serving) == spec_hash(serving)


def test_readiness_gate_runs_in_the_vpc_on_the_lambda_runtime_without_bundling(serving):
    functions = serving.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Handler": Match.string_like_regexp(r"^index\.(on_event|is_complete)$")}},
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
        {"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["list"]},
    ]
    assert binding["subjects"][0]["name"] == "ray-serve-ha.dev:rayservice-readers"
    for obj in objects:
        assert schema_errors(obj) == []


def test_probe_runs_every_minute_against_the_internal_load_balancer(serving):
    probe_id, probe = only(serving, "AWS::Lambda::Function", {"Handler": "index.handler", "Runtime": "python3.14"})
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
    _, alarm = only(serving, "AWS::CloudWatch::Alarm", {"MetricName": "Availability"})
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
    assert (
        texts["RayDashboardPortForward"] == '"kubectl -n ray-serving port-forward svc/ray-serve-llm-head-svc 8265:8265"'
    )
    assert texts["ApiPortForward"] == '"kubectl -n ray-serving port-forward svc/ray-serve-llm-serve-svc 8000:8000"'
    assert "python -m local.drill --backend kubernetes --url http://127.0.0.1:8000" in texts["HaDrillCommand"]
    assert "ServeEndpoint" in texts["ServeApiUrl"]
    assert "cloudwatch" in texts["DashboardUrl"]


def test_ui_is_applied_after_the_rayservice_is_ready(serving):
    readiness_id, _ = only(serving, "Custom::RayServiceReady")
    (gradio,) = [r for k, r in serving.find_resources("Custom::AWSCDK-EKS-KubernetesResource").items()
                 if k.startswith("GradioChart")]
    assert readiness_id in gradio["DependsOn"]


def describe_peer(rule: dict) -> str:
    """An egress rule's destination in words: the cluster SG, the VPC CIDR or anywhere."""
    if "DestinationSecurityGroupId" in rule:
        return (
            "cluster-sg" if "ClusterSecurityGroupId" in json.dumps(rule["DestinationSecurityGroupId"]) else "other-sg"
        )
    if rule.get("CidrIp") == "0.0.0.0/0":
        return "anywhere"
    return "vpc-cidr" if "CidrBlock" in json.dumps(rule["CidrIp"]) else json.dumps(rule["CidrIp"])


def helper_groups(template) -> dict[str, list[str]]:
    """Helper (readiness handlers, probe, drill) -> the security groups it runs in."""
    found = {}
    for function in template.find_resources("AWS::Lambda::Function").values():
        handler = function["Properties"].get("Handler", "")
        if function["Properties"].get("Runtime") == "python3.14" and handler in (
            "index.on_event", "index.is_complete", "index.handler"
        ):
            found[handler] = function["Properties"]["VpcConfig"]["SecurityGroupIds"]
    (project,) = template.find_resources("AWS::CodeBuild::Project").values()
    found["drill"] = project["Properties"]["VpcConfig"]["SecurityGroupIds"]
    return found


def test_helpers_run_in_groups_of_their_own_with_only_the_egress_they_need(serving):
    groups = serving.find_resources("AWS::EC2::SecurityGroup")
    reach = {}
    for helper, ids in helper_groups(serving).items():
        (group,) = ids
        # A group of this stack, not the cluster security group (which opens every node,
        # pod, kubelet and Redis to its members).
        assert "ClusterSecurityGroupId" not in json.dumps(group), helper
        properties = groups[group["Fn::GetAtt"][0]]["Properties"]
        assert "SecurityGroupIngress" not in properties
        reach[helper] = sorted(
            (describe_peer(r), r["FromPort"], r["ToPort"]) for r in properties["SecurityGroupEgress"]
        )
    # The gate's two handlers share one group: the API endpoint, and for its API check the
    # serve load balancer and Secrets Manager (its key).
    assert reach == {
        "index.on_event": [("anywhere", 443, 443), ("cluster-sg", 443, 443), ("vpc-cidr", 8000, 8000)],
        "index.is_complete": [("anywhere", 443, 443), ("cluster-sg", 443, 443), ("vpc-cidr", 8000, 8000)],
        "index.handler": [("anywhere", 443, 443), ("vpc-cidr", 8000, 8000)],
        "drill": [("anywhere", 443, 443), ("cluster-sg", 443, 443), ("vpc-cidr", 8000, 8000)],
    }
    # The API endpoint (cluster security group) admits exactly the helpers that call it.
    admitted = {
        rule["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0]
        for rule in serving.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if "ClusterSecurityGroupId" in json.dumps(rule["Properties"]["GroupId"])
        and (rule["Properties"]["FromPort"], rule["Properties"]["ToPort"]) == (443, 443)
    }
    callers = helper_groups(serving)
    assert admitted == {callers["index.is_complete"][0]["Fn::GetAtt"][0], callers["drill"][0]["Fn::GetAtt"][0]}


def test_cloudwatch_may_use_the_topic_key_only_for_this_accounts_alarms(serving):
    (key,) = [k for k in serving.find_resources("AWS::KMS::Key").values()
              if "cloudwatch.amazonaws.com" in json.dumps(k)]
    (statement,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                    if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        "ArnLike": {"aws:SourceArn": {"Fn::Join": ["", [
            "arn:", {"Ref": "AWS::Partition"}, ":cloudwatch:", {"Ref": "AWS::Region"}, ":",
            {"Ref": "AWS::AccountId"}, ":alarm:*"]]}},
    }
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]


def test_teardown_waits_for_the_rayservice_leftovers_before_secrets_and_access_go(serving):
    # CloudFormation deletes in reverse dependency order: the RayService manifest first,
    # then the teardown wait, then the password Secret its Redis cleanup Job reads, and only
    # after the wait the gate's own access (entry, RBAC, the API endpoint's ingress rule).
    resources = serving.to_json()["Resources"]
    gone_id, gone = only(serving, "Custom::RayServiceGone")
    (rayservice_id,) = [k for k in resources if k.startswith("RayserviceChart")]
    (secrets_id,) = [k for k in resources if k.startswith("SecretsChart")]
    (ingress_id,) = [k for k, r in resources.items() if r["Type"] == "AWS::EC2::SecurityGroupIngress"
                     and k.startswith("ReadinessAccess")]
    (entry_id,) = [k for k in resources if k.startswith("ReadinessViewAccess")]
    (rbac_id,) = [k for k in resources if k.startswith("ReadinessRbac")]
    assert gone_id in resources[rayservice_id]["DependsOn"]
    assert {secrets_id, ingress_id, entry_id, rbac_id} <= set(gone["DependsOn"])
    assert gone["Properties"]["Namespace"] == "ray-serving"
    assert gone["Properties"]["ServiceTimeout"] == "3600"
    # It may list the clusters it waits for.
    (rbac,) = [json.loads(r["Properties"]["Manifest"]) for k, r in resources.items() if k == rbac_id]
    assert {"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["list"]} in rbac[0]["rules"]


def test_readme_names_everything_destroy_leaves_behind(default_system):
    # Every resource a template keeps on delete is of a kind the teardown list (docs/operating.md) names.
    retained = {
        resource["Type"]
        for template in (
            default_system.network,
            default_system.cluster,
            default_system.gcs_store,
            default_system.serving,
        )
        for resource in template.to_json()["Resources"].values()
        if resource.get("DeletionPolicy") == "Retain"
    }
    assert retained == {"AWS::KMS::Key", "AWS::Logs::LogGroup"}
    page = (ROOT / "docs" / "operating.md").read_text()
    teardown = page[page.index("What `cdk destroy --all` leaves"):page.index("### Delivery with CDK Pipelines")]
    for words in ("KMS keys", "log groups", "VPC flow log", "kubectl", "Provider framework"):
        assert words in teardown, words


def test_handler_docstrings_name_the_runtime_they_are_deployed_on(serving):
    from ray_serve_ha.constructs.lambda_code import HANDLERS, PYTHON_RUNTIME

    deployed = {f["Properties"]["Runtime"] for f in serving.find_resources("AWS::Lambda::Function").values()
                if f["Properties"].get("Handler", "").startswith("index.") and "python" in f["Properties"]["Runtime"]}
    assert deployed == {PYTHON_RUNTIME.name}
    version = PYTHON_RUNTIME.name.removeprefix("python")
    for folder in ("rayservice_ready", "serve_probe", "promql_widget"):
        doc = (HANDLERS / folder / "index.py").read_text().split('"""')[1]
        assert f"Python {version} runtime" in doc, folder
        assert not re.search(r"Python 3\.\d+ runtime", doc.replace(f"Python {version} runtime", "")), folder
