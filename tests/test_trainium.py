"""Trainium (trn1) as a third accelerator of the table: it serves in both capacity modes, and
it shares Inferentia2's device plugin chart, so a cluster that holds both installs that
chart once."""

from __future__ import annotations

import json

import aws_cdk as cdk
import aws_cdk.aws_ec2 as ec2
import aws_cdk.aws_eks_v2 as eks
import pytest
from aws_cdk.assertions import Template

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import ACCELERATORS, TRAINIUM, accelerators_of_plugin
from tests.cluster_objects import manifests
from tests.conftest import synthesize


def helm_releases(synthesized) -> list[dict]:
    """Every Helm release of the cluster and batch stacks."""
    stacks = [synthesized.system.cluster, *([synthesized.system.batch] if synthesized.system.batch else [])]
    return [
        r["Properties"]
        for stack in stacks
        for r in Template.from_stack(stack).find_resources("Custom::AWSCDK-EKS-HelmChart").values()
    ]


def team(name: str, instance_type: str) -> dict:
    return {"name": name, "namespace": f"team-{name}", "instanceType": instance_type, "maxWorkers": 2}


@pytest.fixture(scope="module")
def node_groups():
    return synthesize(accelerator="trainium", capacityMode="node-groups")


def test_node_groups_serve_on_trn1_with_the_neuron_ami(node_groups):
    groups = node_groups.cluster.find_resources("AWS::EKS::Nodegroup")
    (serving,) = [g["Properties"] for g in groups.values()
                  if g["Properties"]["Labels"].get(constants.ACCELERATOR_LABEL) == "trainium"]
    assert serving["InstanceTypes"] == ["trn1.2xlarge"]
    assert serving["AmiType"] == "AL2023_x86_64_NEURON"
    assert serving["Taints"] == [{"Effect": "NO_SCHEDULE", "Key": "aws.amazon.com/neuron"}]


def test_aws_cdk_lib_refuses_the_neuron_ami_for_trn1_as_a_prop():
    # Why the table sets Trainium's AMI type on the CloudFormation resource: aws-cdk-lib's
    # list of accelerated instance classes lacks trn1. When it learns trn1, this fails:
    # set cdk_knows_instance_family back to its default.
    assert not TRAINIUM.cdk_knows_instance_family
    stack = cdk.Stack(cdk.App())
    cluster = eks.Cluster.from_cluster_attributes(stack, "Cluster", cluster_name="c")
    with pytest.raises(RuntimeError, match="The specified AMI does not match the instance types architecture"):
        eks.Nodegroup(stack, "Trn1", cluster=cluster, instance_types=[ec2.InstanceType("trn1.2xlarge")],
                      ami_type=eks.NodegroupAmiType.AL2023_X86_64_NEURON)


def test_auto_mode_serves_on_a_trn1_node_pool():
    synthesized = synthesize(accelerator="trainium")
    pools = {m["metadata"]["name"]: m for m in manifests(synthesized.cluster) if m["kind"] == "NodePool"}
    pool = pools[constants.accelerator_pool_name("trainium")]
    requirements = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert requirements["eks.amazonaws.com/instance-family"] == ["trn1"]
    workers = [m for m in manifests(synthesized.serving) if m["kind"] == "RayService"]
    assert workers, "the RayService is in the serving stack"


def test_each_device_plugin_chart_is_installed_once_for_every_accelerator_that_uses_it():
    # Neuron serving, a Trainium team and a GPU team: every accelerator of the table has nodes.
    synthesized = synthesize(
        accelerator="neuron", capacityMode="node-groups",
        batchTeams=[team("train", TRAINIUM.default_instance_type), team("tune", "g6e.xlarge")],
    )
    releases = helm_releases(synthesized)
    plugins = {a.device_plugin.chart.chart: a.device_plugin for a in ACCELERATORS.values()}
    charts = [r["Chart"] for r in releases if r["Chart"] in plugins]
    assert sorted(charts) == sorted(plugins)
    for release in releases:
        if release["Chart"] not in plugins:
            continue
        plugin = plugins[release["Chart"]]
        values = json.loads(release["Values"])
        for key in plugin.affinity_path:
            values = values[key]
        (term,) = values["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        # On the nodes of every accelerator of the chart: Inferentia2's and Trainium's alike.
        assert term["matchExpressions"] == [{
            "key": constants.ACCELERATOR_LABEL, "operator": "In",
            "values": [a.name for a in accelerators_of_plugin(plugin)],
        }]
    assert [a.name for a in accelerators_of_plugin(TRAINIUM.device_plugin)] == ["neuron", "trainium"]
