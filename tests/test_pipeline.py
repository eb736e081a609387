"""PipelineStack: CDK Pipelines (V2) deploying the serving stage on every commit, with the
HA drill as a post-deploy step that fails the pipeline on any failed request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from app import build_app
from stacks.pipeline import CDK_PIPELINES_CDK_ASSETS
from stacks.settings import Settings, SettingsError
from tests.conftest import context

PIPELINE = {
    "pipeline": True,
    "account": "111122223333",
    "region": "us-east-2",
    "pipelineRepository": "example/ray-serve-ha",
    "pipelineConnectionArn": (
        "arn:aws:codeconnections:us-east-2:111122223333:connection/0b4e7d2a-1111-2222-3333-444455556666"
    ),
}
# cfn-lint findings in what aws-cdk-lib and CDK Pipelines generate, not in this project:
# a DependsOn next to a GetAtt (W3005); Fn::Join with "" in CDK Pipelines' deploy-role ARNs (E3703).
LIBRARY_FINDINGS = {"W3005", "E3703"}


@pytest.fixture(scope="module")
def assembly(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("pipeline")
    app = cdk.App(context=context(**PIPELINE), outdir=str(outdir))
    build_app(app)
    return app, app.synth(), outdir  # synth raises on any unacknowledged cdk-nag finding


@pytest.fixture(scope="module")
def pipeline(assembly) -> Template:
    app, _, _ = assembly
    stack = next(s for s in app.node.children if isinstance(s, cdk.Stack))
    return Template.from_stack(stack)


def test_pipeline_needs_an_environment_a_repository_and_a_connection():
    with pytest.raises(SettingsError) as raised:
        Settings.from_context(context(pipeline="true"))
    assert raised.value.problems == [
        "account: must be set when pipeline=true",
        "region: must be set when pipeline=true",
        "pipelineRepository: must be set when pipeline=true",
        "pipelineConnectionArn: must be set when pipeline=true",
    ]


def test_bad_connection_arn_is_refused():
    with pytest.raises(SettingsError) as raised:
        Settings.from_context(context(**{**PIPELINE, "pipelineConnectionArn": "arn:aws:s3:::bucket"}))
    assert raised.value.problems == [
        "pipelineConnectionArn='arn:aws:s3:::bucket': must be a CodeConnections ARN, "
        "arn:aws:codeconnections:<region>:<account>:connection/<id>",
    ]


def test_pipeline_is_type_v2_sourced_from_the_connection(pipeline):
    pipeline.has_resource_properties("AWS::CodePipeline::Pipeline", {
        "PipelineType": "V2",
        "Stages": Match.array_with([Match.object_like({
            "Name": "Source",
            "Actions": [Match.object_like({
                "ActionTypeId": Match.object_like({"Provider": "CodeStarSourceConnection"}),
                "Configuration": Match.object_like({
                    "ConnectionArn": PIPELINE["pipelineConnectionArn"],
                    "FullRepositoryId": "example/ray-serve-ha",
                    "BranchName": "main",
                }),
            })],
        })]),
    })


def stage_actions(pipeline: Template, name: str) -> list[dict]:
    (resource,) = pipeline.find_resources("AWS::CodePipeline::Pipeline").values()
    (stage,) = [s for s in resource["Properties"]["Stages"] if s["Name"] == name]
    return stage["Actions"]


def test_serving_stage_deploys_every_stack_then_runs_the_drill(pipeline):
    actions = stage_actions(pipeline, "Serving")
    deployed = {a["Configuration"]["StackName"] for a in actions if a["ActionTypeId"]["Provider"] == "CloudFormation"}
    assert deployed == {f"Serving-ray-serve-ha-{s}" for s in ("network", "cluster", "gcs-store", "serving")}
    (drill,) = [a for a in actions if a["Name"] == "HaDrill"]
    last_deploy = max(a["RunOrder"] for a in actions if a["ActionTypeId"]["Provider"] == "CloudFormation")
    assert drill["RunOrder"] > last_deploy


def test_synth_uses_the_project_make_target_and_the_pinned_cli(pipeline):
    projects = json.dumps(pipeline.find_resources("AWS::CodeBuild::Project"))
    assert "make synth" in projects
    assert "aws-cdk@2.1148.1" in projects  # self-mutation installs the pinned CLI
    assert "aws-cdk@latest" not in projects


def test_drill_step_starts_the_in_vpc_drill_project_and_fails_with_it(pipeline):
    projects = pipeline.find_resources("AWS::CodeBuild::Project")
    (drill,) = [p for p in projects.values() if "start-build" in json.dumps(p)]
    spec = drill["Properties"]["Source"]["BuildSpec"]
    assert "ray-serve-ha-ha-drill" in json.dumps(drill)
    assert "exit 1" in spec and "SUCCEEDED" in spec
    pipeline.has_resource_properties("AWS::IAM::Policy", {"PolicyDocument": {"Statement": Match.array_with([{
        "Action": ["codebuild:BatchGetBuilds", "codebuild:StartBuild"],
        "Effect": "Allow",
        "Resource": {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"},
                                       ":codebuild:us-east-2:111122223333:project/ray-serve-ha-ha-drill"]]},
    }])}})


def test_drill_project_runs_in_the_vpc_with_namespaced_kubernetes_access(default_system):
    serving = default_system.serving
    (project,) = serving.find_resources("AWS::CodeBuild::Project").values()
    properties = project["Properties"]
    assert properties["Name"] == "ray-serve-ha-ha-drill"
    assert properties["VpcConfig"]["Subnets"]
    spec = properties["Source"]["BuildSpec"]
    assert "--backend kubernetes" in spec and "--max-failed 0" in spec
    assert "aws eks update-kubeconfig" in spec
    entries = serving.find_resources("AWS::EKS::AccessEntry", {"Properties": {
        "KubernetesGroups": ["ray-serve-ha.dev:ha-drill"]}})
    (entry,) = entries.values()
    assert "AccessPolicies" not in entry["Properties"]  # only its namespaced Role
    rbac = [json.loads(r["Properties"]["Manifest"])
            for k, r in serving.find_resources("Custom::AWSCDK-EKS-KubernetesResource").items()
            if k.startswith("HaDrillRbac")]
    ((role, _binding),) = rbac
    assert role["rules"] == [
        {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
    ]
    assert role["metadata"]["namespace"] == "ray-serving"


def test_cdk_nag_and_cfn_lint_are_clean_for_the_pipeline(assembly):
    _, _, outdir = assembly
    report = json.loads((Path(outdir) / "validation-report.json").read_text())
    assert [v for plugin in report["pluginReports"] for v in plugin.get("violations", [])] == []
    templates = [str(p) for p in sorted(Path(outdir).rglob("*.template.json"))]
    assert len(templates) == 5  # the pipeline and the stage's four stacks
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", "--", *templates],
        capture_output=True, text=True,
    )
    rules = {line.split(":")[5] for line in result.stdout.splitlines() if line.strip()}
    assert rules <= LIBRARY_FINDINGS, result.stdout


def test_asset_builds_fit_the_large_base_images_and_use_the_pinned_cdk_assets(pipeline):
    projects = pipeline.find_resources("AWS::CodeBuild::Project")
    docker = {k: p for k, p in projects.items() if k.startswith("PipelineAssetsDockerAsset")}
    assert len(docker) == 2  # the Ray Serve and Gradio images
    publishing = {k: p for k, p in projects.items() if k.startswith("PipelineAssets")}
    for name, project in publishing.items():
        # Medium: 7 GB memory, 128 GB disk for ~10 GB base images (small has 64 GB).
        assert project["Properties"]["Environment"]["ComputeType"] == "BUILD_GENERAL1_MEDIUM", name
        spec = json.dumps(project["Properties"]["Source"]["BuildSpec"])
        assert f"npm install -g cdk-assets@{CDK_PIPELINES_CDK_ASSETS}" in spec, name
        assert "asset-publisher/bin:$PATH" in spec, name  # the publisher comes first on PATH
    assert all(p["Properties"]["Environment"]["PrivilegedMode"] for p in docker.values())


def test_the_project_and_the_pipeline_install_the_same_asset_publisher():
    # `make setup` installs the publisher as the project's `cdk-assets` (package.json, its
    # packages in package-lock.json); the asset steps install it from its own lockfile.
    # Both must resolve every package of it to the same version.
    root = Path(__file__).resolve().parent.parent
    assert json.loads((root / "package.json").read_text())["devDependencies"]["cdk-assets"] == \
        "file:tools/asset-publisher"
    project = json.loads((root / "package-lock.json").read_text())["packages"]
    publisher = json.loads((root / "tools" / "asset-publisher" / "package-lock.json").read_text())["packages"]
    versions = {path: entry["version"] for path, entry in publisher.items() if path}
    assert len(versions) > 50
    assert {path: project.get(path, {}).get("version") for path in versions} == versions


# Bases on Docker Hub that have no public ECR mirror (Ray publishes there only).
DOCKER_HUB_ONLY = {"rayproject/ray", "rayproject/ray-llm"}


def test_base_images_come_from_a_registry_without_anonymous_pull_limits_where_one_exists():
    # Docker Hub limits anonymous pulls per address; CodeBuild builds share NAT addresses.
    # Docker's official images are mirrored at public.ecr.aws/docker/library.
    images = Path(__file__).resolve().parent.parent / "images"
    bases = {}
    for dockerfile in images.rglob("Dockerfile*"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM "):
                bases[dockerfile.relative_to(images).as_posix()] = line.split()[1]
    docker_hub = {name: base for name, base in bases.items() if "." not in base.split("/")[0]}
    assert {base.split(":")[0] for base in docker_hub.values()} <= DOCKER_HUB_ONLY, docker_hub
    assert bases["gradio/Dockerfile"].startswith("public.ecr.aws/docker/library/python:")
