"""The accelerator table is the one owner of accelerator facts.

A made-up third accelerator, added to the table and nowhere else, gets valid settings, a
NodePool or node group with its device plugin, Ray workers that request its device and tell
Ray its cores, Serve replicas that ask for them, the right Dockerfile, and batch teams on it.
And no module outside the table branches on an accelerator's name."""

from __future__ import annotations

import io
import json
import tokenize
from dataclasses import replace
from pathlib import Path

import aws_cdk as cdk
import pytest
import yaml

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import ACCELERATORS, NVIDIA, DevicePlugin, RayDevice
from ray_serve_ha.charts.helm import HelmChartRef
from ray_serve_ha.charts.node_sizing import InstanceShape
from stacks.settings import Settings
from tests.cluster_objects import manifests
from tests.conftest import ROOT, context, synthesize
from tests.crd_schemas import schema_errors
from tests.test_placement import accelerator_capacity, tolerates
from tests.test_serving import the_rayservice

ACME = replace(
    NVIDIA,
    name="acme",
    device_resource="acme.example/accelerator",
    taint_key="acme.example/accelerator",
    # Four cores per device, counted by Ray as a custom resource.
    ray_device=RayDevice(resource="acme_cores", units_per_device=4, unit_word="AcmeCores"),
    engine="vllm",
    dockerfile="Dockerfile.nvidia",
    batch_dockerfile="Dockerfile",
    train_on_devices=False,
    node_group_ami_type="AL2023_X86_64_STANDARD",
    device_plugin=DevicePlugin(
        name="Acme",
        chart=HelmChartRef(
            repository="oci://registry.acme.example/charts", chart="acme-device-plugin", version="3.1.4"
        ),
        namespace="acme-system",
        values={"driver": {"enabled": False}},
        tolerations_path=("daemonset", "tolerations"),
        affinity_path=("daemonset", "affinity"),
    ),
    instance_types={
        "acme1.2xlarge": InstanceShape(vcpus=8, memory_gib=64, devices=1, device_memory_gib=64, max_pods=58),
        "acme1.8xlarge": InstanceShape(vcpus=32, memory_gib=256, devices=4, device_memory_gib=64, max_pods=234),
    },
    default_instance_type="acme1.2xlarge",
    ui_device_word="Acme chip",
    compile_scratch_gb=2.0,
)
ACME_TEAM = {"name": "acme-team", "namespace": "team-acme", "instanceType": "acme1.8xlarge", "maxWorkers": 2}


@pytest.fixture(scope="module")
def with_acme():
    """ACME in the table (the same dict every module reads) for this module's tests."""
    ACCELERATORS["acme"] = ACME
    yield
    del ACCELERATORS["acme"]


@pytest.fixture(scope="module")
def acme_auto_mode(with_acme):
    return synthesize(accelerator="acme")


@pytest.fixture(scope="module")
def acme_node_groups(with_acme):
    return synthesize(accelerator="acme", capacityMode="node-groups")


@pytest.fixture(scope="module")
def acme_team_next_to_neuron(with_acme):
    return synthesize(capacityMode="node-groups", batchTeams=[ACME_TEAM])


def test_settings_accept_the_new_accelerator_and_its_instance_types(with_acme):
    settings = Settings.from_context(context(accelerator="acme", acceleratorInstanceTypes="acme1.8xlarge"))
    assert settings.capacity.accelerator is ACME
    assert settings.capacity.instance_types == ("acme1.8xlarge",)
    assert Settings.from_context(context(accelerator="acme")).capacity.instance_types == ("acme1.2xlarge",)


