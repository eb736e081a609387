"""The constructs an app of its own uses (ray_serve_ha), through the example app that puts
them into an existing cluster: what each builds, a snapshot of each, and the package that
`pip install` makes of the repository."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template
from syrupy.extensions.json import JSONSnapshotExtension

from ray_serve_ha.constructs.availability import DEFAULT_SLO_PERCENT
from ray_serve_ha.constructs.gcs_store_engine import GcsStoreEngine
from tests.conftest import EXISTING_VPC_CONTEXT, EXISTING_VPC_SETTINGS, ROOT, context, normalise_asset_hashes
from tests.crd_schemas import schema_errors
from tests.test_serving import render

sys.path.insert(0, str(ROOT / "examples"))
import existing_cluster

CLUSTER_SECURITY_GROUP = "sg-0123456789abcdef0"
KUBECTL_SERVICE_TOKEN = "arn:aws:lambda:us-east-2:111122223333:function:kubectl-provider-handler"
EXTERNAL_SECRETS_ROLE = "arn:aws:iam::111122223333:role/external-secrets"
EXAMPLE_CONTEXT = {
    **EXISTING_VPC_CONTEXT,
    **EXISTING_VPC_SETTINGS,
    "clusterName": "team-platform",
    "clusterEndpoint": "https://0123456789ABCDEF0123456789ABCDEF.gr7.us-east-2.eks.amazonaws.com",
    "clusterCertificateAuthorityData": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t",
    "clusterSecurityGroupId": CLUSTER_SECURITY_GROUP,
    "kubectlProviderServiceToken": KUBECTL_SERVICE_TOKEN,
    "kubectlProviderRoleArn": "arn:aws:iam::111122223333:role/kubectl-provider",
    "externalSecretsRoleArn": EXTERNAL_SECRETS_ROLE,
    "rayImage": "111122223333.dkr.ecr.us-east-2.amazonaws.com/ray-serve:1",
    "gradioImage": "111122223333.dkr.ecr.us-east-2.amazonaws.com/gradio:1",
}
PRIVATE = ["subnet-0bbb00000000000a2", "subnet-0bbb00000000000b2", "subnet-0bbb00000000000c2"]
CHART_ORDER = ["NamespaceChart", "SecretsChart", "RayserviceChart", "GradioChart"]


@pytest.fixture(scope="module")
def example() -> Template:
    """The example app, synthesized with the feature flags of cdk.json and a cached lookup."""
    app = cdk.App(context=context(**EXAMPLE_CONTEXT))
    return Template.from_stack(existing_cluster.build(app))


def of(template: Template, prefix: str) -> dict:
    """The resources of one construct (its id is the first part of their logical ids)."""
    return {k: v for k, v in template.to_json()["Resources"].items() if k.startswith(prefix)}


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("construct", ["GcsStore", "RayService", "Probe", "Availability"])
def test_snapshot(example, snapshot_json, construct):
    assert normalise_asset_hashes(of(example, construct)) == snapshot_json


def test_the_example_is_about_thirty_lines_of_code():
    source = (ROOT / "examples" / "existing_cluster.py").read_text()
    body = source.split('"""', 2)[2]
    code = [line for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(code) <= 45


# --- GcsStore ----------------------------------------------------------------------------

def test_gcs_store_admits_only_the_given_group_on_the_redis_port(example):
    resources = of(example, "GcsStore")
    ((group_id, group),) = [(k, v) for k, v in resources.items() if v["Type"] == "AWS::EC2::SecurityGroup"]
    assert "SecurityGroupIngress" not in group["Properties"]
    # CDK's "no egress" marker: a rule to 255.255.255.255/32 that matches nothing.
    assert [r["CidrIp"] for r in group["Properties"]["SecurityGroupEgress"]] == ["255.255.255.255/32"]
    # The rule that admits the given group is a resource of its own (the group is imported).
    (ingress,) = [r for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]
    assert ingress["Properties"] == {
        "IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "SourceSecurityGroupId": CLUSTER_SECURITY_GROUP,
        "GroupId": {"Fn::GetAtt": [group_id, "GroupId"]}, "Description": "Redis (TLS) from Ray pods and nodes",
    }


def test_gcs_store_is_a_tls_multi_az_pair_in_the_private_subnets(example):
    resources = of(example, "GcsStore")
    (store,) = [r for r in resources.values() if r["Type"] == "AWS::ElastiCache::ReplicationGroup"]
    props = store["Properties"]
    defaults = GcsStoreEngine()
    assert (props["Engine"], props["EngineVersion"], props["CacheNodeType"]) == (
        defaults.engine, defaults.engine_version, defaults.node_type
    )
    assert props["NumCacheClusters"] == 2 and props["MultiAZEnabled"] and props["AutomaticFailoverEnabled"]
    assert props["TransitEncryptionMode"] == "required" and props["AtRestEncryptionEnabled"]
    (subnets,) = [r for r in resources.values() if r["Type"] == "AWS::ElastiCache::SubnetGroup"]
    assert subnets["Properties"]["SubnetIds"] == PRIVATE


def test_gcs_store_lets_the_given_role_read_its_auth_token(example):
    (policy,) = [r for r in of(example, "GcsStore").values() if r["Type"] == "AWS::IAM::Policy"]
    assert policy["Properties"]["Roles"] == ["external-secrets"]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert sorted(statement["Action"]) == ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
    assert "GcsStoreAuthToken" in json.dumps(statement["Resource"])


# --- FaultTolerantRayService ----------------------------------------------------------------

def manifests(example) -> dict[str, tuple[str, dict]]:
    found = {}
    for logical_id, resource in of(example, "RayService").items():
        for chart in CHART_ORDER:
            if logical_id.startswith(f"RayService{chart}"):
                found[chart] = (logical_id, resource)
    return found


def test_rayservice_charts_apply_in_order_through_the_given_kubectl_provider(example):
    charts = manifests(example)
    assert sorted(charts) == sorted(CHART_ORDER)
    for before, after in itertools.pairwise(CHART_ORDER):
        assert charts[before][0] in charts[after][1]["DependsOn"]
    for _, resource in charts.values():
        assert resource["Properties"]["ServiceToken"] == KUBECTL_SERVICE_TOKEN
        assert resource["Properties"]["ClusterName"] == "team-platform"


def test_rayservice_objects_are_valid_and_use_the_gcs_store(example):
    charts = manifests(example)
    objects = [o for chart in CHART_ORDER for o in json.loads(render(charts[chart][1]["Properties"]["Manifest"]))]
    errors = {f"{o['kind']}/{o['metadata']['name']}": schema_errors(o) for o in objects}
    assert {name: e for name, e in errors.items() if e} == {}
    manifest = json.dumps(charts["RayserviceChart"][1]["Properties"]["Manifest"])
    assert "GcsStoreReplicationGroup" in manifest and "PrimaryEndPoint.Address" in manifest


def test_readiness_gate_waits_for_the_rayservice_and_reaches_only_the_api_endpoint(example):
    resources = of(example, "RayService")
    (gate_id,) = [k for k, r in resources.items() if r["Type"] == "Custom::RayServiceReady"]
    assert manifests(example)["RayserviceChart"][0] in resources[gate_id]["DependsOn"]
    (_, gradio) = manifests(example)["GradioChart"]
    assert gate_id in gradio["DependsOn"]
    groups = [r for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroup"]
    (gate_group,) = groups
    assert gate_group["Properties"]["SecurityGroupEgress"] == [{
        "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "DestinationSecurityGroupId": CLUSTER_SECURITY_GROUP,
        "Description": "the cluster's private API endpoint",
    }]
    (ingress,) = [r for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]
    assert ingress["Properties"]["GroupId"] == CLUSTER_SECURITY_GROUP and ingress["Properties"]["FromPort"] == 443
    functions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"
                 and r["Properties"].get("Handler", "").startswith("index.")]
    assert functions and all(f["Properties"]["VpcConfig"]["SubnetIds"] == PRIVATE for f in functions)


# --- ServeAvailabilityProbe and ServeAvailabilityAlarm -------------------------------------

def test_probe_sends_to_the_rayservice_endpoint_every_minute_from_the_private_subnets(example):
    resources = of(example, "Probe")
    (function,) = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables["SERVICE_NAME"] == "team-platform/ray-serve-llm"
    assert "RayServiceServeEndpoint" in json.dumps(variables["SERVE_URL"])
    assert function["Properties"]["VpcConfig"]["SubnetIds"] == PRIVATE
    (rule,) = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"


def test_alarm_defaults_to_the_librarys_slo(example):
    (alarm,) = [r for r in of(example, "Availability").values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert alarm["Properties"]["Threshold"] == DEFAULT_SLO_PERCENT
    assert alarm["Properties"]["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["Properties"]["TreatMissingData"] == "breaching"


# --- the package -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install .` of a copy of every tracked file (setuptools builds inside the source
    tree: a copy keeps the checkout clean), into a folder of its own."""
    work = tmp_path_factory.mktemp("package")
    source, target = work / "source", work / "site"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        check=True, capture_output=True, cwd=work,
    )
    return target


def outside_the_checkout(installed: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Runs Python with only the installed package (and the venv's dependencies) to import
    from: not from the checkout, not with it as the working directory."""
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=installed.parent, check=False, timeout=300,
        env={"PYTHONPATH": str(installed), "PATH": os.environ["PATH"], "HOME": str(installed.parent), **(env or {})},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_pip_installs_the_library_as_the_only_top_level_name(installed):
    names = sorted(p.name for p in installed.iterdir() if not p.name.endswith(".dist-info"))
    assert names == ["ray_serve_ha"]


def test_the_installed_library_finds_its_lambda_sources_and_job_scripts_inside_itself(installed):
    probe = (
        "import ray_serve_ha.constructs.lambda_code as code, ray_serve_ha.charts.batch as batch;"
        "print(code.HANDLERS); print(*sorted(p.name for p in code.HANDLERS.iterdir()));"
        "print(*sorted(batch.job_files()))"
    )
    handlers, folders, job_files = outside_the_checkout(installed, "-c", probe).splitlines()
    assert Path(handlers) == installed / "ray_serve_ha" / "_assets" / "lambda"
    assert folders == "promql_widget rayservice_ready serve_probe"
    assert (Path(handlers) / "rayservice_ready" / "index.py").is_file()
    assert job_files.split() == [
        "job_runner.py", "pytorch_benchmark.py", "ray_serve_ha/charts/job_args.py", "xgboost_benchmark.py",
    ]


def test_the_example_app_synthesizes_from_the_installed_library(installed):
    # The example as a user runs it (`cdk synth --app "python examples/existing_cluster.py"`
    # hands it its context and output folder through these variables).
    out = installed.parent / "example.out"
    outside_the_checkout(installed, str(ROOT / "examples" / "existing_cluster.py"), env={
        "CDK_CONTEXT_JSON": json.dumps(context(**EXAMPLE_CONTEXT)), "CDK_OUTDIR": str(out),
    })
    template = json.loads((out / "RayServeHaParts.template.json").read_text())
    types = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::ElastiCache::ReplicationGroup", "Custom::RayServiceReady", "Custom::AWSCDK-EKS-KubernetesResource",
            "AWS::CloudWatch::Alarm"} <= types
    # The handlers were staged from the installed package: the same code as the checkout's.
    handler_sources = {(p.parent / "index.py").read_text() for p in out.glob("asset.*/index.py")}
    assert {(ROOT / "lambda" / name / "index.py").read_text() for name in ("serve_probe", "rayservice_ready")} <= (
        handler_sources
    )
    assert not list(out.glob("asset.*/__pycache__"))
