"""Spot replicas above an on-demand floor (servingCapacityType=mixed).

The floor holds by construction: its replicas require a Ray resource that only the on-demand
worker group advertises, and that group's pods can only land on on-demand nodes. The
placement tests below check that on the synthesized templates, in both capacity modes, with
a small model of the scheduler (node selectors, affinity, taints; Ray resources), and that a
broken spec is caught. A live test runs the serve config on a local three-node Ray cluster
and takes the spot node away.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import replace

import cdk8s
import pytest
import yaml

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import NEURON
from ray_serve_ha.charts.profiles import eks_charts
from ray_serve_ha.charts.rayservice import (
    DRAIN_SECONDS,
    SPOT_INTERRUPTION_NOTICE_S,
    RayWorkers,
    accelerator_workers,
)
from ray_serve_ha.charts.serve_config import (
    CAPACITY_RESOURCES,
    DEPLOYMENT_NAME,
    GRACEFUL_SHUTDOWN_TIMEOUT_S,
    ROUTER_DEPLOYMENT_NAME,
    SLOWEST_STREAM_TOKENS_PER_S,
    SPOT_DEPLOYMENT_NAME,
    LlmServing,
    serve_config,
)
from stacks.settings import Settings, SettingsError
from tests.chart_inputs import example_eks_deployment
from tests.cluster_objects import manifests
from tests.conftest import ROOT
from tests.crd_schemas import schema_errors
from tests.placement_model import head_capacity, node_kinds, replica_capacity
from tests.test_charts_serve_config import unknown_keys
from tests.test_serving import the_rayservice

MIXED = ("mixed_auto_mode", "mixed_node_groups_nvidia")


@pytest.fixture(scope="module", params=MIXED)
def mixed(request):
    return request.getfixturevalue(request.param)


# --- placement: the floor cannot be on spot -------------------------------------------------

def test_floor_replicas_can_only_run_on_on_demand_nodes_and_spot_replicas_only_on_spot(mixed):
    kinds = node_kinds(mixed.cluster)
    assert {k["capacity"] for k in kinds} == {"on-demand", "spot"}
    where = replica_capacity(the_rayservice(mixed.serving), kinds)
    assert where[DEPLOYMENT_NAME] == {"on-demand"}
    assert where[SPOT_DEPLOYMENT_NAME] == {"spot"}
    # The router holds no model: on any worker, so a node's loss leaves one.
    assert where[ROUTER_DEPLOYMENT_NAME] == {"on-demand", "spot"}


def test_no_spot_interruption_can_take_the_last_replica(mixed):
    rayservice = the_rayservice(mixed.serving)
    kinds = node_kinds(mixed.cluster)
    survivors = [k for k in kinds if k["capacity"] != "spot"]  # every spot node reclaimed at once
    where = replica_capacity(rayservice, survivors)
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    floor = deployments[DEPLOYMENT_NAME]["num_replicas"]
    (on_demand,) = [g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
                    if g["groupName"].endswith("-on-demand")]
    # The floor does not scale, its workers never go below it, and it keeps its nodes and a router.
    assert floor >= 1
    assert "autoscaling_config" not in deployments[DEPLOYMENT_NAME]
    assert on_demand["minReplicas"] == on_demand["maxReplicas"] == floor
    assert where[DEPLOYMENT_NAME] == {"on-demand"}
    assert "on-demand" in where[ROUTER_DEPLOYMENT_NAME]
    # ...and the on-demand capacity keeps room for it (node groups: a minimum of that many nodes).
    for group in mixed.cluster.find_resources("AWS::EKS::Nodegroup").values():
        props = group["Properties"]
        if props.get("Labels", {}).get(constants.ACCELERATOR_LABEL) and props.get("CapacityType") == "ON_DEMAND":
            assert props["ScalingConfig"]["MinSize"] == floor


def test_a_floor_group_that_could_land_on_spot_is_caught(mixed):
    rayservice = copy.deepcopy(the_rayservice(mixed.serving))
    kinds = node_kinds(mixed.cluster)
    for group in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        if group["groupName"].endswith("-on-demand"):
            del group["template"]["spec"]["affinity"]
    assert replica_capacity(rayservice, kinds)[DEPLOYMENT_NAME] == {"on-demand", "spot"}


def test_a_floor_deployment_without_its_resource_is_caught(mixed):
    rayservice = copy.deepcopy(the_rayservice(mixed.serving))
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    for deployment in config["applications"][0]["deployments"]:
        if deployment["name"] == DEPLOYMENT_NAME:
            del deployment["ray_actor_options"]["resources"][CAPACITY_RESOURCES["on-demand"]]
    rayservice["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    assert replica_capacity(rayservice, node_kinds(mixed.cluster))[DEPLOYMENT_NAME] == {"on-demand", "spot"}


@pytest.mark.parametrize("fixture", [*MIXED, "default_system", "node_groups_nvidia"])
def test_the_head_stays_on_on_demand_capacity(request, fixture):
    synthesized = request.getfixturevalue(fixture)
    kinds = node_kinds(synthesized.cluster)
    allowed = head_capacity(the_rayservice(synthesized.serving), kinds)
    assert allowed == {"on-demand"}


def test_on_demand_keeps_one_worker_group_and_one_deployment(default_system):
    kinds = node_kinds(default_system.cluster)
    assert {k["capacity"] for k in kinds} == {"on-demand"}
    rayservice = the_rayservice(default_system.serving)
    (group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert group["groupName"] == "neuron" and "affinity" not in group["template"]["spec"]
    assert set(group["resources"]) == {"neuron_cores"}
    assert set(replica_capacity(rayservice, kinds)) == {DEPLOYMENT_NAME}


# --- capacity per mode ------------------------------------------------------------------

def test_auto_mode_adds_a_spot_pool_beside_the_on_demand_one(mixed_auto_mode):
    pools = {o["metadata"]["name"]: o for o in manifests(mixed_auto_mode.cluster) if o["kind"] == "NodePool"}
    assert set(pools) == {"ray-neuron", "ray-neuron-spot", constants.HEADS_POOL}

    def requirement(pool: dict, key: str) -> list[str]:
        (found,) = [r for r in pool["spec"]["template"]["spec"]["requirements"] if r["key"] == key]
        return found["values"]

    assert requirement(pools["ray-neuron"], "karpenter.sh/capacity-type") == ["on-demand"]
    assert requirement(pools["ray-neuron-spot"], "karpenter.sh/capacity-type") == ["spot"]
    assert requirement(pools["ray-neuron-spot"], "node.kubernetes.io/instance-type") == ["inf2.8xlarge"]
    # The floor's pool: its one node and an upgrade's second; the spot pool: up to 3 and 1 more.
    assert pools["ray-neuron"]["spec"]["limits"] == {"cpu": "64", "memory": "256Gi"}
    assert pools["ray-neuron-spot"]["spec"]["limits"] == {"cpu": "128", "memory": "512Gi"}
    for pool in pools.values():
        assert schema_errors(pool) == []


def test_node_groups_add_a_spot_group_over_several_instance_types(mixed_node_groups_nvidia):
    groups = {
        g["Properties"].get("CapacityType", "ON_DEMAND"): g["Properties"]
        for g in mixed_node_groups_nvidia.cluster.find_resources("AWS::EKS::Nodegroup").values()
        if g["Properties"].get("Labels", {}).get(constants.ACCELERATOR_LABEL)
    }
    assert set(groups) == {"ON_DEMAND", "SPOT"}
    assert groups["ON_DEMAND"]["InstanceTypes"] == ["g6e.xlarge"]
    assert groups["ON_DEMAND"]["ScalingConfig"] == {"MinSize": 1, "DesiredSize": 1, "MaxSize": 2}
    # Every single-GPU type of the table that holds the same worker and the model.
    assert groups["SPOT"]["InstanceTypes"] == [
        "g6e.xlarge", "g6e.2xlarge", "g6e.4xlarge", "g6.2xlarge", "g6.4xlarge", "g5.2xlarge", "g5.4xlarge",
    ]
    assert groups["SPOT"]["ScalingConfig"] == {"MinSize": 1, "DesiredSize": 1, "MaxSize": 4}
    assert groups["SPOT"]["Taints"] == groups["ON_DEMAND"]["Taints"]
    assert groups["SPOT"]["UpdateConfig"] == groups["ON_DEMAND"]["UpdateConfig"]


def test_on_demand_settings_build_no_spot_capacity(default_system, node_groups_nvidia):
    pools = [o["metadata"]["name"] for o in manifests(default_system.cluster) if o["kind"] == "NodePool"]
    assert "ray-neuron-spot" not in pools
    capacity_types = {g["Properties"].get("CapacityType")
                      for g in node_groups_nvidia.cluster.find_resources("AWS::EKS::Nodegroup").values()}
    assert "SPOT" not in capacity_types


# --- the charts -------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["neuron", "nvidia"])
def mixed_objects(request) -> list[dict]:
    charts = eks_charts(cdk8s.App(), example_eks_deployment(request.param, max_workers=4, on_demand_replicas=1))
    return [o for chart in charts.in_apply_order() for o in chart.to_json()]


def test_mixed_manifests_are_valid(mixed_objects):
    errors = {f"{o['kind']}/{o['metadata']['name']}": schema_errors(o) for o in mixed_objects}
    assert {name: e for name, e in errors.items() if e} == {}


def test_mixed_serve_config_is_valid_for_ray_serve(mixed_objects):
    (rayservice,) = [o for o in mixed_objects if o["kind"] == "RayService"]
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert unknown_keys(config) == []
    (application,) = config["applications"]
    assert application["args"]["spot_replicas"] is True
    deployments = {d["name"]: d for d in application["deployments"]}
    assert list(deployments) == [ROUTER_DEPLOYMENT_NAME, DEPLOYMENT_NAME, SPOT_DEPLOYMENT_NAME]
    assert deployments[DEPLOYMENT_NAME]["num_replicas"] == 1
    assert deployments[SPOT_DEPLOYMENT_NAME]["autoscaling_config"]["min_replicas"] == 1
    assert deployments[SPOT_DEPLOYMENT_NAME]["autoscaling_config"]["max_replicas"] == 3
    router = deployments[ROUTER_DEPLOYMENT_NAME]
    assert router["max_replicas_per_node"] == 1
    # One router alone takes every model replica's requests, and lets streams finish on a drain.
    assert router["max_ongoing_requests"] == 4 * deployments[DEPLOYMENT_NAME]["max_ongoing_requests"]
    assert router["graceful_shutdown_timeout_s"] == GRACEFUL_SHUTDOWN_TIMEOUT_S


def test_each_worker_group_probes_its_own_deployment_and_drains_in_time(mixed_objects):
    (rayservice,) = [o for o in mixed_objects if o["kind"] == "RayService"]
    for group in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        deployment = SPOT_DEPLOYMENT_NAME if group["groupName"].endswith("-spot") else DEPLOYMENT_NAME
        (container,) = group["template"]["spec"]["containers"]
        script = container["readinessProbe"]["exec"]["command"][2]
        assert f"'ray::ServeReplica:llm:{deployment}'" in script
        assert group["template"]["spec"]["terminationGracePeriodSeconds"] == DRAIN_SECONDS


def test_the_longest_stream_drains_before_the_spot_notice_runs_out():
    longest_stream_s = LlmServing(model_id="m", engine="transformers").max_tokens / SLOWEST_STREAM_TOKENS_PER_S
    assert longest_stream_s <= GRACEFUL_SHUTDOWN_TIMEOUT_S < DRAIN_SECONDS < SPOT_INTERRUPTION_NOTICE_S


def test_the_serve_floor_must_leave_spot_replicas():
    floor = r"on_demand_replicas=2: the on-demand floor must be from 1 to min_replicas - 1 \(1\)"
    with pytest.raises(ValueError, match=floor):
        LlmServing(model_id="m", engine="transformers", on_demand_replicas=2)
    with pytest.raises(ValueError, match=r"on_demand_replicas=2: must be from 1 to min_replicas - 1 \(1\)"):
        accelerator_workers(NEURON, ("inf2.8xlarge",), 2, 4, on_demand_replicas=2)
    workers = accelerator_workers(NEURON, ("inf2.8xlarge",), 3, 4, on_demand_replicas=2)
    assert [(g.name, g.min_replicas, g.max_replicas, g.capacity_type) for g in workers.groups()] == [
        ("neuron-on-demand", 2, 2, "on-demand"), ("neuron-spot", 1, 2, "spot"),
    ]
    assert RayWorkers(resources=workers.resources, accelerator=NEURON).groups()[0].capacity_type is None


def test_replicas_ask_for_their_capacity_resource():
    serving = replace(LlmServing(model_id="m", engine="vllm", ray_device=NEURON.ray_device), min_replicas=2)
    plain = serve_config(serving)["applications"][0]["deployments"]
    assert plain[0]["ray_actor_options"] == {"resources": {"neuron_cores": 1}}
    mixed = serve_config(replace(serving, on_demand_replicas=1))["applications"][0]["deployments"]
    assert [d["ray_actor_options"] for d in mixed[1:]] == [
        {"resources": {"neuron_cores": 1, "on_demand_node": 1}},
        {"resources": {"neuron_cores": 1, "spot_node": 1}},
    ]


# --- settings ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "context,message",
    [
        ({"servingCapacityType": "mixed", "onDemandReplicas": 2},
         "onDemandReplicas=2: with servingCapacityType=mixed it must be from 1 to acceleratorMinNodes - 1 (1); "
         "acceleratorMinNodes=2 replicas leave none to spot, and acceleratorMaxNodes=4 would add spot replicas only "
         "under load the router never sends them. Raise acceleratorMinNodes, lower onDemandReplicas, or use "
         "servingCapacityType=on-demand"),
        ({"servingCapacityType": "mixed", "onDemandReplicas": 5},
         "onDemandReplicas=5: with servingCapacityType=mixed it must be from 1 to acceleratorMinNodes - 1 (1); "
         "acceleratorMinNodes=2 replicas leave none to spot, and acceleratorMaxNodes=4 would add spot replicas only "
         "under load the router never sends them. Raise acceleratorMinNodes, lower onDemandReplicas, or use "
         "servingCapacityType=on-demand"),
        ({"servingCapacityType": "mixed", "onDemandReplicas": "0"},
         "onDemandReplicas=0: with servingCapacityType=mixed it must be from 1 to acceleratorMinNodes - 1 (1); a "
         "floor of 0 is no floor: a spot interruption could take every replica. Raise acceleratorMinNodes, lower "
         "onDemandReplicas, or use servingCapacityType=on-demand"),
        ({"batchTeams": [{"name": "a", "namespace": "team-a", "cpus": 2, "memoryGib": 4, "capacityType": "mixed"}]},
         "batchTeams[0].capacityType='mixed': 'mixed' is for the serving replicas (servingCapacityType); a team's "
         "workers all run on one capacity type: on-demand, spot"),
        ({"servingCapacityType": "spot"}, "servingCapacityType='spot': must be one of: on-demand, mixed"),
    ],
)
def test_bad_floors_are_refused_with_one_message(context, message):
    with pytest.raises(SettingsError) as refused:
        Settings.from_context(context)
    assert refused.value.problems == [message]


def test_mixed_settings_reach_the_capacity():
    capacity = Settings.from_context(
        {"servingCapacityType": "mixed", "acceleratorMinNodes": "3", "onDemandReplicas": "2"}
    ).capacity
    assert (capacity.floor, capacity.on_demand_nodes(), capacity.spot_nodes()) == (2, (2, 2), (1, 2))
    on_demand = Settings.from_context({"onDemandReplicas": 3}).capacity
    assert (on_demand.floor, on_demand.on_demand_nodes(), on_demand.spot_nodes()) == (None, (2, 4), (0, 0))


# --- for real: the serve config on three Ray nodes, the spot one taken away --------------------

@pytest.mark.ray
def test_the_floor_serves_on_when_the_spot_node_is_lost():
    run = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "spot_cluster.py")], capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["floor_nodes"] == ["on-demand"] and report["spot_nodes"] == ["spot"]
    before = report["before"]
    assert (before["ok"], before["failed"], before["streamed"]) == (20, 0, 10)
    # The router sends both deployments traffic while both run.
    assert set(before["served_by"]) == {DEPLOYMENT_NAME, SPOT_DEPLOYMENT_NAME}
    # After the spot node is gone (no notice, no drain): the floor answers everything once the
    # router and the proxy have noticed, and the lost spot replica finds no other node.
    assert report["settled"] == {"ok": 20, "failed": 0, "streamed": 10, "served_by": {DEPLOYMENT_NAME: 20}}
    assert report["floor_nodes_after"] == ["on-demand"]
    assert report["spot_nodes_after"] == []


# --- python -m charts renders the same -------------------------------------------------------

def test_the_charts_cli_renders_spot_replicas(tmp_path, capsys):
    from charts.__main__ import main
    from tests.test_charts_cli import EKS

    assert main([*EKS, "--on-demand-replicas", "1", "--out", str(tmp_path)]) == 0
    (rayservice,) = [o for o in yaml.safe_load_all((tmp_path / "02-rayservice.k8s.yaml").read_text())
                     if o and o["kind"] == "RayService"]
    groups = [g["groupName"] for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    assert groups == ["neuron-on-demand", "neuron-spot"]
    assert main([*EKS, "--on-demand-replicas", "2", "--out", str(tmp_path / "refused")]) == 2
    assert capsys.readouterr().err.endswith(
        "error: workers on_demand_replicas=2: must be from 1 to min_replicas - 1 (1), so that at least one "
        "worker runs on spot\n"
    )
    assert not (tmp_path / "refused").exists()


# --- the router's own logic -----------------------------------------------------------------

def test_the_router_splits_by_running_replicas_and_falls_back_to_the_floor():
    import tests.serve_backend  # noqa: F401  (puts images/ray-serve on the path)
    from ray_serve_llm.router import pick

    running = {DEPLOYMENT_NAME: 1, SPOT_DEPLOYMENT_NAME: 3}
    draws = [pick(running, DEPLOYMENT_NAME, i / 100) for i in range(100)]
    assert draws.count(DEPLOYMENT_NAME) == 25 and draws.count(SPOT_DEPLOYMENT_NAME) == 75
    # Spot gone: all to the floor; nothing known yet: the floor.
    assert pick({DEPLOYMENT_NAME: 1, SPOT_DEPLOYMENT_NAME: 0}, DEPLOYMENT_NAME, 0.99) == DEPLOYMENT_NAME
    assert pick({DEPLOYMENT_NAME: 0, SPOT_DEPLOYMENT_NAME: 0}, DEPLOYMENT_NAME, 0.5) == DEPLOYMENT_NAME


def test_a_forwarded_request_streams_through_the_app_as_it_is_written():
    import asyncio

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    import tests.serve_backend  # noqa: F401
    from ray_serve_llm.router import run_asgi

    async def echo(request: Request) -> StreamingResponse:
        body = await request.body()

        async def chunks():
            for part in (b"a:", body, b":z"):
                yield part

        return StreamingResponse(chunks(), status_code=201, headers={"x-path": request.url.path})

    app = Starlette(routes=[Route("/v1/echo", echo, methods=["POST"])])
    message = {"method": "POST", "path": "/v1/echo", "query_string": b"", "headers": [], "body": b"hi"}

    async def collect() -> list[dict]:
        return [sent async for sent in run_asgi(app, message)]

    sent = asyncio.run(collect())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 201
    assert (b"x-path", b"/v1/echo") in sent[0]["headers"]
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"a:hi:z"
