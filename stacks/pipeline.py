"""PipelineStack: CDK Pipelines (pipeline type V2) that deploys the serving system on every
commit and then runs the HA drill against the new deployment, failing on any failed
request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_iam as iam
from aws_cdk import pipelines
from constructs import Construct

from stacks.drill_runner import ha_drill_project_name
from stacks.serving_system import ServingStage
from stacks.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# The CDK CLI the project pins (package.json) is the one the pipeline synthesizes and
# self-mutates with.
_NODE_PINS = json.loads((ROOT / "package.json").read_text())["devDependencies"]
CDK_CLI_VERSION = _NODE_PINS["aws-cdk"]
# The asset publishing steps install this cdk-assets (CDK Pipelines' default is the latest).
CDK_ASSETS_VERSION = _NODE_PINS["cdk-assets"]
# Docker image assets build on the Neuron DLC and Ray LLM bases, about 10 GB each (some
# 30 GB unpacked, plus the build's layers): the default small CodeBuild (3 GB memory,
# 64 GB disk) runs out; medium has 7 GB and 128 GB. CDK Pipelines applies one size to all
# asset projects; the file assets take seconds on it.
ASSET_BUILD_COMPUTE = codebuild.ComputeType.MEDIUM

# Starts the drill's CodeBuild project (in the VPC, where the private API endpoint and the
# internal load balancer are) and waits for it; its failure fails the pipeline.
RUN_DRILL = [
    'BUILD_ID=$(aws codebuild start-build --project-name "$DRILL_PROJECT" --query build.id --output text)',
    'echo "HA drill: $BUILD_ID"',
    'while true; do '
    'STATUS=$(aws codebuild batch-get-builds --ids "$BUILD_ID" --query "builds[0].buildStatus" --output text); '
    'case "$STATUS" in SUCCEEDED) echo "HA drill passed"; exit 0;; IN_PROGRESS) sleep 20;; '
    '*) echo "HA drill $STATUS: see the $DRILL_PROJECT build log"; exit 1;; esac; done',
]


class PipelineStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        delivery = settings.pipeline
        if delivery.repository is None or delivery.connection_arn is None:
            raise ValueError(
                "pipelineRepository, pipelineConnectionArn: must be set when pipeline=true"
            )
        source = pipelines.CodePipelineSource.connection(
            delivery.repository, delivery.branch, connection_arn=delivery.connection_arn
        )
        self.pipeline = pipelines.CodePipeline(
            self,
            "Pipeline",
            pipeline_type=codepipeline.PipelineType.V2,
            cli_version=CDK_CLI_VERSION,
            cdk_assets_cli_version=CDK_ASSETS_VERSION,
            asset_publishing_code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(compute_type=ASSET_BUILD_COMPUTE)
            ),
            # Artifacts encrypted with a KMS key of their own (rotated), as cdk-nag asks.
            cross_account_keys=True,
            enable_key_rotation=True,
            synth=pipelines.ShellStep(
                "Synth",
                input=source,
                # The same commands as on a laptop: a venv, Node 24 and the pinned CLI.
                commands=["make synth"],
                primary_output_directory="cdk.out",
            ),
        )
        environment = cdk.Environment(account=settings.environment.account, region=settings.environment.region)
        self.stage = ServingStage(self, "Serving", settings=settings, env=environment)
        project = ha_drill_project_name(settings.cluster.name)
        self.drill = pipelines.CodeBuildStep(
            "HaDrill",
            env={"DRILL_PROJECT": project},
            commands=RUN_DRILL,
            timeout=cdk.Duration.minutes(40),
            role_policy_statements=[
                iam.PolicyStatement(
                    actions=["codebuild:StartBuild", "codebuild:BatchGetBuilds"],
                    resources=[
                        f"arn:{cdk.Aws.PARTITION}:codebuild:{settings.environment.region}:"
                        f"{settings.environment.account}:project/{project}"
                    ],
                )
            ],
        )
        self.pipeline.add_stage(self.stage, post=[self.drill])
        # Build now (not at synth) so its roles, bucket and projects exist as constructs.
        self.pipeline.build_pipeline()
