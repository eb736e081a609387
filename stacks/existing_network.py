"""An existing VPC instead of the network stack: looked up at synth (`ec2.Vpc.from_lookup`),
its private subnets checked for what the system needs.

The lookup is a CDK context lookup: the first `cdk synth` with credentials for the account
asks EC2 (DescribeVpcs, DescribeSubnets, DescribeRouteTables) and writes the answer to
`cdk.context.json`; later synths read it from there, offline. Until the answer is there,
CDK hands back a placeholder VPC and the CLI runs the lookup and synthesizes again, so the
checks below only judge a real answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from stacks.settings import MIN_EXISTING_SUBNET_AZS, NetworkSettings, SettingsError
from stacks.vpc_endpoints import VpcEndpoints

# What the CDK CLI puts in the context for a lookup that failed (no credentials, no access):
# the error, and a mark that keeps it out of cdk.context.json.
PROVIDER_ERROR_KEY = "$providerError"
CONTEXT_FILE = "cdk.context.json"


class LookupFailed(Exception):
    """A context lookup (the existing VPC) failed: the CLI's reason, and what to do."""


def check_lookups(context: Mapping[str, Any], vpc_id: str | None) -> None:
    """Raises LookupFailed when the CLI could not look the VPC up: its reason, alone, instead
    of what CloudFormation's validation would say of CDK's placeholder VPC and subnets."""
    errors = [str(value[PROVIDER_ERROR_KEY]) for value in context.values()
              if isinstance(value, dict) and PROVIDER_ERROR_KEY in value]
    if errors:
        raise LookupFailed(
            f"the existing VPC {vpc_id} could not be looked up: {'; '.join(dict.fromkeys(errors))}. Run `cdk synth` "
            "once with credentials for that account and region (EC2 DescribeVpcs, DescribeSubnets, "
            f"DescribeRouteTables through the bootstrap lookup role); the answer is kept in {CONTEXT_FILE}, which "
            "later synths read offline"
        )


def remove_empty_context_file(directory: Path) -> None:
    """The CLI writes cdk.context.json before it synthesizes again, even when the lookup
    failed and there is nothing to keep: an empty file would only mislead the next run."""
    path = directory / CONTEXT_FILE
    try:
        if json.loads(path.read_text()) == {}:
            path.unlink()
    except (OSError, ValueError):
        return


class Network(Protocol):
    """What the stacks need of a network: the VPC and the private subnets that nodes, pods,
    the GCS store and the helpers live in. `NetworkStack` and `ExistingNetwork` provide it."""

    @property
    def vpc(self) -> ec2.IVpc: ...

    @property
    def private_subnets(self) -> list[ec2.ISubnet]: ...


class ExistingNetwork(Construct):
    """The VPC `settings.vpc_id`, looked up in this construct's stack's account and region,
    and its private subnets (`settings.private_subnet_ids`, or every private subnet).

    Private means CDK's "Private" subnet type: a route to a NAT gateway (nodes pull images and
    Helm charts through it). Raises `SettingsError` (one message, no traceback from app.py)
    when a named subnet is not a private subnet of the VPC, or when the subnets cover fewer
    than two AZs (EKS and the GCS store's Multi-AZ replica need two)."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: NetworkSettings) -> None:
        super().__init__(scope, construct_id)
        if settings.vpc_id is None:
            raise ValueError("ExistingNetwork needs settings.vpc_id")
        self._requested_vpc_id = settings.vpc_id
        self.vpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=settings.vpc_id)
        self.private_subnets: list[ec2.ISubnet] = list(self.vpc.private_subnets)
        self.endpoints: VpcEndpoints | None = None
        if not self.looked_up:
            return  # CDK's placeholder: the CLI looks the VPC up and synthesizes again.
        if settings.private_subnet_ids is not None:
            self.private_subnets = self._named_subnets(settings.vpc_id, settings.private_subnet_ids)
        zones = sorted({subnet.availability_zone for subnet in self.private_subnets})
        if len(zones) < MIN_EXISTING_SUBNET_AZS:
            found = ", ".join(f"{s.subnet_id} ({s.availability_zone})" for s in self.private_subnets) or "none"
            key = "privateSubnetIds" if settings.private_subnet_ids is not None else "vpcId"
            value = list(settings.private_subnet_ids) if settings.private_subnet_ids is not None else settings.vpc_id
            raise SettingsError([
                f"{key}={value!r}: private subnets (with a NAT route) in at least {MIN_EXISTING_SUBNET_AZS} AZs "
                f"are needed (EKS and the GCS store's Multi-AZ replica); found: {found}. Add private subnets in "
                "another AZ, or name them with privateSubnetIds (refresh the cached lookup with "
                "`cdk context --reset <key>` after changing the VPC)"
            ])
        # Only when asked (vpcEndpoints): the VPC's owner decides what its route tables and DNS
        # carry, and a second S3 gateway endpoint on a route table fails to deploy.
        self.endpoints = VpcEndpoints(
            self, "Endpoints", vpc=self.vpc, subnets=self.private_subnets, mode=settings.endpoints
        )

    @property
    def looked_up(self) -> bool:
        """False while CDK's placeholder stands in (its id is never the one asked for)."""
        return self.vpc.vpc_id == self._requested_vpc_id

    def _named_subnets(self, vpc_id: str, subnet_ids: tuple[str, ...]) -> list[ec2.ISubnet]:
        private = {subnet.subnet_id: subnet for subnet in self.vpc.private_subnets}
        other = {s.subnet_id: kind for kind, subnets in (("public", self.vpc.public_subnets),
                                                         ("isolated (no NAT route)", self.vpc.isolated_subnets))
                 for s in subnets}
        problems = []
        for subnet_id in subnet_ids:
            if subnet_id in private:
                continue
            if subnet_id in other:
                problems.append(
                    f"privateSubnetIds: {subnet_id} is a {other[subnet_id]} subnet of {vpc_id}; nodes need "
                    "private subnets with a NAT route (to pull images and Helm charts)"
                )
            else:
                problems.append(
                    f"privateSubnetIds: {subnet_id} is not a subnet of {vpc_id}; its private subnets: "
                    + (", ".join(private) or "none")
                )
        if problems:
            raise SettingsError(problems)
        return [private[subnet_id] for subnet_id in subnet_ids]
