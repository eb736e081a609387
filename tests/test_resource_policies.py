"""The requests one AWS service must get through to another, evaluated against the
synthesized policies (tests/iam_policy.py): each must be allowed, and its near misses
(another account, another alarm, plain HTTP, another prefix, another secret, another
project) denied.

- CloudWatch (the availability alarm) -> the alarm topic's policy and its KMS key's policy;
- EKS Pod Identity -> the worker role (trust), the worker role -> the compiled-artifact
  bucket (bucket policy and role policy);
- EKS Pod Identity -> the External Secrets role, that role -> the Redis AUTH token and the
  Hugging Face token secrets;
- CodeBuild -> the drill's role, that role -> its source asset, its KMS key, the cluster;
  the pipeline's drill step -> the drill project;
- Lambda -> the probe's and the readiness gate's roles; EventBridge -> the probe function;
  the probe -> CloudWatch metrics in its namespace only; the readiness gate's role -> the
  cluster's Kubernetes API (an EKS access entry, scoped to the serving namespace).

Each policy is read from the templates and resolved in one made-up account and region.
Not evaluated: what AWS adds beyond these documents (SCPs, permission boundaries, session
policies, the bootstrap bucket's own policy), and the AWS managed policies (logs, VPC
network interfaces) the Lambda roles carry."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from ray_serve_ha.constructs.artifact_cache import ARTIFACTS_PREFIX
from ray_serve_ha.constructs.availability import METRIC_NAMESPACE
from stacks.drill_runner import ha_drill_project_name
from stacks.pipeline import PipelineStack
from stacks.settings import Settings
from tests.conftest import context
from tests.deployed import ACCOUNT, OTHER_ACCOUNT, REGION, deployment_of, logical_id_of, only, stack
from tests.iam_policy import Decision, Deployment, Request, decide, role, service
from tests.test_pipeline import PIPELINE

TLS = {"aws:SecureTransport": "true"}


@pytest.fixture(scope="module")
def deployment(default_system) -> Deployment:
    return deployment_of(default_system)


# ---------------------------------------------------------------------------------------
# The availability alarm -> its SNS topic and the topic's KMS key
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alarm_path(deployment) -> dict[str, Any]:
    serving = stack(deployment, "serving")
    alarm_id, _ = only(deployment, "serving", "AWS::CloudWatch::Alarm", MetricName="Availability")
    topic_id, topic = only(deployment, "serving", "AWS::SNS::Topic")
    _, topic_policy = only(deployment, "serving", "AWS::SNS::TopicPolicy")
    key_id = logical_id_of(topic["Properties"]["KmsMasterKeyId"])
    _, key = only(deployment, "serving", "AWS::KMS::Key", Description="Ray Serve availability alarm topic")
    alarm = deployment.resources(serving, "AWS::CloudWatch::Alarm")[alarm_id]["Properties"]
    topic_arn = deployment.ref(serving, topic_id)
    assert [deployment.resolve(serving, a) for a in alarm["AlarmActions"]] == [topic_arn]
    assert deployment.resolve(serving, topic_policy["Properties"]["Topics"]) == [topic_arn]
    return {
        "alarm": deployment.get_att(serving, alarm_id, "Arn"),
        "topic": topic_arn,
        "topic_policy": deployment.resolve(serving, topic_policy["Properties"]["PolicyDocument"]),
        "key": deployment.get_att(serving, key_id, "Arn"),
        "key_policy": deployment.resolve(serving, key["Properties"]["KeyPolicy"]),
    }


def publish(path: dict[str, Any], *, account: str = ACCOUNT, alarm: str | None = None,
            secure: bool = True) -> Request:
    """CloudWatch publishing an alarm's state change, as it calls SNS."""
    return Request(service("cloudwatch.amazonaws.com"), "sns:Publish", path["topic"], {
        "aws:SourceAccount": account,
        "aws:SourceArn": alarm or path["alarm"],
        "aws:SecureTransport": str(secure).lower(),
    })


def test_cloudwatch_may_publish_the_alarm_to_its_topic(alarm_path):
    assert (decide(publish(alarm_path), resource_policy=alarm_path["topic_policy"], resource_account=ACCOUNT))


