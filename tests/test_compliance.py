"""cdk-nag AwsSolutions (zero unacknowledged findings) and cfn-lint (zero errors) over the
synthesized app, for both accelerators and both capacity modes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest

from app import build_app
from tests.conftest import context, existing_cluster, existing_vpc

CONFIGURATIONS = {
    "neuron-auto-mode": {},
    # With every VPC endpoint the project makes (the S3 gateway endpoint is the default).
    "nvidia-auto-mode": {"accelerator": "nvidia", "vpcEndpoints": "s3+ecr"},
    "neuron-node-groups": {"capacityMode": "node-groups"},
    "nvidia-node-groups": {
        "capacityMode": "node-groups",
        "accelerator": "nvidia",
        "endpointPublicAccessCidrs": "203.0.113.0/24",
    },
    "neuron-node-groups-with-teams": {
        "capacityMode": "node-groups",
        "batchTeams": [
            {"name": "analytics", "namespace": "team-analytics", "cpus": 4, "memoryGib": 16},
            {"name": "vision", "namespace": "team-vision", "instanceType": "inf2.xlarge", "capacityType": "spot"},
        ],
    },
    # Spot replicas above an on-demand floor, in both capacity modes.
    "neuron-auto-mode-mixed": {"servingCapacityType": "mixed"},
    "nvidia-node-groups-mixed": {
        "servingCapacityType": "mixed", "capacityMode": "node-groups", "accelerator": "nvidia",
    },
    # An existing VPC from a cached lookup (cdk.context.json): no network stack; its owner asked
    # for the endpoints.
    "neuron-auto-mode-existing-vpc": existing_vpc(vpcEndpoints="s3+ecr"),
    # An existing cluster in that VPC, in both capacity modes.
    "neuron-auto-mode-existing-cluster": existing_cluster(),
    "nvidia-node-groups-existing-cluster": existing_cluster(capacityMode="node-groups", accelerator="nvidia"),
}
STACKS = ["cluster", "gcs-store", "network", "serving"]
# cfn-lint warnings that come from aws-cdk-lib's own constructs (a DependsOn next to a GetAtt
# on the same role), not from this project.
LIBRARY_WARNINGS = {"W3005"}


@pytest.fixture(scope="module")
def assemblies(tmp_path_factory) -> dict[str, Path]:
    """Each configuration synthesized by the real app (nag plugin included) into cdk.out."""
    out = {}
    for name, overrides in CONFIGURATIONS.items():
        outdir = tmp_path_factory.mktemp(name)
        app = cdk.App(context=context(**overrides), outdir=str(outdir))
        build_app(app)
        app.synth()  # raises on any unacknowledged cdk-nag finding
        out[name] = outdir
    return out


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_cdk_nag_reports_nothing_unacknowledged(assemblies, name):
    report = json.loads((assemblies[name] / "validation-report.json").read_text())
    violations = [v for plugin in report.get("pluginReports", []) for v in plugin.get("violations", [])]
    assert violations == []
    templates = sorted(p.name for p in assemblies[name].glob("*.template.json"))
    stacks = sorted(STACKS + (["batch"] if "batchTeams" in CONFIGURATIONS[name] else []))
    if "vpcId" in CONFIGURATIONS[name]:
        stacks.remove("network")
    prefix = CONFIGURATIONS[name].get("clusterName", "ray-serve-ha")
    assert templates == [f"{prefix}-{stack}.template.json" for stack in stacks]


def test_cdk_nag_fails_synth_on_a_new_finding(tmp_path):
    # The compliant app passes above; the same app with an unencrypted GCS store must not.
    app = cdk.App(context=context(), outdir=str(tmp_path))
    build_app(app)
    store = next(c for c in app.node.find_all() if isinstance(c, cdk.aws_elasticache.CfnReplicationGroup))
    store.transit_encryption_enabled = False
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for plugin in report["pluginReports"] for v in plugin["violations"]}
    assert rules == {"AwsSolutions-AEC3"}


def test_cfn_lint_finds_no_errors(assemblies):
    templates = [str(p) for outdir in assemblies.values() for p in sorted(outdir.glob("*.template.json"))]
    # One configuration has teams; three have no network stack.
    assert len(templates) == 4 * len(CONFIGURATIONS) + 1 - 3
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", "--", *templates],
        capture_output=True,
        text=True,
    )
    findings = [line for line in result.stdout.splitlines() if line.strip()]
    rules = {line.split(":")[5] for line in findings}
    assert result.returncode & 2 == 0, result.stdout  # bit 2: errors
    assert rules <= LIBRARY_WARNINGS, result.stdout


def test_cross_stack_references_are_exports_that_follow_their_producers(assemblies):
    # A weak reference (Fn::GetStackOutput) is resolved only when its consumer's template
    # changes: a replaced Redis or a new endpoint would never reach the serving stack. An
    # export makes CloudFormation update (or refuse to break) every consumer.
    for outdir in assemblies.values():
        for template in outdir.glob("*.template.json"):
            assert "Fn::GetStackOutput" not in template.read_text(), template.name
    serving = json.loads((assemblies["neuron-auto-mode"] / "ray-serve-ha-serving.template.json").read_text())
    assert "Fn::ImportValue" in json.dumps(serving)
