"""Every object the charts emit (eks profile for both accelerators, kind profile) against the
real schemas: Kubernetes 1.35 built-ins with kubernetes-validate (strict), custom resources
with their CRD's openAPIV3Schema, made strict the same way.

Strict matters: the API server prunes fields a structural schema does not know, so a
misspelled `gcsFaultToleranceOptions` would be applied without complaint and silently do
nothing. Here an unknown field is an error.
"""

from __future__ import annotations

import copy

import cdk8s
import jsonschema
import pytest

from ray_serve_ha.charts.profiles import KindDeployment, eks_charts, kind_charts
from tests.chart_inputs import example_eks_deployment
from tests.crd_schemas import CRD_FILES, crd_schema, schema_errors


def eks_objects(accelerator: str) -> list[dict]:
    # Workers that may grow: the autoscaler options are emitted and checked too.
    charts = eks_charts(cdk8s.App(), example_eks_deployment(accelerator, max_workers=4))
    return [o for chart in charts.in_apply_order() for o in chart.to_json()]


def kind_objects() -> list[dict]:
    return [o for chart in kind_charts(cdk8s.App(), KindDeployment()).in_apply_order() for o in chart.to_json()]


@pytest.fixture(scope="module", params=["eks-neuron", "eks-nvidia", "kind"])
def emitted(request) -> list[dict]:
    return eks_objects(request.param.split("-")[1]) if request.param.startswith("eks") else kind_objects()


def test_every_emitted_object_is_valid(emitted):
    errors = {f"{o['kind']}/{o['metadata']['name']}": schema_errors(o) for o in emitted}
    assert {name: e for name, e in errors.items() if e} == {}


def test_custom_resources_are_checked_against_their_crd(emitted):
    custom = {o["kind"] for o in emitted if (o["apiVersion"], o["kind"]) in CRD_FILES}
    assert "RayService" in custom
    assert custom <= {"RayService", "ExternalSecret", "SecretStore"}


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return next(o for o in eks_objects("neuron") if o["kind"] == "RayService")


def test_a_misspelled_field_is_caught_though_the_api_server_would_prune_it(rayservice):
    bad = copy.deepcopy(rayservice)
    cluster = bad["spec"]["rayClusterConfig"]
    cluster["gcsFaultToleranceOption"] = cluster.pop("gcsFaultToleranceOptions")
    assert jsonschema.Draft7Validator(crd_schema("ray.io/v1", "RayService")).is_valid(bad)  # the CRD alone does
    assert schema_errors(bad) == [
        "spec/rayClusterConfig: Additional properties are not allowed ('gcsFaultToleranceOption' was unexpected)"
    ]


def test_a_wrong_value_in_a_custom_resource_is_caught(rayservice):
    bad = copy.deepcopy(rayservice)
    bad["spec"]["rayClusterConfig"]["authOptions"]["mode"] = "password"
    assert schema_errors(bad) == [
        "spec/rayClusterConfig/authOptions/mode: 'password' is not one of ['disabled', 'token']"
    ]


def test_an_unknown_field_in_a_built_in_object_is_caught():
    bad = copy.deepcopy(next(o for o in kind_objects() if o["kind"] == "Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    (error,) = schema_errors(bad)
    assert "imagePulPolicy" in error