@pytest.mark.parametrize("fixture", ["acme_auto_mode", "acme_node_groups"])
def test_workers_land_on_its_capacity_and_ask_for_its_device(request, fixture):
    synthesized = request.getfixturevalue(fixture)
    labels, taints = accelerator_capacity(synthesized)
    assert labels == {constants.ACCELERATOR_LABEL: "acme"}
    assert {"key": "acme.example/accelerator", "effect": "NoSchedule"} in taints
    rayservice = the_rayservice(synthesized.serving)
    assert schema_errors(rayservice) == []
    (group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    pod = group["template"]["spec"]
    assert pod["nodeSelector"].items() <= labels.items()
    assert all(tolerates(pod["tolerations"], taint) for taint in taints)
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["acme.example/accelerator"] == "1"
    # Sized from the table's shape: under Karpenter's estimate for acme1.2xlarge.
    assert (limits["cpu"], limits["memory"]) == ("7", "55Gi")
    # Ray is told the device's four cores. The models table has no entry for acme: a replica
    # asks for the fewest 16 GiB cores that hold Mistral-7B's 14.5 GB with room for its KV
    # cache, two.
    assert group["resources"] == {"acme_cores": "4"}
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    deployment = config["applications"][0]["deployments"][0]
    assert deployment["ray_actor_options"] == {"resources": {"acme_cores": 2}}
    assert config["applications"][0]["args"]["tensor_parallel_degree"] == 2
    assert config["applications"][0]["args"]["engine"] == "vllm"


def test_auto_mode_pool_selects_its_instance_family(acme_auto_mode):
    pools = [obj for obj in manifests(acme_auto_mode.cluster)
             if obj["kind"] == "NodePool" and obj["metadata"]["name"] != constants.HEADS_POOL]
    (pool,) = pools
    assert schema_errors(pool) == []
    requirements = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert requirements["eks.amazonaws.com/instance-family"] == ["acme1"]
    assert requirements["node.kubernetes.io/instance-type"] == ["acme1.2xlarge"]


def device_plugin_charts(template) -> dict[str, dict]:
    return {
        r["Properties"]["Chart"]: r["Properties"]
        for r in template.find_resources("Custom::AWSCDK-EKS-HelmChart").values()
        if r["Properties"]["Chart"] not in ("kuberay-operator", "external-secrets", "cluster-autoscaler")
    }


def test_node_groups_get_its_ami_and_its_device_plugin(acme_node_groups):
    groups = [
        g["Properties"] for g in acme_node_groups.cluster.find_resources("AWS::EKS::Nodegroup").values()
        if g["Properties"].get("Taints")
    ]
    (group,) = groups
    assert group["AmiType"] == "AL2023_x86_64_STANDARD"
    assert group["InstanceTypes"] == ["acme1.2xlarge"]
    (plugin,) = device_plugin_charts(acme_node_groups.cluster).values()
    assert (plugin["Repository"], plugin["Chart"], plugin["Version"], plugin["Namespace"]) == (
        "oci://registry.acme.example/charts", "acme-device-plugin", "3.1.4", "acme-system",
    )
    values = json.loads(plugin["Values"])
    assert values["driver"] == {"enabled": False}
    daemonset = values["daemonset"]
    assert {"key": "acme.example/accelerator", "operator": "Exists", "effect": "NoSchedule"} in daemonset["tolerations"]
    terms = daemonset["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": constants.ACCELERATOR_LABEL, "operator": "In", "values": ["acme"]}]}
    ]


def docker_files(stack) -> set[str]:
    """The Dockerfiles of a stack's image assets, from its synthesized asset manifest."""
    assembly = cdk.Stage.of(stack).synth()
    assets = json.loads((Path(assembly.directory) / f"{stack.artifact_id}.assets.json").read_text())
    return {image["source"].get("dockerFile", "Dockerfile") for image in assets["dockerImages"].values()}


def test_the_serving_image_is_built_from_its_dockerfile(acme_auto_mode):
    # The Ray Serve image from the table's Dockerfile, and the UI's own.
    assert docker_files(acme_auto_mode.system.serving) == {ACME.dockerfile, "Dockerfile"}


def test_a_team_on_it_next_to_neuron_serving_gets_its_device_plugin(acme_team_next_to_neuron):
    batch = acme_team_next_to_neuron.system.batch
    from aws_cdk.assertions import Template

    charts = device_plugin_charts(Template.from_stack(batch))
    assert set(charts) == {"acme-device-plugin"}
    # The serving accelerator's plugin stays in the cluster stack, once.
    assert set(device_plugin_charts(acme_team_next_to_neuron.cluster)) == {"neuron-helm-chart"}
    tolerations = json.loads(charts["acme-device-plugin"]["Values"])["daemonset"]["tolerations"]
    assert tolerates(tolerations, {"key": constants.TEAM_LABEL, "value": "acme-team", "effect": "NoSchedule"})


