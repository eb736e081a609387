"""NetworkStack: the VPC the cluster, its pods and the GCS store live in."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from stacks.vpc_endpoints import VpcEndpoints

AZ_COUNT = 3


class NetworkStack(cdk.Stack):
    """A VPC over three AZs: public subnets for the NAT gateways, private subnets for nodes,
    pods (the VPC CNI gives pods VPC addresses, hence /19s) and the cache.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, cluster_name: str, endpoints: str = "s3", **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.64.0.0/16"),
            max_azs=AZ_COUNT,
            # One NAT per AZ: an AZ outage must not cut image pulls and Helm in the others.
            nat_gateways=AZ_COUNT,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=19
                ),
            ],
        )
        ec2.FlowLog(
            self,
            "FlowLog",
            resource_type=ec2.FlowLogResourceType.from_vpc(self.vpc),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        # Tags the AWS Load Balancer Controller and EKS Auto Mode use to pick subnets.
        for subnet in self.vpc.public_subnets:
            cdk.Tags.of(subnet).add("kubernetes.io/role/elb", "1")
        for subnet in self.vpc.private_subnets:
            cdk.Tags.of(subnet).add("kubernetes.io/role/internal-elb", "1")
        cdk.Tags.of(self.vpc).add(f"kubernetes.io/cluster/{cluster_name}", "shared")
        # Image layers and the compiled artifacts skip the NAT gateways (stacks/vpc_endpoints.py).
        self.endpoints = VpcEndpoints(self, "Endpoints", vpc=self.vpc, subnets=self.vpc.private_subnets, mode=endpoints)

    @property
    def availability_zones(self) -> list[str]:
        # Resolved at deploy time: an environment-agnostic stack would otherwise know only
        # two AZs, and an environment-aware one would need AWS credentials at synth.
        return [cdk.Fn.select(i, cdk.Fn.get_azs()) for i in range(AZ_COUNT)]

    @property
    def private_subnets(self) -> list[ec2.ISubnet]:
        """Where nodes, pods and the cache live."""
        return self.vpc.private_subnets
