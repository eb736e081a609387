"""Security groups of the helpers that run beside a cluster (the readiness gate, the
availability probe, an in-VPC drill): each reaches only what it talks to, never the nodes,
pods, kubelets or Redis that the cluster security group opens up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from ray_serve_ha.charts import constants

HTTPS = ec2.Port.tcp(443)


@dataclass(frozen=True)
class HelperReach:
    """What a helper talks to.

    api_endpoint: the cluster's private API endpoint (its ENIs carry the cluster security
    group, which then admits this group on 443).
    serve_load_balancer: the serve Service's internal NLB on the serve port. The load
    balancer controller creates it at run time, with its own security group that admits
    the VPC CIDR: the address range is all there is to name here.
    aws_apis: AWS service endpoints over HTTPS through the NAT gateways (CloudWatch metrics,
    Secrets Manager for an API key, CodeBuild's source, logs and package downloads); the VPC
    has no interface endpoints for them.
    """

    api_endpoint: bool = False
    serve_load_balancer: bool = False
    aws_apis: bool = False


class HelperPlacement(TypedDict):
    """Where a helper function or project runs: the keyword arguments its construct takes."""

    vpc: ec2.IVpc
    subnets: list[ec2.ISubnet]
    security_group: ec2.ISecurityGroup


@dataclass(frozen=True)
class HelperSecurityGroupProps:
    """vpc: where the helper runs. cluster_security_group: the group EKS created, which fronts
    the API endpoint. reach: what the helper talks to (default: nothing). description: the
    group's, and the API endpoint rule's, description."""

    vpc: ec2.IVpc
    cluster_security_group: ec2.ISecurityGroup
    description: str
    reach: HelperReach = HelperReach()


class HelperSecurityGroup(Construct):
    """A security group with no ingress and only the egress `props.reach` names."""

    def __init__(self, scope: Construct, construct_id: str, props: HelperSecurityGroupProps) -> None:
        super().__init__(scope, construct_id)
        vpc, reach, description = props.vpc, props.reach, props.description
        cluster_security_group = props.cluster_security_group
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description=description, allow_all_outbound=False
        )
        self.api_endpoint_ingress: ec2.CfnSecurityGroupIngress | None = None
        if reach.api_endpoint:
            self.security_group.add_egress_rule(
                ec2.Peer.security_group_id(cluster_security_group.security_group_id), HTTPS,
                "the cluster's private API endpoint",
            )
            # The rule lives here, beside the group it admits, not in the cluster stack: the
            # cluster knows nothing of its clients, and the serving stack goes first on delete.
            self.api_endpoint_ingress = ec2.CfnSecurityGroupIngress(
                self,
                "ApiEndpointIngress",
                group_id=cluster_security_group.security_group_id,
                source_security_group_id=self.security_group.security_group_id,
                ip_protocol="tcp",
                from_port=443,
                to_port=443,
                description=f"API endpoint from {description}",
            )
        if reach.serve_load_balancer:
            self.security_group.add_egress_rule(
                ec2.Peer.ipv4(vpc.vpc_cidr_block), ec2.Port.tcp(constants.SERVE_PORT),
                "the serve Service's internal load balancer",
            )
        if reach.aws_apis:
            self.security_group.add_egress_rule(ec2.Peer.any_ipv4(), HTTPS, "AWS service endpoints through NAT")