# --- no branch on a name outside the table ---------------------------------------------

# The CDK app, the charts, the local stack, the Lambdas and the batch jobs. The Serve app
# (images/) dispatches on its *engine* names, its own contract, which the table maps.
SCANNED = [
    ROOT / "app.py",
    *(p for d in ("stacks", "ray_serve_ha", "charts", "local", "lambda", "batch") for p in (ROOT / d).rglob("*.py")),
]


def name_branches(source: str, names: set[str]) -> list[str]:
    """Lines that compare with, index by or key on an accelerator name, or use one of the
    table's accelerator constants."""
    found = []
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)]
    for index, token in enumerate(tokens):
        before = tokens[index - 1].string if index else ""
        after = tokens[index + 1].string if index + 1 < len(tokens) else ""
        if token.type == tokenize.STRING and token.string.strip("\"'") in names:
            compared = before in ("==", "!=") or after in ("==", "!=")
            subscript = before == "[" and after == "]"
            dict_key = before in ("{", ",") and after == ":"
            if compared or subscript or dict_key or _in_membership_test(tokens, index):
                found.append(token.line.strip())
        elif (token.type == tokenize.NAME and token.string in ("NEURON", "NVIDIA")) or (
            token.string == "name" and before == "." and after in ("==", "!=")
        ):
            found.append(token.line.strip())
    return list(dict.fromkeys(found))


def _in_membership_test(tokens, index: int) -> bool:
    """Whether the token is an element of a literal tuple/list/set right after `in`."""
    depth = 0
    for back in range(index - 1, -1, -1):
        text = tokens[back].string
        if text in (")", "]", "}"):
            depth += 1
        elif text in ("(", "[", "{"):
            if depth == 0:
                return back > 0 and tokens[back - 1].string == "in"
            depth -= 1
        elif depth == 0 and text not in (",",) and tokens[back].type != tokenize.STRING:
            return False
    return False


# Known, exact lines still to move to the table: the settings reader's fallback accelerator
# for a team's instance type (charts.accelerators.accelerator_of_instance_type replaces it).
# A new branch, or any change to these lines, fails the test.
PENDING: dict[str, list[str]] = {}


# The tables that may name accelerators: the accelerator table, and the models table, which
# keys each model's tensor parallelism by accelerator.
TABLES = ("ray_serve_ha/charts/accelerators.py", "ray_serve_ha/charts/models.py")


def test_no_module_outside_the_table_branches_on_an_accelerator_name():
    names = set(ACCELERATORS)
    offenders = {}
    for path in SCANNED:
        relative = path.relative_to(ROOT).as_posix()
        if relative in TABLES:
            continue
        lines = [line for line in name_branches(path.read_text(), names) if line not in PENDING.get(relative, [])]
        if lines:
            offenders[relative] = lines
    assert offenders == {}


@pytest.mark.parametrize(
    "line",
    [
        'if accelerator.name == "neuron":',
        'use_gpu = accelerator is not None and accelerator.name == "nvidia"',
        'ENGINE = {"neuron": "neuron", "nvidia": "vllm"}',
        'accelerator = ACCELERATORS["neuron"]',
        'if name in ("trn", "neuron"):',
        'if name not in ["neuron"]:',
        "from charts.accelerators import NEURON",
    ],
)
def test_the_scan_finds_each_kind_of_branch(line):
    assert name_branches(line + "\n", {"neuron", "nvidia"}) == [line]


def test_the_scan_leaves_plain_uses_alone():
    source = (
        'accelerator = ACCELERATORS[settings.accelerator]\nlabel = f"ray-{accelerator.name}"\n'
        'Engine = Literal["neuron", "vllm", "transformers"]\nprint("neuron", end="")\n'
    )
    assert name_branches(source, {"neuron", "nvidia"}) == []
