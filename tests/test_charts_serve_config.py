"""The Serve config: what the RayService and the local stack both deploy."""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import replace
from typing import Any, get_args

import cdk8s
import pytest
import yaml
from pydantic import BaseModel, ValidationError
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import ServeDeploySchema

from local.stack import LocalStack, StackState
from ray_serve_ha.charts.accelerators import NEURON as NEURON_ACCELERATOR
from ray_serve_ha.charts.accelerators import NVIDIA as NVIDIA_ACCELERATOR
from ray_serve_ha.charts.profiles import KindDeployment, eks_rayservice_inputs, kind_rayservice_inputs
from ray_serve_ha.charts.rayservice import RayServiceChart
from ray_serve_ha.charts.serve_config import (
    APP_IMPORT_PATH,
    DEPLOYMENT_NAME,
    LlmServing,
    replica_actor_options,
    serve_config,
    serve_config_yaml,
)
from tests.chart_inputs import example_eks_deployment
from tests.conftest import ROOT

NEURON = LlmServing(
    model_id="mistralai/Mistral-7B-Instruct-v0.2", engine="neuron", ray_device=NEURON_ACCELERATOR.ray_device,
    tensor_parallel_degree=2,
)
GPU = NVIDIA_ACCELERATOR.ray_device


@pytest.fixture(scope="module")
def config() -> dict:
    return serve_config(replace(NEURON, max_replicas=4))


@pytest.fixture(scope="module")
def deployment(config: dict) -> dict:
    (application,) = config["applications"]
    (deployment,) = application["deployments"]
    return deployment


def test_a_proxy_on_every_node_listens_on_all_interfaces(config):
    assert config["proxy_location"] == "EveryNode"
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}


def test_application_is_built_by_the_app_image_with_typed_args(config):
    (application,) = config["applications"]
    assert application["import_path"] == APP_IMPORT_PATH
    assert application["route_prefix"] == "/"
    assert application["args"] == {
        "model_id": "mistralai/Mistral-7B-Instruct-v0.2",
        "engine": "neuron",
        "tensor_parallel_degree": 2,
        "max_tokens_limit": 1024,
        # Each replica's own bounds (ray_serve_llm.admission).
        "max_ongoing_requests": 16,
        "max_queued_requests": 16,
        # 60 s of graceful shutdown less 1024 tokens at 18 tokens/s.
        "max_queue_wait_s": 3.1,
    }


def test_application_args_are_accepted_by_the_serve_app(config):
    # The contract with images/ray-serve: its own validator must take the args as they are.
    sys.path.insert(0, str(ROOT / "images" / "ray-serve"))
    from ray_serve_llm.args import AppArgs

    (application,) = config["applications"]
    args = AppArgs(**application["args"])
    assert (args.engine, args.max_tokens_limit, args.model_name) == (
        "neuron", 1024, "mistralai/Mistral-7B-Instruct-v0.2"
    )


def test_replicas_autoscale_from_two_and_one_per_node(deployment):
    assert deployment["name"] == DEPLOYMENT_NAME
    assert deployment["autoscaling_config"]["min_replicas"] == 2
    assert deployment["autoscaling_config"]["max_replicas"] == 4
    assert deployment["max_replicas_per_node"] == 1
    assert "num_replicas" not in deployment  # Serve refuses it together with autoscaling


def test_health_checks_tolerate_a_busy_replica_after_a_head_restart(deployment):
    assert deployment["health_check_period_s"] == 10
    assert deployment["health_check_timeout_s"] == 60
    assert deployment["graceful_shutdown_timeout_s"] == 60
    assert deployment["graceful_shutdown_wait_loop_s"] == 2


@pytest.mark.parametrize(
    ("serving", "options"),
    [
        (NEURON, {"resources": {"neuron_cores": 2}}),
        (LlmServing(model_id="m", engine="vllm", ray_device=GPU), {"num_gpus": 1}),
        (LlmServing(model_id="m", engine="vllm", ray_device=GPU, tensor_parallel_degree=4), {"num_gpus": 4}),
        (LlmServing(model_id="tiny", engine="transformers", cpus_per_replica=2), {"num_cpus": 2}),
    ],
    ids=["neuron-tp2", "vllm-tp1", "vllm-tp4", "transformers"],
)
def test_replica_resources_follow_the_engine(serving, options):
    assert replica_actor_options(serving) == options
    assert serve_config(serving)["applications"][0]["deployments"][0]["ray_actor_options"] == options


def test_yaml_is_the_same_config(config):
    assert yaml.safe_load(serve_config_yaml(replace(NEURON, max_replicas=4))) == config


def test_fewer_than_two_replicas_is_refused():
    with pytest.raises(ValueError) as error:
        replace(NEURON, min_replicas=1)
    assert str(error.value) == (
        "min_replicas=1: at least 2 Serve replicas are needed, one per worker node, so that "
        "losing a node (or the head) never stops serving"
    )


