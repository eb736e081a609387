"""The compiled-artifact cache: an S3 bucket where the first Neuron worker to compile the
model publishes the result and every later worker start (node replacement, scale-out,
upgrade) downloads it instead of compiling again, and the EKS Pod Identity role through
which the Ray worker pods, and nothing else, use their prefix of it.

The image (images/ray-serve/ray_serve_llm/compiled_artifacts.py) adds one folder per
compiled configuration under the prefix: model, tensor parallel degree, sequence length,
batch size and Neuron SDK version, because NxD Inference does not check that artifacts
match the configuration it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from ray_serve_ha.charts import constants

# Where under the bucket the compiled configurations live.
ARTIFACTS_PREFIX = "neuron-compiled-artifacts"


@dataclass(frozen=True)
class CompiledArtifactCacheProps:
    """cluster: where the workers run (EKS Pod Identity associates the role there).
    namespace, service_account: the worker pods' (the RayService's namespace; the charts run
    the workers as RAY_WORKER_SERVICE_ACCOUNT when the cache is set)."""

    cluster: eks.ICluster
    namespace: str = constants.SERVING_NAMESPACE
    service_account: str = constants.RAY_WORKER_SERVICE_ACCOUNT


class CompiledArtifactCache(Construct):
    """The bucket, the workers' role and its Pod Identity association; `location` is the
    `s3://bucket/prefix` the serve config points the engine at."""

    def __init__(self, scope: Construct, construct_id: str, props: CompiledArtifactCacheProps) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            # Derived data that the next start recompiles: it goes with the stack, so that
            # `cdk destroy` leaves no bucket behind (emptied first by CDK's handler).
            removal_policy=cdk.RemovalPolicy.DESTROY,
            auto_delete_objects=True,
            # A half-written upload of a worker that died is never read (the engine loads
            # only folders with a completion marker); do not keep its parts.
            lifecycle_rules=[s3.LifecycleRule(abort_incomplete_multipart_upload_after=cdk.Duration.days(1))],
        )
        self.location = f"s3://{self.bucket.bucket_name}/{ARTIFACTS_PREFIX}"
        self.role = iam.Role(
            self,
            "WorkerRole",
            description="Ray worker pods: read and publish Neuron compiled artifacts under their prefix",
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
        )
        # Exactly what ArtifactCache calls: list the prefix, get and put objects under it.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{ARTIFACTS_PREFIX}/*"]}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[self.bucket.arn_for_objects(f"{ARTIFACTS_PREFIX}/*")],
            )
        )
        self.pod_identity = eks.CfnPodIdentityAssociation(
            self,
            "PodIdentity",
            cluster_name=props.cluster.cluster_name,
            namespace=props.namespace,
            service_account=props.service_account,
            role_arn=self.role.role_arn,
        )
