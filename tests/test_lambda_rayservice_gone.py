"""Teardown: the readiness gate's Custom::RayServiceGone waits on Delete until the Ray
clusters and load balancers the RayService leaves behind are gone, against the fake API
server of tests/fakes/readiness_kube.py."""

from __future__ import annotations

import re

import pytest

from tests.fakes import readiness_kube
from tests.fakes.readiness_kube import (
    NAME,
    NAMESPACE,
    RAYCLUSTERS_PATH,
    RAYSERVICE_PATH,
    SERVICES_PATH,
    k8s_object,
    listing,
    poll_event,
)
from tests.lambda_handlers import load_handler, load_module

gate = load_handler("rayservice_ready")
errors = load_module("rayservice_ready", "gate_errors")

# The fake API server and the environment's fake credentials, taken in by name.
fake_aws, server = readiness_kube.fake_aws, readiness_kube.server
kube, endpoint = readiness_kube.kube, readiness_kube.endpoint

# ---------------------------------------------------------------------------------------
# Teardown: Custom::RayServiceGone waits on Delete for what the RayService leaves behind
# ---------------------------------------------------------------------------------------

GONE = "Custom::RayServiceGone"


REDIS_CLEANUP = "ray.io/gcs-ft-redis-cleanup-finalizer"
LB_CLEANUP = "service.eks.amazonaws.com/resources"


def test_gone_has_nothing_to_do_on_create(kube, endpoint):
    event = poll_event(endpoint, resource_type=GONE)
    del event["Data"]
    assert gate.on_event(event, None) == {"PhysicalResourceId": f"{NAMESPACE}/{NAME}"}
    assert gate.is_complete(event, None) == {"IsComplete": True}
    assert kube.requests == []


def test_delete_waits_until_the_clusters_and_load_balancers_are_gone(kube, endpoint):
    # The RayService is gone (kubectl delete returned), but its RayCluster still runs the
    # Redis cleanup Job and the serve Service still holds its NLB.
    gradio = k8s_object("gradio", service_type="ClusterIP")
    kube.answers[RAYCLUSTERS_PATH] = [
        (200, listing(k8s_object("ray-serve-llm-raycluster-x1", REDIS_CLEANUP))), (200, listing()), (200, listing()),
    ]
    kube.answers[SERVICES_PATH] = [
        (200, listing(k8s_object("ray-serve-llm-serve-svc", LB_CLEANUP, service_type="LoadBalancer"), gradio)),
        (200, listing(k8s_object("ray-serve-llm-serve-svc", LB_CLEANUP, service_type="LoadBalancer"), gradio)),
        (200, listing(gradio)),
    ]
    event = poll_event(endpoint, request_type="Delete", resource_type=GONE)
    started = gate.on_event({**event, "Data": None}, None)
    assert started["PhysicalResourceId"] == f"{NAMESPACE}/{NAME}" and "StartedAt" in started["Data"]
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert gate.is_complete(event, None) == {"IsComplete": True}
    assert {r["path"] for r in kube.requests} == {RAYSERVICE_PATH, RAYCLUSTERS_PATH, SERVICES_PATH}


def test_delete_that_does_not_finish_names_what_is_left(kube, endpoint):
    kube.answers[RAYSERVICE_PATH] = [(200, k8s_object(NAME, "ray.io/rayservice-finalizer"))]
    kube.answers[RAYCLUSTERS_PATH] = [(200, listing(k8s_object("ray-serve-llm-raycluster-x1", REDIS_CLEANUP)))]
    kube.answers[SERVICES_PATH] = [
        (200, listing(k8s_object("ray-serve-llm-serve-svc", LB_CLEANUP, service_type="LoadBalancer")))
    ]
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(
            poll_event(endpoint, request_type="Delete", resource_type=GONE, started_ago_s=120, timeout_s=60), None
        )
    # The waited seconds are 120 or 121 (StartedAt is whole seconds).
    assert re.sub(r"in 12[01] s;", "in 120 s;", str(raised.value)) == (
        "RayService serving/mistral teardown did not finish in 120 s; still there: "
        "RayService mistral (finalizers: ray.io/rayservice-finalizer); "
        f"RayCluster ray-serve-llm-raycluster-x1 (finalizers: {REDIS_CLEANUP}); "
        f"Service ray-serve-llm-serve-svc (finalizers: {LB_CLEANUP}). "
        "Delete them (or remove their finalizers) and destroy again."
    )
