"""The HA drill as a CodeBuild project inside the VPC: it reaches the private API endpoint
and the internal load balancer, deletes the RayService's head pod under load and fails
when a request fails. The pipeline's post-deploy step starts it; so can anyone:
`aws codebuild start-build --project-name <cluster>-ha-drill`."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from charts.rbac import HA_DRILL_GROUP, ha_drill_rbac

ROOT = Path(__file__).resolve().parent.parent


def ha_drill_project_name(cluster_name: str) -> str:
    return f"{cluster_name}-ha-drill"


class HaDrillProject(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cluster_name: str,
        namespace: str,
        rayservice_name: str,
        serve_url: str,
        vpc: ec2.IVpc,
        subnets: list[ec2.ISubnet],
        security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        # Only the drill's own code travels: local/ without the local stack's state.
        source = s3_assets.Asset(
            self,
            "Source",
            path=str(ROOT),
            exclude=["*", "!local", "!local/**", "local/**/__pycache__"],
        )
        key = kms.Key(self, "Key", description="HA drill build artifacts and logs", enable_key_rotation=True)
        self.project = codebuild.Project(
            self,
            "Project",
            project_name=ha_drill_project_name(cluster_name),
            description="Ray Serve HA drill: delete the head pod under load, fail on any failed request",
            source=codebuild.Source.s3(bucket=source.bucket, path=source.s3_object_key),
            environment=codebuild.BuildEnvironment(
                build_image=codebuild.LinuxBuildImage.STANDARD_7_0, compute_type=codebuild.ComputeType.SMALL
            ),
            vpc=vpc,
            subnet_selection=ec2.SubnetSelection(subnets=subnets),
            security_groups=[security_group],
            encryption_key=key,
            timeout=cdk.Duration.minutes(30),
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(
                    log_group=logs.LogGroup(
                        self, "Logs", retention=logs.RetentionDays.THREE_MONTHS,
                        removal_policy=cdk.RemovalPolicy.DESTROY,
                    )
                )
            ),
            environment_variables={
                "CLUSTER_NAME": codebuild.BuildEnvironmentVariable(value=cluster_name),
                "NAMESPACE": codebuild.BuildEnvironmentVariable(value=namespace),
                "RAYSERVICE": codebuild.BuildEnvironmentVariable(value=rayservice_name),
                "SERVE_URL": codebuild.BuildEnvironmentVariable(value=serve_url),
            },
            build_spec=codebuild.BuildSpec.from_object({
                "version": "0.2",
                "phases": {
                    "install": {
                        "runtime-versions": {"python": "3.12"},
                        "commands": ["pip install --quiet -r local/drill/requirements.txt"],
                    },
                    "build": {
                        "commands": [
                            'aws eks update-kubeconfig --name "$CLUSTER_NAME" --region "$AWS_REGION"',
                            'python -m local.drill --backend kubernetes --url "$SERVE_URL" '
                            '--load-balancer "$SERVE_URL" --namespace "$NAMESPACE" --rayservice "$RAYSERVICE" '
                            '--out drill-results --max-failed 0',
                        ]
                    },
                },
                "artifacts": {"files": ["drill-results/**/*"]},
            }),
        )
        source.grant_read(self.project)
        self.project.add_to_role_policy(
            iam.PolicyStatement(actions=["eks:DescribeCluster"], resources=[cluster.cluster_arn])
        )
        # A Project made without `role=` creates its own; only imported projects have none.
        assert self.project.role is not None
        # Kubernetes access: a group bound to a Role that may read the RayService and list or
        # delete pods in the serving namespace, nothing else (charts/rbac.py).
        self.access = eks.CfnAccessEntry(
            self,
            "Access",
            cluster_name=cluster.cluster_name,
            principal_arn=self.project.role.role_arn,
            type="STANDARD",
            kubernetes_groups=[HA_DRILL_GROUP],
        )
        self.rbac = eks.KubernetesManifest(self, "Rbac", cluster=cluster, manifest=ha_drill_rbac(namespace))
