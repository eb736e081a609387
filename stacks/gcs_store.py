"""GcsStoreStack: the Redis that Ray's GCS writes its state to, so the Ray head can crash
and come back without the workers, the Serve applications or any request being lost."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from constructs import Construct

from ray_serve_ha.constructs.gcs_store import GcsStore, GcsStoreProps
from ray_serve_ha.constructs.gcs_store_engine import GcsStoreEngine


class GcsStoreStack(cdk.Stack):
    """An ElastiCache replication group (cluster mode off, primary + replica, Multi-AZ with
    automatic failover, TLS, encryption at rest, AUTH token from Secrets Manager) reachable
    only from the cluster security group."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: GcsStoreEngine,
        vpc: ec2.IVpc,
        subnets: Sequence[ec2.ISubnet],
        cluster_security_group: ec2.ISecurityGroup,
        secret_readers: list[iam.IRole],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # "Default": the resources keep the logical ids they had before they moved into the
        # construct (CDK leaves a Default path component out of logical ids), so an update
        # never replaces the Redis.
        self.store = GcsStore(
            self,
            "Default",
            GcsStoreProps(
                vpc=vpc, subnets=subnets, client_security_group=cluster_security_group,
                secret_readers=secret_readers, store=settings,
            ),
        )
        self.security_group = self.store.security_group
        self.auth_token = self.store.auth_token
        self.replication_group = self.store.replication_group

    # The endpoint, as the construct gives it (one definition).
    @property
    def primary_endpoint(self) -> str:
        return self.store.primary_endpoint

    @property
    def port(self) -> str:
        return self.store.port

    @property
    def redis_address(self) -> str:
        """What Ray's `gcsFaultToleranceOptions.redisAddress` takes: TLS, no credentials."""
        return self.store.redis_address

