"""Pinned Helm charts of the operators the cluster installs. The device plugins' charts are
accelerator facts, pinned in ray_serve_ha/charts/accelerators.py."""

from __future__ import annotations

from ray_serve_ha.charts.helm import HelmChartRef

KUBERAY_OPERATOR = HelmChartRef(
    repository="https://ray-project.github.io/kuberay-helm/",
    chart="kuberay-operator",
    version="1.7.2",
)
EXTERNAL_SECRETS = HelmChartRef(
    repository="https://charts.external-secrets.io",
    chart="external-secrets",
    version="2.9.0",
)
# node-groups mode only: scales the managed node groups to pending pods (EKS Auto Mode's
# Karpenter does that itself). Chart 9.59.0 ships Cluster Autoscaler 1.35.
CLUSTER_AUTOSCALER = HelmChartRef(
    repository="https://kubernetes.github.io/autoscaler",
    chart="cluster-autoscaler",
    version="9.59.0",
)
# The Cluster Autoscaler minor must match the cluster's Kubernetes minor: the latest patch of
# each (kubernetes/autoscaler tags cluster-autoscaler-1.3x.y, 2026-08).
CLUSTER_AUTOSCALER_IMAGE_TAGS = {
    "1.32": "v1.32.7",
    "1.33": "v1.33.6",
    "1.34": "v1.34.5",
    "1.35": "v1.35.2",
    "1.36": "v1.36.1",
}
