"""The Redis that Ray's GCS writes its state to, so the Ray head can crash and come back
without the workers, the Serve applications or any request being lost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from ray_serve_ha.charts.constants import REDIS_PORT
from ray_serve_ha.constructs.gcs_store_engine import GcsStoreEngine


@dataclass(frozen=True)
class GcsStoreProps:
    """Where the store lives and who may use it.

    vpc, subnets: private subnets in at least two AZs (the replica goes to another AZ).
    client_security_group: the only source admitted on the Redis port; for EKS, the
    cluster security group, which the control plane, Auto Mode and managed nodes and
    their pods carry.
    secret_readers: roles that may read the AUTH token (External Secrets' role).
    store: engine, engine version and node type (gcs_store_engine.py).
    """

    vpc: ec2.IVpc
    subnets: Sequence[ec2.ISubnet]
    client_security_group: ec2.ISecurityGroup
    secret_readers: Sequence[iam.IRole] = ()
    store: GcsStoreEngine = field(default_factory=GcsStoreEngine)


class GcsStore(Construct):
    """An ElastiCache replication group (cluster mode off, primary + replica, Multi-AZ with
    automatic failover, TLS required, encryption at rest, an AUTH token generated in Secrets
    Manager) behind a security group whose only ingress is the Redis port from
    `props.client_security_group`.

    `redis_address` is what a RayService's `gcsFaultToleranceOptions.redisAddress` takes;
    `auth_token` is the secret its password is synced from."""

    def __init__(self, scope: Construct, construct_id: str, props: GcsStoreProps) -> None:
        super().__init__(scope, construct_id)
        store = props.store
        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=props.vpc,
            description="Ray GCS store: Redis from the EKS cluster security group only",
            # A cache never opens connections.
            allow_all_outbound=False,
        )
        self.security_group.add_ingress_rule(
            props.client_security_group, ec2.Port.tcp(REDIS_PORT), "Redis (TLS) from Ray pods and nodes"
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
        for index, reader in enumerate(props.secret_readers):
            # A Policy of this construct's stack, not reader.grant: the role may live in the
            # cluster's stack, which must not depend on this one.
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
            subnet_ids=[subnet.subnet_id for subnet in props.subnets],
        )
        self.replication_group = elasticache.CfnReplicationGroup(
            self,
            "ReplicationGroup",
            replication_group_description="Ray GCS fault tolerance store",
            engine=store.engine,
            engine_version=store.engine_version,
            cache_node_type=store.node_type,
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
