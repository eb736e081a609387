"""The serve Service: what KubeRay names it, the OpenAI base URL in the cluster, and the
template KubeRay builds it from (an internal NLB per capacity mode)."""

from __future__ import annotations

from typing import Any, TypedDict

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.capacity import CapacityMode

# Annotations for an internal NLB per capacity mode: EKS Auto Mode provisions it for the
# `eks.amazonaws.com/nlb` class; with managed node groups the EKS cloud provider does.
# What the serve Service asks of the load balancer: its class (None: the controller's default) and annotations.
ServeLoadBalancer = TypedDict("ServeLoadBalancer", {"class": str | None, "annotations": dict[str, str]})
SERVE_LOAD_BALANCERS: dict[CapacityMode, ServeLoadBalancer] = {
    CapacityMode.AUTO_MODE: {"class": "eks.amazonaws.com/nlb", "annotations": {
        "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"}},
    CapacityMode.NODE_GROUPS: {"class": None, "annotations": {
        "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
        "service.beta.kubernetes.io/aws-load-balancer-internal": "true"}},
}


def serve_service_name(rayservice_name: str) -> str:
    """The Service KubeRay creates for Serve traffic (worker proxies only, here)."""
    return f"{rayservice_name}-serve-svc"


def openai_base_url(rayservice_name: str, namespace: str) -> str:
    host = f"{serve_service_name(rayservice_name)}.{namespace}.svc.cluster.local"
    return f"http://{host}:{constants.SERVE_PORT}/v1"


def serve_service_template(
    rayservice_name: str, load_balancer: CapacityMode | None
) -> dict[str, Any]:
    """KubeRay builds the serve Service from this template and keeps its selector on the
    active cluster's worker proxies, through upgrades: an internal NLB that the
    availability probe and in-VPC clients use."""
    if load_balancer is None:
        return {}
    balancer = SERVE_LOAD_BALANCERS[load_balancer]
    spec: dict[str, Any] = {
        "type": "LoadBalancer",
        "ports": [{"name": "serve", "port": constants.SERVE_PORT, "targetPort": constants.SERVE_PORT}],
    }
    if balancer["class"]:
        spec["loadBalancerClass"] = balancer["class"]
    return {
        "serveService": {
            "metadata": {"name": serve_service_name(rayservice_name), "annotations": dict(balancer["annotations"])},
            "spec": spec,
        }
    }