def test_max_below_min_is_refused():
    with pytest.raises(ValueError, match=r"^max_replicas=2 is below min_replicas=3$"):
        replace(NEURON, min_replicas=3)


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match=r"^engine 'tgi' is not one of: neuron, vllm, transformers$"):
        LlmServing(model_id="m", engine="tgi")  # type: ignore[arg-type]


def test_an_accelerator_engine_without_its_ray_device_is_refused():
    # Without it the replicas would ask for CPUs and Ray would place them anywhere.
    with pytest.raises(ValueError) as error:
        LlmServing(model_id="m", engine="vllm")
    assert str(error.value) == (
        "engine 'vllm' with ray_device=None: the transformers engine runs on CPUs (no ray_device); "
        "the accelerator engines need the accelerator's ray_device"
    )


def test_zero_tensor_parallel_degree_is_refused():
    with pytest.raises(ValueError, match=r"^tensor_parallel_degree=0 must be at least 1$"):
        replace(NEURON, tensor_parallel_degree=0)


def test_the_local_runner_can_import_it_without_kubernetes_libraries():
    # The local stack's environment has Ray but no cdk8s: importing must not pull it in.
    code = (
        "import sys, ray_serve_ha.charts.serve_config; sys.exit('cdk8s' in sys.modules or 'constructs' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- Ray Serve's own schema ---------------------------------------------------------------
#
# Serve validates a config with `ServeDeploySchema`, but it lets unknown keys through
# (forward compatibility) and ignores them: a misspelt `max_replica_per_node` would deploy
# without the rule. So every key is also checked against the schema's fields, down to the
# models Serve applies later to what the schema keeps as a plain dict (`autoscaling_config`).


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def unknown_keys(config: dict, model: type[BaseModel] = ServeDeploySchema, where: str = "") -> list[str]:
    """The keys of `config` (at any depth) that `model` and its nested models do not define."""
    model.model_validate(config)
    found = []
    for key, value in config.items():
        field = model.model_fields.get(key)
        if field is None:
            found.append(f"{where}{key}")
            continue
        nested = _models_in(field.annotation)
        if not nested:
            continue
        for index, item in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(item, dict):
                place = f"{where}{key}[{index}]." if isinstance(value, list) else f"{where}{key}."
                found += unknown_keys(item, nested[0], place)
    return found


def _rendered_serve_config(inputs) -> dict:
    objects = RayServiceChart(cdk8s.App(), "rs", inputs=inputs).to_json()
    (rayservice,) = [o for o in objects if o["kind"] == "RayService"]
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


SERVE_CONFIGS = {
    # What the RayService of each profile carries, and what the local stack PUTs to Serve.
    "eks-neuron": lambda: _rendered_serve_config(eks_rayservice_inputs(example_eks_deployment("neuron"))),
    "eks-nvidia": lambda: _rendered_serve_config(eks_rayservice_inputs(example_eks_deployment("nvidia"))),
    "kind": lambda: _rendered_serve_config(kind_rayservice_inputs(KindDeployment())),
    "local": lambda: serve_config(LocalStack(StackState(fault_tolerance=True)).serving),
}


@pytest.mark.parametrize("form", SERVE_CONFIGS)
def test_serve_config_is_valid_for_ray_serve_with_no_ignored_key(form):
    config = SERVE_CONFIGS[form]()
    assert unknown_keys(config) == []
    (application,) = ServeDeploySchema.model_validate(config).applications
    (deployment,) = application.deployments
    AutoscalingConfig.model_validate(deployment.autoscaling_config)
    assert deployment.name == DEPLOYMENT_NAME


def test_the_schema_check_finds_keys_serve_would_ignore(config):
    misspelt = copy.deepcopy(config)
    misspelt["proxy_locaton"] = "EveryNode"
    deployment = misspelt["applications"][0]["deployments"][0]
    deployment["max_replica_per_node"] = 1
    deployment["autoscaling_config"]["target_requests"] = 4
    deployment["ray_actor_options"]["neuron_cores"] = 2
    ServeDeploySchema.model_validate(misspelt)  # Serve itself takes it
    assert sorted(unknown_keys(misspelt)) == [
        "applications[0].deployments[0].autoscaling_config.target_requests",
        "applications[0].deployments[0].max_replica_per_node",
        "applications[0].deployments[0].ray_actor_options.neuron_cores",
        "proxy_locaton",
    ]


def test_the_schema_check_refuses_wrong_values(config):
    wrong = copy.deepcopy(config)
    wrong["applications"][0]["deployments"][0]["max_ongoing_requests"] = "many"
    with pytest.raises(ValidationError, match="max_ongoing_requests"):
        unknown_keys(wrong)
