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


# --- VPC endpoints ------------------------------------------------------------------------

def endpoints(template) -> dict[str, dict]:
    """Endpoints by service (the part after the region), with their properties."""
    return {
        r["Properties"]["ServiceName"]["Fn::Join"][1][-1].lstrip("."): r["Properties"]
        for r in template.find_resources("AWS::EC2::VPCEndpoint").values()
    }


def private_route_tables(template) -> list[dict]:
    private = [logical_id for logical_id, r in template.find_resources("AWS::EC2::Subnet").items()
               if {"Key": "aws-cdk:subnet-type", "Value": "Private"} in r["Properties"]["Tags"]]
    return [
        {"Ref": r["Properties"]["RouteTableId"]["Ref"]}
        for r in template.find_resources("AWS::EC2::SubnetRouteTableAssociation").values()
        if r["Properties"]["SubnetId"]["Ref"] in private
    ]


def test_a_new_vpc_gets_a_free_s3_gateway_endpoint_on_its_private_route_tables(default_system):
    found = endpoints(default_system.network)
    assert list(found) == ["s3"]
    assert found["s3"]["VpcEndpointType"] == "Gateway"
    # Image layers (ECR keeps them in S3) and the compiled artifacts, from the private subnets.
    assert sorted(found["s3"]["RouteTableIds"], key=str) == sorted(private_route_tables(default_system.network),
                                                                  key=str)


def test_interface_endpoints_for_image_pulls_and_pod_identity_are_a_setting():
    from tests.conftest import synthesize

    network = synthesize(vpcEndpoints="s3+ecr").network
    found = endpoints(network)
    assert sorted(found) == ["ecr.api", "ecr.dkr", "eks-auth", "s3"]
    interface = {name: props for name, props in found.items() if props["VpcEndpointType"] == "Interface"}
    assert all(props["PrivateDnsEnabled"] for props in interface.values())
    assert all(len(props["SubnetIds"]) == 3 for props in interface.values())
    (group_id,) = {props["SecurityGroupIds"][0]["Fn::GetAtt"][0] for props in interface.values()}
    group = network.find_resources("AWS::EC2::SecurityGroup")[group_id]["Properties"]
    # HTTPS from the VPC only, nothing out (CDK's placeholder rule for "no egress").
    assert group["SecurityGroupIngress"] == [{
        "CidrIp": {"Fn::GetAtt": ["Vpc8378EB38", "CidrBlock"]}, "Description": "HTTPS from the VPC",
        "FromPort": 443, "IpProtocol": "tcp", "ToPort": 443,
    }]
    assert [rule["CidrIp"] for rule in group["SecurityGroupEgress"]] == ["255.255.255.255/32"]


def test_no_endpoints_when_asked_for_none():
    from tests.conftest import synthesize

    assert endpoints(synthesize(vpcEndpoints="none").network) == {}


def test_an_existing_vpc_gets_endpoints_only_when_its_owner_asks(in_existing_vpc):
    from tests.conftest import existing_vpc, synthesize

    # Its route tables and DNS are the owner's; a second S3 gateway endpoint on a route table
    # would fail the deploy.
    assert endpoints(in_existing_vpc.cluster) == {}
    found = endpoints(synthesize(**existing_vpc(vpcEndpoints="s3")).cluster)
    assert list(found) == ["s3"]
    # The private subnets' route tables from the cached lookup (tests/fixtures).
    assert found["s3"]["RouteTableIds"] == ["rtb-0bbb00000000000a2", "rtb-0bbb00000000000b2", "rtb-0bbb00000000000c2"]
    assert found["s3"]["VpcId"] == "vpc-0a1b2c3d4e5f60718"
