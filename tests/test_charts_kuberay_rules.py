"""The KubeRay operator's GCS fault-tolerance rules (ValidationFailed), on real chart output.

Each rule is checked both ways: the RayService the charts emit passes it, and a copy broken
the way the rule forbids fails it with the operator's message.
"""

from __future__ import annotations

import copy

import cdk8s
import pytest

from ray_serve_ha.charts.kuberay_rules import operator_rule_violations
from ray_serve_ha.charts.profiles import KindDeployment, eks_charts, kind_charts
from tests.chart_inputs import example_eks_deployment


def eks_rayservice(accelerator: str) -> dict:
    return _rayservice(eks_charts(cdk8s.App(), example_eks_deployment(accelerator)).rayservice)


def _rayservice(chart: cdk8s.Chart) -> dict:
    (rayservice,) = [o for o in chart.to_json() if o["kind"] == "RayService"]
    return rayservice


@pytest.fixture(scope="module")
def emitted() -> dict[str, dict]:
    return {
        "eks-neuron": eks_rayservice("neuron"),
        "eks-nvidia": eks_rayservice("nvidia"),
        "kind": _rayservice(kind_charts(cdk8s.App(), KindDeployment()).rayservice),
    }


@pytest.fixture(scope="module")
def rayservice(emitted) -> dict:
    return emitted["eks-neuron"]


def broken(rayservice: dict) -> dict:
    return copy.deepcopy(rayservice)


def head_env(rayservice: dict) -> list[dict]:
    container = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    return container.setdefault("env", [])


def start_params(rayservice: dict) -> dict:
    return rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]


def annotations(rayservice: dict) -> dict:
    return rayservice["metadata"].setdefault("annotations", {})


def test_every_emitted_rayservice_passes_every_rule(emitted):
    assert {name: operator_rule_violations(r) for name, r in emitted.items()} == {name: [] for name in emitted}


def test_ft_enabled_annotation_with_options(rayservice):
    assert "ray.io/ft-enabled" not in rayservice["metadata"].get("annotations", {})
    bad = broken(rayservice)
    annotations(bad)["ray.io/ft-enabled"] = "true"
    assert operator_rule_violations(bad) == [
        "ray.io/ft-enabled annotation and GcsFaultToleranceOptions are both set. "
        "Please use only GcsFaultToleranceOptions to configure GCS fault tolerance"
    ]


def test_ray_redis_address_env_with_options(rayservice):
    bad = broken(rayservice)
    head_env(bad).append({"name": "RAY_REDIS_ADDRESS", "value": "rediss://elsewhere:6379"})
    assert operator_rule_violations(bad) == [
        "cannot set `RAY_REDIS_ADDRESS` env var in head Pod when GcsFaultToleranceOptions is enabled "
        "- use GcsFaultToleranceOptions.RedisAddress instead"
    ]


def test_ray_redis_address_env_without_any_fault_tolerance(rayservice):
    bad = broken(rayservice)
    del bad["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    head_env(bad).append({"name": "RAY_REDIS_ADDRESS", "value": "redis:6379"})
    assert operator_rule_violations(bad) == [
        "RAY_REDIS_ADDRESS is set which implicitly enables GCS fault tolerance, but "
        "GcsFaultToleranceOptions is not set. Please set GcsFaultToleranceOptions to enable "
        "GCS fault tolerance"
    ]
    # The legacy way (annotation + env, no options) is still accepted by the operator.
    annotations(bad)["ray.io/ft-enabled"] = "true"
    assert operator_rule_violations(bad) == []


def test_redis_password_env_with_options(rayservice):
    bad = broken(rayservice)
    head_env(bad).append({"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}})
    assert operator_rule_violations(bad) == [
        "cannot set `REDIS_PASSWORD` env var in head Pod when GcsFaultToleranceOptions is enabled "
        "- use GcsFaultToleranceOptions.RedisPassword instead"
    ]


def test_redis_password_start_param_with_options(rayservice):
    bad = broken(rayservice)
    start_params(bad)["redis-password"] = "$REDIS_PASSWORD"
    assert operator_rule_violations(bad) == [
        "cannot set `redis-password` in rayStartParams when GcsFaultToleranceOptions is enabled "
        "- use GcsFaultToleranceOptions.RedisPassword instead"
    ]


def test_external_storage_namespace_annotation_with_options(rayservice):
    bad = broken(rayservice)
    annotations(bad)["ray.io/external-storage-namespace"] = "pinned"
    assert operator_rule_violations(bad) == [
        "cannot set `ray.io/external-storage-namespace` annotation when GcsFaultToleranceOptions is "
        "enabled - use GcsFaultToleranceOptions.ExternalStorageNamespace instead"
    ]


@pytest.mark.parametrize("where", ["rayStartParams", "env"])
def test_redis_username_anywhere_ever(rayservice, where):
    bad = broken(rayservice)
    del bad["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]  # refused even without options
    if where == "rayStartParams":
        start_params(bad)["redis-username"] = "ray"
    else:
        head_env(bad).append({"name": "REDIS_USERNAME", "value": "ray"})
    assert operator_rule_violations(bad) == [
        "cannot set redis username in rayStartParams or environment variables "
        "- use GcsFaultToleranceOptions.RedisUsername instead"
    ]


def test_all_breaches_are_reported_together(rayservice):
    bad = broken(rayservice)
    annotations(bad).update({"ray.io/ft-enabled": "true", "ray.io/external-storage-namespace": "pinned"})
    start_params(bad)["redis-password"] = "x"
    assert len(operator_rule_violations(bad)) == 3
