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
# CDK Pipelines installs `cdk-assets@<this>` in every asset step (its default is the latest);
# the publisher below shadows it on PATH. Pinned so the step installs the same every time.
CDK_PIPELINES_CDK_ASSETS = "4.7.3"
# Docker image assets build on the Neuron DLC and Ray LLM bases, about 10 GB each (some
# 30 GB unpacked, plus the build's layers): the default small CodeBuild (3 GB memory,
# 64 GB disk) runs out; medium has 7 GB and 128 GB. CDK Pipelines applies one size to all
# asset projects; the file assets take seconds on it.
ASSET_BUILD_COMPUTE = codebuild.ComputeType.MEDIUM

# The asset steps run `cdk-assets --path <manifest> publish <asset>`, but even the newest
# cdk-assets (4.7.3) reads cloud assembly schema 54 at most, and aws-cdk-lib writes 55: it
# fails on every manifest. So they publish with the project's asset publisher: the same
# command line on the published cdk-assets library, pinned with a schema that reads 55
# (tools/asset-publisher: package.json and its lockfile). The asset steps get only the
# cloud assembly, so the synth step stages it there; the steps install it from its lockfile
# and put it first on PATH, after CDK Pipelines' own install of cdk-assets.
ASSET_PUBLISHER = "tools/asset-publisher"
STAGED_PUBLISHER = "asset-publisher"  # in the cloud assembly
STAGE_PUBLISHER = [
    f"rm -rf cdk.out/{STAGED_PUBLISHER}",
    f"cp -R {ASSET_PUBLISHER} cdk.out/{STAGED_PUBLISHER}",
    f"rm -rf cdk.out/{STAGED_PUBLISHER}/node_modules",
]
_PUBLISHER = json.loads((ROOT / ASSET_PUBLISHER / "package.json").read_text())
# The Node.js the publisher's package asks for ("engines": the project's Node 24, on which
# the tests run it), as a CodeBuild runtime version. standard:8.0 has Node 22 and 24;
# standard:7.0, CDK Pipelines' default, only 18 and 20, both past their end of life.
PUBLISHER_NODE = _PUBLISHER["engines"]["node"].removeprefix(">=")
ASSET_BUILD_IMAGE = codebuild.LinuxBuildImage.STANDARD_8_0
INSTALL_PUBLISHER = [
    f"npm ci --prefix {STAGED_PUBLISHER} --no-audit --no-fund --loglevel=error",
    # Zip artifacts may drop the executable bit.
    f"chmod +x {STAGED_PUBLISHER}/bin/cdk-assets",
    f'export PATH="$CODEBUILD_SRC_DIR/{STAGED_PUBLISHER}/bin:$PATH"',
]
ASSET_PUBLISHING_SPEC: dict[str, Any] = {
    "version": "0.2",
    "phases": {
        "install": {"runtime-versions": {"nodejs": PUBLISHER_NODE}},
        # After the install phase, where CDK Pipelines installs its cdk-assets.
        "pre_build": {"commands": INSTALL_PUBLISHER},
    },
}

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
            cdk_assets_cli_version=CDK_PIPELINES_CDK_ASSETS,
            asset_publishing_code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(
                    build_image=ASSET_BUILD_IMAGE, compute_type=ASSET_BUILD_COMPUTE
                ),
                partial_build_spec=codebuild.BuildSpec.from_object(ASSET_PUBLISHING_SPEC),
            ),
            # Artifacts encrypted with a KMS key of their own (rotated), as cdk-nag asks.
            cross_account_keys=True,
            enable_key_rotation=True,
            synth=pipelines.ShellStep(
                "Synth",
                input=source,
                # The same commands as on a laptop (a venv, Node 24 and the pinned CLI),
                # then the asset publisher into the cloud assembly for the asset steps.
                commands=["make synth", *STAGE_PUBLISHER],
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