@pytest.mark.parametrize("near_miss", ["another account", "another alarm", "plain HTTP"])
def test_the_topic_refuses_anything_else(alarm_path, near_miss):
    request = {
        "another account": publish(alarm_path, account=OTHER_ACCOUNT),
        "another alarm": publish(alarm_path, alarm=alarm_path["alarm"].rsplit(":", 1)[0] + ":someone-elses-alarm"),
        "plain HTTP": publish(alarm_path, secure=False),
    }[near_miss]
    assert not (decide(request, resource_policy=alarm_path["topic_policy"], resource_account=ACCOUNT))


def test_without_its_allow_the_topic_refuses_the_alarm(alarm_path):
    # The policy `enforce_ssl` alone gives the topic: the TLS Deny. CloudWatch's publish is
    # refused as the alarm history reports it: no resource-based policy allows it.
    deny_only = {**alarm_path["topic_policy"],
                 "Statement": [s for s in alarm_path["topic_policy"]["Statement"] if s["Effect"] == "Deny"]}
    decision = decide(publish(alarm_path), resource_policy=deny_only, resource_account=ACCOUNT)
    assert not decision.allowed and decision.reason == "no resource-based policy allows the service"


@pytest.mark.parametrize("action", ["kms:GenerateDataKey", "kms:Decrypt"])
def test_cloudwatch_may_use_the_topic_key_for_this_accounts_alarms(alarm_path, action):
    def use(account: str) -> Request:
        return Request(service("cloudwatch.amazonaws.com"), action, alarm_path["key"],
                       {"aws:SourceAccount": account, "aws:SourceArn": alarm_path["alarm"].replace(ACCOUNT, account)})

    assert (decide(use(ACCOUNT), resource_policy=alarm_path["key_policy"], resource_account=ACCOUNT,
                          key_policy=True))
    assert not (decide(use(OTHER_ACCOUNT), resource_policy=alarm_path["key_policy"],
                              resource_account=ACCOUNT, key_policy=True))


