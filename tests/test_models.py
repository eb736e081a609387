"""The models table (ray_serve_ha/charts/models.py): each model's weights, tensor parallelism
per accelerator and context, checked against the accelerator table, and how a model the
table lacks is served once the user gives the size of its weights."""

from __future__ import annotations

import pytest
import yaml

from ray_serve_ha.charts.accelerators import ACCELERATORS
from ray_serve_ha.charts.models import DEFAULT_MODEL, MODELS, Model, model_of
from ray_serve_ha.charts.profiles import eks_rayservice_inputs
from ray_serve_ha.charts.rayservice import rayservice_spec
from ray_serve_ha.charts.serve_config import LlmServing
from stacks.settings import Settings
from tests.chart_inputs import example_eks_deployment
from tests.conftest import context


def served_args(**overrides) -> dict:
    """The Serve application's args in the RayService the settings build."""
    settings = Settings.from_context(context(**overrides))
    capacity = settings.capacity
    deployment = example_eks_deployment(
        capacity.accelerator.name, instance_types=capacity.instance_types, model=settings.serving.model
    )
    spec = rayservice_spec(eks_rayservice_inputs(deployment))
    return yaml.safe_load(spec["spec"]["serveConfigV2"])["applications"][0]["args"]


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
def test_every_model_is_set_for_known_accelerators_and_fits_their_default_instance_type(model):
    assert set(model.tensor_parallel) <= set(ACCELERATORS)
    for accelerator in ACCELERATORS.values():
        assert accelerator.unfit_reason(accelerator.default_instance_type, model) is None


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
def test_the_serve_config_takes_the_models_parallelism_and_context(model):
    for accelerator in ACCELERATORS.values():
        args = served_args(modelId=model.id, accelerator=accelerator.name)
        assert args["model_id"] == model.id
        assert args["tensor_parallel_degree"] == accelerator.replica_units(model)
        assert args["max_model_len"] == model.max_model_len


def test_a_model_the_table_lacks_is_served_with_its_size_and_a_derived_parallelism():
    # 24 GB with a fifth for the KV cache: one 48 GiB L40S holds it, one 24 GiB A10G does not.
    assert served_args(modelId="acme/big-model", modelWeightsGb=24, accelerator="nvidia")["tensor_parallel_degree"] == 1
    args = served_args(modelId="acme/big-model", modelWeightsGb=24, accelerator="nvidia",
                       acceleratorInstanceTypes="g5.12xlarge")
    assert (args["model_id"], args["tensor_parallel_degree"]) == ("acme/big-model", 2)
    # NeuronCores hold 16 GiB each: 36 GB needs three, so four (a power of two).
    assert ACCELERATORS["neuron"].replica_units(model_of("acme/big-model", 30)) == 4


def test_refusals_name_the_model_they_are_about():
    llama = MODELS["meta-llama/Llama-3.1-8B-Instruct"]
    reason = ACCELERATORS["neuron"].unfit_reason("inf2.xlarge", llama)
    assert reason is not None and "meta-llama/Llama-3.1-8B-Instruct's ≈16.1 GB" in reason
    assert "Mistral" not in reason


def test_the_default_model_is_the_tables_and_a_bad_entry_is_refused():
    assert MODELS[DEFAULT_MODEL.id] is DEFAULT_MODEL
    with pytest.raises(ValueError, match=r"^model id 'mistral' must be a Hugging Face model id"):
        Model("mistral", weights_gb=1)
    with pytest.raises(ValueError, match=r"tensor_parallel \{'neuron': 0\} must be at least 1 each"):
        Model("acme/m", weights_gb=1, tensor_parallel={"neuron": 0})
    with pytest.raises(ValueError, match="max_tokens=4096 must be below max_model_len=4096"):
        LlmServing(model_id="acme/m", engine="transformers", max_tokens=4096, max_model_len=4096)
