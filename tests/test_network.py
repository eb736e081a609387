"""NetworkStack: three AZs, private subnets with NAT egress, the tags EKS expects."""

from __future__ import annotations

from aws_cdk.assertions import Match


def subnets(template, subnet_type: str) -> list[dict]:
    return [
        r["Properties"]
        for r in template.find_resources("AWS::EC2::Subnet").values()
        if {"Key": "aws-cdk:subnet-type", "Value": subnet_type} in r["Properties"]["Tags"]
    ]


def test_private_and_public_subnets_span_three_azs(default_system):
    for subnet_type in ("Private", "Public"):
        found = subnets(default_system.network, subnet_type)
        assert [s["AvailabilityZone"] for s in found] == [
            {"Fn::Select": [i, {"Fn::GetAZs": ""}]} for i in range(3)
        ]


def test_each_az_has_its_own_nat_gateway(default_system):
    default_system.network.resource_count_is("AWS::EC2::NatGateway", 3)


def test_private_subnets_are_large_enough_for_vpc_cni_pod_addresses(default_system):
    assert all(s["CidrBlock"].endswith("/19") for s in subnets(default_system.network, "Private"))


def test_subnets_carry_the_load_balancer_role_tags(default_system):
    for subnet in subnets(default_system.network, "Private"):
        assert {"Key": "kubernetes.io/role/internal-elb", "Value": "1"} in subnet["Tags"]
    for subnet in subnets(default_system.network, "Public"):
        assert {"Key": "kubernetes.io/role/elb", "Value": "1"} in subnet["Tags"]
    default_system.network.has_resource_properties(
        "AWS::EC2::VPC",
        {"Tags": Match.array_with([{"Key": "kubernetes.io/cluster/ray-serve-ha", "Value": "shared"}])},
    )


def test_rejected_traffic_is_logged(default_system):
    default_system.network.has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceType": "VPC", "TrafficType": "REJECT"}
    )
