"""GcsStoreStack: the Redis that Ray's GCS writes its state to, so the Ray head can crash
and come back without the workers, the Serve applications or any request being lost."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from charts.constants import REDIS_PORT
from stacks.settings import GcsStoreSettings


class GcsStoreStack(cdk.Stack):
    """An ElastiCache replication group (cluster mode off, primary + replica, Multi-AZ with
    automatic failover, TLS, encryption at rest, AUTH token from Secrets Manager) reachable
    only from the cluster security group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: GcsStoreSettings,
        vpc: ec2.IVpc,
        subnets: Sequence[ec2.ISubnet],
        cluster_security_group: ec2.ISecurityGroup,
        secret_readers: list[iam.IRole],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="Ray GCS store: Redis from the EKS cluster security group only",
            # A cache never opens connections.
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(
            cluster_security_group, ec2.Port.tcp(REDIS_PORT), "Redis (TLS) from Ray pods and nodes"
        )

        self.auth_token = secretsmanager.Secret(
            self,
            "AuthToken",
            description="AUTH token of the Ray GCS Redis (ElastiCache)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                # ElastiCache AUTH tokens are 16-128 printable characters without @, " or /.
                password_length=64,
                exclude_punctuation=True,
            ),
        )
        for index, reader in enumerate(secret_readers):
            # A Policy of this stack, not reader.grant: the role lives in the cluster stack,
            # which must not depend on this one.
            iam.Policy(
                self,
                f"AuthTokenReader{index}",
                roles=[reader],
                statements=[
                    iam.PolicyStatement(
                        actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                        resources=[self.auth_token.secret_arn],
                    )
                ],
            )

        subnet_group = elasticache.CfnSubnetGroup(
            self,
            "SubnetGroup",
            description="Private subnets of the EKS cluster",
            subnet_ids=[subnet.subnet_id for subnet in subnets],
        )
        self.replication_group = elasticache.CfnReplicationGroup(
            self,
            "ReplicationGroup",
            replication_group_description="Ray GCS fault tolerance store",
            engine=settings.engine,
            engine_version=settings.engine_version,
            cache_node_type=settings.node_type,
            # Cluster mode off: one shard, a primary and one replica in another AZ.
            num_cache_clusters=2,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            at_rest_encryption_enabled=True,
            auth_token=self.auth_token.secret_value.unsafe_unwrap(),
            port=REDIS_PORT,
            cache_subnet_group_name=subnet_group.ref,
            security_group_ids=[self.security_group.security_group_id],
            auto_minor_version_upgrade=True,
            snapshot_retention_limit=1,
        )

    @property
    def primary_endpoint(self) -> str:
        return self.replication_group.attr_primary_end_point_address

    @property
    def port(self) -> str:
        return self.replication_group.attr_primary_end_point_port

    @property
    def redis_address(self) -> str:
        """What Ray's `gcsFaultToleranceOptions.redisAddress` takes: TLS, no credentials."""
        return f"rediss://{self.primary_endpoint}:{self.port}"

