"""VPC endpoints that keep the nodes' bulk traffic off the NAT gateways, which bill per GB.

- `s3`: an S3 gateway endpoint on the private subnets' route tables. Free. ECR serves image
  layers from S3, and the compiled-artifact cache is in S3: both then skip the NAT gateways.
- `s3+ecr`: also interface endpoints (hourly and per-GB charges, one network interface per
  AZ) for ECR's API and registry (`ecr.api`: the kubelet's credentials, `ecr.dkr`: manifests)
  and EKS Pod Identity (`eks-auth`: the credentials of the External Secrets, Cluster
  Autoscaler and compiled-artifact-cache roles), with private DNS: image pulls and pod
  credentials then need no NAT at all. (Pod Identity pods call `eks-auth`, not STS.)

The Hugging Face Hub is on the internet: the weights always come through NAT.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

INTERFACE_SERVICES = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "EksAuth": ec2.InterfaceVpcEndpointAwsService.EKS_AUTH,
}


class VpcEndpoints(Construct):
    """The endpoints `mode` names (stacks/settings/types.py VPC_ENDPOINT_CHOICES) on `subnets`."""

    def __init__(
        self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, subnets: Sequence[ec2.ISubnet], mode: str
    ) -> None:
        super().__init__(scope, construct_id)
        selection = ec2.SubnetSelection(subnets=list(subnets))
        self.s3: ec2.GatewayVpcEndpoint | None = None
        self.interfaces: dict[str, ec2.InterfaceVpcEndpoint] = {}
        if mode == "none":
            return
        self.s3 = ec2.GatewayVpcEndpoint(
            self, "S3", vpc=vpc, service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[selection]
        )
        if mode != "s3+ecr":
            return
        # HTTPS from the VPC only: nodes, pods and the helpers.
        security_group = ec2.SecurityGroup(
            self, "InterfaceEndpoints", vpc=vpc, allow_all_outbound=False,
            description="VPC interface endpoints: HTTPS from the VPC",
        )
        security_group.add_ingress_rule(ec2.Peer.ipv4(vpc.vpc_cidr_block), ec2.Port.tcp(443), "HTTPS from the VPC")
        for name, service in INTERFACE_SERVICES.items():
            self.interfaces[name] = ec2.InterfaceVpcEndpoint(
                self, name, vpc=vpc, service=service, subnets=selection, private_dns_enabled=True,
                security_groups=[security_group], open=False,
            )