def test_cloudwatch_may_not_manage_the_topic_key(alarm_path):
    request = Request(service("cloudwatch.amazonaws.com"), "kms:ScheduleKeyDeletion", alarm_path["key"],
                      {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": alarm_path["alarm"]})
    assert not (decide(request, resource_policy=alarm_path["key_policy"], resource_account=ACCOUNT,
                              key_policy=True))


# ---------------------------------------------------------------------------------------
# Pod Identity -> the Ray worker role -> the compiled-artifact bucket
# ---------------------------------------------------------------------------------------


def trust(deployment: Deployment, stack_suffix: str, role_id: str) -> dict[str, Any]:
    name = stack(deployment, stack_suffix)
    return deployment.resolve(name, deployment.resources(name, "AWS::IAM::Role")[role_id]["Properties"]
                              ["AssumeRolePolicyDocument"])


def assume(deployment: Deployment, stack_suffix: str, role_id: str, principal: str, action: str) -> Decision:
    arn = deployment.get_att(stack(deployment, stack_suffix), role_id, "Arn")
    return (decide(Request(service(principal), action, arn),
                          resource_policy=trust(deployment, stack_suffix, role_id), resource_account=ACCOUNT))


@pytest.fixture(scope="module")
def artifact_access(deployment) -> dict[str, Any]:
    serving = stack(deployment, "serving")
    _, association = only(deployment, "serving", "AWS::EKS::PodIdentityAssociation", ServiceAccount="ray-worker")
    role_id = logical_id_of(association["Properties"]["RoleArn"])
    bucket_id, _ = only(deployment, "serving", "AWS::S3::Bucket")
    _, bucket_policy = only(deployment, "serving", "AWS::S3::BucketPolicy", Bucket={"Ref": bucket_id})
    return {
        "association": association["Properties"],
        "role_id": role_id,
        "role": role(deployment.get_att(serving, role_id, "Arn")),
        "identity": deployment.role_policies(serving, role_id),
        "bucket": deployment.get_att(serving, bucket_id, "Arn"),
        "bucket_policy": deployment.resolve(serving, bucket_policy["Properties"]["PolicyDocument"]),
    }


def test_pod_identity_may_assume_the_worker_role_for_the_serving_namespace(deployment, artifact_access):
    assert artifact_access["association"]["Namespace"] == "ray-serving"
    for action in ("sts:AssumeRole", "sts:TagSession"):
        assert assume(deployment, "serving", artifact_access["role_id"], "pods.eks.amazonaws.com", action)
    assert not assume(deployment, "serving", artifact_access["role_id"], "lambda.amazonaws.com", "sts:AssumeRole")


def bucket_request(access: dict[str, Any], action: str, key: str | None = None, *, secure: bool = True,
                   prefix: str | None = None) -> Decision:
    resource = f"{access['bucket']}/{key}" if key is not None else access["bucket"]
    context = {"aws:SecureTransport": str(secure).lower(), **({"s3:prefix": prefix} if prefix is not None else {})}
    return decide(Request(access["role"], action, resource, context), identity_policies=access["identity"],
                  resource_policy=access["bucket_policy"], resource_account=ACCOUNT)


FOLDER = f"{ARTIFACTS_PREFIX}/mistralai/Mistral-7B-Instruct-v0.2/tp2-len4096-seqs4-nxdi2.31"


def test_the_worker_role_reads_lists_and_writes_its_prefix(artifact_access):
    assert (bucket_request(artifact_access, "s3:GetObject", f"{FOLDER}/model.pt"))
    assert (bucket_request(artifact_access, "s3:PutObject", f"{FOLDER}/_COMPLETE"))
    assert (bucket_request(artifact_access, "s3:ListBucket", prefix=f"{FOLDER}/"))


@pytest.mark.parametrize("near_miss", ["another prefix", "listing another prefix", "plain HTTP", "delete"])
def test_the_worker_role_gets_nothing_else_from_the_bucket(artifact_access, near_miss):
    decision = {
        "another prefix": bucket_request(artifact_access, "s3:GetObject", "other/model.pt"),
        "listing another prefix": bucket_request(artifact_access, "s3:ListBucket", prefix="other/"),
        "plain HTTP": bucket_request(artifact_access, "s3:GetObject", f"{FOLDER}/model.pt", secure=False),
        "delete": bucket_request(artifact_access, "s3:DeleteObject", f"{FOLDER}/model.pt"),
    }[near_miss]
    assert not decision


# ---------------------------------------------------------------------------------------
# Pod Identity -> the External Secrets role -> the secrets
# ---------------------------------------------------------------------------------------


def test_external_secrets_reads_the_redis_token_and_the_hugging_face_token_only(deployment):
    cluster, gcs_store = stack(deployment, "cluster"), stack(deployment, "gcs-store")
    _, association = only(deployment, "cluster", "AWS::EKS::PodIdentityAssociation", ServiceAccount="external-secrets")
    role_id = logical_id_of(association["Properties"]["RoleArn"])
    for action in ("sts:AssumeRole", "sts:TagSession"):
        assert assume(deployment, "cluster", role_id, "pods.eks.amazonaws.com", action)
    principal = role(deployment.get_att(cluster, role_id, "Arn"))
    identity = deployment.role_policies(cluster, role_id)
    auth_token_id, _ = only(deployment, "gcs-store", "AWS::SecretsManager::Secret")
    hf_name = Settings.from_context(context()).secrets.hugging_face_token_secret_name
    secrets = {
        "Redis AUTH token": deployment.ref(gcs_store, auth_token_id),
        # Secrets Manager appends a dash and six characters to the name you create.
        "Hugging Face token": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{hf_name}-Xy12Zq",
    }
    for name, arn in secrets.items():
        for action in ("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"):
            assert (decide(Request(principal, action, arn), identity_policies=identity,
                                  resource_account=ACCOUNT)), name
    for arn in (f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:someone-else/token-Xy12Zq",
                f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{hf_name}-extra-Xy12Zq"):
        assert not (decide(Request(principal, "secretsmanager:GetSecretValue", arn), identity_policies=identity,
                                  resource_account=ACCOUNT)), arn
    assert not (decide(Request(principal, "secretsmanager:PutSecretValue", secrets["Redis AUTH token"]),
                              identity_policies=identity, resource_account=ACCOUNT))


# ---------------------------------------------------------------------------------------
# The drill's CodeBuild project
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drill(deployment) -> dict[str, Any]:
    serving, cluster = stack(deployment, "serving"), stack(deployment, "cluster")
    name = ha_drill_project_name(Settings.from_context(context()).cluster.name)
    _, project = only(deployment, "serving", "AWS::CodeBuild::Project", Name=name)
    role_id = logical_id_of(project["Properties"]["ServiceRole"])
    key_id = logical_id_of(project["Properties"]["EncryptionKey"])
    cluster_id, _ = only(deployment, "cluster", "AWS::EKS::Cluster")
    return {
        "project": project["Properties"],
        "role_id": role_id,
        "role": role(deployment.get_att(serving, role_id, "Arn")),
        "identity": deployment.role_policies(serving, role_id),
        "key": deployment.get_att(serving, key_id, "Arn"),
        "key_policy": deployment.resolve(serving, deployment.resources(serving, "AWS::KMS::Key")[key_id]
                                          ["Properties"]["KeyPolicy"]),
        "cluster": deployment.get_att(cluster, cluster_id, "Arn"),
        "source": deployment.resolve(serving, project["Properties"]["Source"]["Location"]),
    }


def test_codebuild_may_assume_the_drill_role(deployment, drill):
    assert assume(deployment, "serving", drill["role_id"], "codebuild.amazonaws.com", "sts:AssumeRole")
    assert not assume(deployment, "serving", drill["role_id"], "lambda.amazonaws.com", "sts:AssumeRole")


def test_the_drill_reads_its_source_uses_its_key_and_describes_its_cluster(drill):
    def can(action: str, resource: str, **policy: Any) -> Decision:
        return (decide(Request(drill["role"], action, resource), identity_policies=drill["identity"],
                              resource_account=ACCOUNT, **policy))

    bucket, key = drill["source"].split("/", 1)
    assert can("s3:GetObject", f"arn:aws:s3:::{bucket}/{key}")
    assert can("eks:DescribeCluster", drill["cluster"])
    assert not can("eks:DescribeCluster", drill["cluster"].rsplit("/", 1)[0] + "/another-cluster")
    for action in ("kms:Decrypt", "kms:GenerateDataKey"):
        assert can(action, drill["key"], resource_policy=drill["key_policy"], key_policy=True)
    assert not can("kms:ScheduleKeyDeletion", drill["key"], resource_policy=drill["key_policy"], key_policy=True)


def test_the_drill_key_serves_no_one_else(deployment, drill, alarm_path):
    # The alarm topic's key delegates to IAM too: without an identity grant, no use.
    other = Request(drill["role"], "kms:Decrypt", alarm_path["key"])
    assert not (decide(other, identity_policies=drill["identity"], resource_policy=alarm_path["key_policy"],
                              resource_account=ACCOUNT, key_policy=True))
    foreign = Request(role(f"arn:aws:iam::{OTHER_ACCOUNT}:role/admin"), "kms:Decrypt", drill["key"])
    assert not (decide(foreign, identity_policies=[{"Statement": [
        {"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}], resource_policy=drill["key_policy"],
        resource_account=ACCOUNT, key_policy=True))


@pytest.fixture(scope="module")
def pipeline_stack() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The pipeline stack's template, and its stage's serving and cluster templates (the
    serving stack's policies name the cluster's External Secrets role)."""
    app = cdk.App(context=context(**PIPELINE))
    settings = Settings.from_context(app.node.get_all_context())
    environment = cdk.Environment(account=PIPELINE["account"], region=PIPELINE["region"])
    pipeline = PipelineStack(app, "pipeline", settings=settings, env=environment)
    system = pipeline.stage.system
    return (Template.from_stack(pipeline).to_json(), Template.from_stack(system.serving).to_json(),
            Template.from_stack(system.cluster).to_json())


def test_the_pipeline_drill_step_may_start_the_stages_drill_project_only(pipeline_stack):
    pipeline, serving, cluster = pipeline_stack
    deployment = Deployment({"pipeline": pipeline, "serving": serving, "cluster": cluster},
                            account=PIPELINE["account"], region=PIPELINE["region"])
    (project_id,) = [k for k, r in pipeline["Resources"].items()
                     if r["Type"] == "AWS::CodeBuild::Project" and "start-build" in json.dumps(r)]
    role_id = logical_id_of(pipeline["Resources"][project_id]["Properties"]["ServiceRole"])
    step = role(deployment.get_att("pipeline", role_id, "Arn"))
    identity = deployment.role_policies("pipeline", role_id)
    drill_name = ha_drill_project_name(Settings.from_context(context(**PIPELINE)).cluster.name)
    (drill_id,) = [k for k, r in serving["Resources"].items()
                   if r["Type"] == "AWS::CodeBuild::Project" and r["Properties"].get("Name") == drill_name]
    drill_arn = deployment.get_att("serving", drill_id, "Arn")
    for action in ("codebuild:StartBuild", "codebuild:BatchGetBuilds"):
        assert (decide(Request(step, action, drill_arn), identity_policies=identity,
                              resource_account=PIPELINE["account"]))
    other = drill_arn.rsplit("/", 1)[0] + "/another-project"
    assert not (decide(Request(step, "codebuild:StartBuild", other), identity_policies=identity,
                              resource_account=PIPELINE["account"]))


# ---------------------------------------------------------------------------------------
# The probe and the readiness gate (Lambda)
# ---------------------------------------------------------------------------------------


def test_eventbridge_invokes_the_probe_and_the_probe_writes_its_namespace_only(deployment):
    serving = stack(deployment, "serving")
    function_id = next(k for k, r in deployment.resources(serving, "AWS::Lambda::Function").items()
                       if r["Properties"].get("Environment", {}).get("Variables", {}).get("METRIC_NAMESPACE"))
    function = deployment.resources(serving, "AWS::Lambda::Function")[function_id]["Properties"]
    function_arn = deployment.get_att(serving, function_id, "Arn")
    role_id = logical_id_of(function["Role"])
    assert assume(deployment, "serving", role_id, "lambda.amazonaws.com", "sts:AssumeRole")
    # The function's resource policy: its Lambda permissions, as statements.
    permissions = [deployment.resolve(serving, p["Properties"])
                   for p in deployment.resources(serving, "AWS::Lambda::Permission").values()]
    policy = {"Statement": [
        {"Effect": "Allow", "Principal": {"Service": p["Principal"]}, "Action": p["Action"],
         "Resource": p["FunctionName"], "Condition": {"ArnLike": {"AWS:SourceArn": p["SourceArn"]}}}
        for p in permissions if p["FunctionName"] == function_arn
    ]}
    rule_id, _ = only(deployment, "serving", "AWS::Events::Rule")
    rule_arn = deployment.get_att(serving, rule_id, "Arn")

    def invoke(source_arn: str) -> Decision:
        return (decide(Request(service("events.amazonaws.com"), "lambda:InvokeFunction", function_arn,
                                      {"aws:SourceArn": source_arn}), resource_policy=policy,
                              resource_account=ACCOUNT))

    assert invoke(rule_arn)
    assert not invoke(rule_arn.rsplit("/", 1)[0] + "/another-rule")
    principal = role(deployment.get_att(serving, role_id, "Arn"))
    identity = deployment.role_policies(serving, role_id)

    def put(namespace: str) -> Decision:
        return (decide(Request(principal, "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": namespace}),
                              identity_policies=identity, resource_account=ACCOUNT))

    assert put(METRIC_NAMESPACE)
    assert not put("AWS/EC2")


def test_the_readiness_gate_reads_the_cluster_as_its_own_role_in_the_serving_namespace(deployment):
    # Its Kubernetes reads are authorized by an EKS access entry for the role that runs
    # isComplete (the token is a presigned sts:GetCallerIdentity, which needs no permission).
    serving = stack(deployment, "serving")
    functions = deployment.resources(serving, "AWS::Lambda::Function")
    (is_complete,) = [f["Properties"] for f in functions.values() if f["Properties"]["Handler"] == "index.is_complete"]
    role_id = logical_id_of(is_complete["Role"])
    assert assume(deployment, "serving", role_id, "lambda.amazonaws.com", "sts:AssumeRole")
    entries = [deployment.resolve(serving, e["Properties"])
               for e in deployment.resources(serving, "AWS::EKS::AccessEntry").values()]
    (entry,) = [e for e in entries if e["PrincipalArn"] == deployment.get_att(serving, role_id, "Arn")]
    (access_policy,) = entry["AccessPolicies"]
    assert access_policy["AccessScope"] == {"Type": "namespace", "Namespaces": ["ray-serving"]}
    assert access_policy["PolicyArn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
