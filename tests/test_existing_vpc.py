"""An existing VPC (settings vpcId, privateSubnetIds): no network stack; the VPC looked up at
synth from `cdk.context.json` (the fixture is such a file); the cluster, the GCS store and
the helpers in its private subnets; bad ids and unfit VPCs refused with one message."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import aws_cdk as cdk
import pytest

from app import main
from stacks.existing_network import ExistingNetwork
from stacks.settings import NetworkSettings, Settings, SettingsError
from tests.conftest import (
    EXISTING_VPC_CONTEXT,
    EXISTING_VPC_ID,
    EXISTING_VPC_SETTINGS,
    context,
    existing_vpc,
    synthesize,
)

PRIVATE = ["subnet-0bbb00000000000a2", "subnet-0bbb00000000000b2", "subnet-0bbb00000000000c2"]
PUBLIC_SUBNET = "subnet-0aaa00000000000a1"
ISOLATED_SUBNET = "subnet-0ccc00000000000a3"
# Two of the three private subnets: what the system must use, and nothing else.
CHOSEN = PRIVATE[:2]
LOOKUP_KEY = next(iter(EXISTING_VPC_CONTEXT))
ENV = cdk.Environment(account=EXISTING_VPC_SETTINGS["account"], region=EXISTING_VPC_SETTINGS["region"])


def settings_problems(**overrides) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        Settings.from_context(context(**overrides))
    return raised.value.problems


BAD_SETTINGS = {
    "vpc id shape": (
        {**EXISTING_VPC_SETTINGS, "vpcId": "vpc-123"},
        ["vpcId='vpc-123': must be a VPC id: vpc- and 8 or 17 hex digits (vpc-0a1b2c3d4e5f60718)"],
    ),
    "upper-case hex": (
        {**EXISTING_VPC_SETTINGS, "vpcId": "vpc-0A1B2C3D"},
        ["vpcId='vpc-0A1B2C3D': must be a VPC id: vpc- and 8 or 17 hex digits (vpc-0a1b2c3d4e5f60718)"],
    ),
    "subnet id shape": (
        {**EXISTING_VPC_SETTINGS, "privateSubnetIds": "subnet-0bbb00000000000a2,sn-1"},
        ["privateSubnetIds='sn-1': must be a subnet id: subnet- and 8 or 17 hex digits (subnet-0a1b2c3d4e5f60718)"],
    ),
    "one subnet": (
        {**EXISTING_VPC_SETTINGS, "privateSubnetIds": [PRIVATE[0], PRIVATE[0]]},
        [f"privateSubnetIds={json.dumps([PRIVATE[0], PRIVATE[0]])}: must name at least 2 distinct private "
         "subnets, in at least 2 AZs; leave it unset to use every private subnet of the VPC"],
    ),
    "no account or region": (
        {"vpcId": EXISTING_VPC_ID},
        [f"vpcId='{EXISTING_VPC_ID}': an existing VPC is looked up at synth in one account and region; "
         "set account and region too (-c account=<12 digits> -c region=<name>)"],
    ),
    "no region": (
        {"vpcId": EXISTING_VPC_ID, "account": "111122223333"},
        [f"vpcId='{EXISTING_VPC_ID}': an existing VPC is looked up at synth in one account and region; "
         "set region too (-c account=<12 digits> -c region=<name>)"],
    ),
    "subnets without a VPC": (
        {"privateSubnetIds": PRIVATE},
        ["privateSubnetIds: names subnets of an existing VPC; set vpcId too, or leave it unset"],
    ),
}


@pytest.mark.parametrize("overrides,expected", BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_bad_ids_and_missing_environment_are_refused(overrides, expected):
    assert settings_problems(**overrides) == expected


def test_ids_of_both_lengths_are_accepted():
    network = Settings.from_context(context(
        **{**EXISTING_VPC_SETTINGS, "vpcId": "vpc-0a1b2c3d"}, privateSubnetIds=f"subnet-0a1b2c3d,{PRIVATE[1]}"
    )).network
    assert network == NetworkSettings(
        vpc_id="vpc-0a1b2c3d", private_subnet_ids=("subnet-0a1b2c3d", PRIVATE[1]), endpoints="none"
    )


def lookup_in_a_stack(lookup: dict | None, **network) -> ExistingNetwork:
    app = cdk.App(context=lookup or {})
    stack = cdk.Stack(app, "Stack", env=ENV)
    settings = NetworkSettings(
        vpc_id=EXISTING_VPC_ID, private_subnet_ids=network.get("private_subnet_ids"), endpoints="none"
    )
    return ExistingNetwork(stack, "Network", settings=settings)


def test_the_fixture_is_keyed_as_cdk_asks_for_the_lookup():
    # Without the cached answer CDK records the lookup it needs (what the CLI then runs and
    # writes to cdk.context.json) and hands back a placeholder, which is not judged.
    network = lookup_in_a_stack(None, private_subnet_ids=("subnet-0ddd00000000000a9", "subnet-0ddd00000000000b9"))
    assert not network.looked_up
    assembly = cdk.App.of(network).synth()
    manifest = json.loads(Path(assembly.directory, "manifest.json").read_text())
    (missing,) = manifest["missing"]
    assert missing["provider"] == "vpc-provider"
    assert missing["key"] == LOOKUP_KEY
    assert missing["props"]["filter"] == {"vpc-id": EXISTING_VPC_ID}


def test_every_private_subnet_when_none_are_named():
    network = lookup_in_a_stack(EXISTING_VPC_CONTEXT)
    assert network.looked_up
    assert [s.subnet_id for s in network.private_subnets] == PRIVATE


def with_private_subnets(*zones: str) -> dict:
    lookup = copy.deepcopy(EXISTING_VPC_CONTEXT)
    (private,) = [g for g in lookup[LOOKUP_KEY]["subnetGroups"] if g["type"] == "Private"]
    private["subnets"] = [s for s in private["subnets"] if s["availabilityZone"] in zones]
    return lookup


UNFIT = {
    "private subnets in one AZ": (
        {"lookup": with_private_subnets("us-east-2a")},
        f"vpcId='{EXISTING_VPC_ID}': private subnets (with a NAT route) in at least 2 AZs are needed (EKS and "
        f"the GCS store's Multi-AZ replica); found: {PRIVATE[0]} (us-east-2a). Add private subnets in another AZ, "
        "or name them with privateSubnetIds (refresh the cached lookup with `cdk context --reset <key>` after "
        "changing the VPC)",
    ),
    "no private subnets": (
        {"lookup": with_private_subnets()},
        f"vpcId='{EXISTING_VPC_ID}': private subnets (with a NAT route) in at least 2 AZs are needed (EKS and "
        "the GCS store's Multi-AZ replica); found: none. Add private subnets in another AZ, "
        "or name them with privateSubnetIds (refresh the cached lookup with `cdk context --reset <key>` after "
        "changing the VPC)",
    ),
    "a public subnet named": (
        {"privateSubnetIds": [PRIVATE[0], PUBLIC_SUBNET]},
        f"privateSubnetIds: {PUBLIC_SUBNET} is a public subnet of {EXISTING_VPC_ID}; nodes need private "
        "subnets with a NAT route (to pull images and Helm charts)",
    ),
    "an isolated subnet named": (
        {"privateSubnetIds": [PRIVATE[0], ISOLATED_SUBNET]},
        f"privateSubnetIds: {ISOLATED_SUBNET} is a isolated (no NAT route) subnet of {EXISTING_VPC_ID}; nodes "
        "need private subnets with a NAT route (to pull images and Helm charts)",
    ),
    "another VPC's subnet named": (
        {"privateSubnetIds": [PRIVATE[0], "subnet-0fff00000000000f1"]},
        f"privateSubnetIds: subnet-0fff00000000000f1 is not a subnet of {EXISTING_VPC_ID}; its private subnets: "
        + ", ".join(PRIVATE),
    ),
}


@pytest.mark.parametrize("given,expected", UNFIT.values(), ids=UNFIT.keys())
def test_an_unfit_vpc_stops_synth_with_one_message_and_no_traceback(tmp_path, capsys, given, expected):
    lookup = given.get("lookup", EXISTING_VPC_CONTEXT)
    overrides = {**lookup, **EXISTING_VPC_SETTINGS}
    if "privateSubnetIds" in given:
        overrides["privateSubnetIds"] = given["privateSubnetIds"]
    assert main(cdk.App(context=context(**overrides), outdir=str(tmp_path))) == 1
    assert capsys.readouterr().err == (
        "error: Invalid settings (1 problem). Fix them in cdk.json or with -c key=value:\n"
        f"  - {expected}\n"
    )
    assert list(tmp_path.iterdir()) == []


# --- the whole system in the existing VPC, two of its three private subnets named ----------

@pytest.fixture(scope="module")
def system():
    return synthesize(**existing_vpc(privateSubnetIds=CHOSEN))


def test_no_network_stack_is_created(system):
    assert system.network is None and system.system.network is None
    assert [s.stack_name for s in system.system.stacks] == [
        "ray-serve-ha-cluster", "ray-serve-ha-gcs-store", "ray-serve-ha-serving"
    ]
    for template in (system.cluster, system.gcs_store, system.serving):
        template.resource_count_is("AWS::EC2::VPC", 0)
        template.resource_count_is("AWS::EC2::Subnet", 0)


def test_the_cluster_lives_in_the_named_private_subnets(system):
    (cluster,) = system.cluster.find_resources("AWS::EKS::Cluster").values()
    assert cluster["Properties"]["ResourcesVpcConfig"]["SubnetIds"] == CHOSEN


def test_the_gcs_store_lives_in_the_named_private_subnets_of_the_vpc(system):
    (group,) = system.gcs_store.find_resources("AWS::ElastiCache::SubnetGroup").values()
    assert group["Properties"]["SubnetIds"] == CHOSEN
    (security_group,) = system.gcs_store.find_resources("AWS::EC2::SecurityGroup").values()
    assert security_group["Properties"]["VpcId"] == EXISTING_VPC_ID


def test_the_helpers_run_in_the_named_private_subnets(system):
    functions = system.serving.find_resources("AWS::Lambda::Function")
    in_vpc = {k: f["Properties"]["VpcConfig"]["SubnetIds"] for k, f in functions.items()
              if "VpcConfig" in f["Properties"]}
    # The readiness gate's two handlers and the probe.
    assert len(in_vpc) == 3 and all(subnets == CHOSEN for subnets in in_vpc.values())
    (drill,) = system.serving.find_resources("AWS::CodeBuild::Project").values()
    assert drill["Properties"]["VpcConfig"]["Subnets"] == CHOSEN
    assert drill["Properties"]["VpcConfig"]["VpcId"] == EXISTING_VPC_ID
    # The probe reaches the serve load balancer by the VPC's own address range.
    egress = [rule for group in system.serving.find_resources("AWS::EC2::SecurityGroup").values()
              for rule in group["Properties"].get("SecurityGroupEgress", [])]
    assert {"CidrIp": "10.20.0.0/16", "FromPort": 8000, "ToPort": 8000, "IpProtocol": "tcp",
            "Description": "the serve Service's internal load balancer"} in egress
