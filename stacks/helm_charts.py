"""Pinned Helm charts of the operators the cluster installs. The device plugins' charts are
accelerator facts, pinned in charts/accelerators.py."""

from __future__ import annotations

from charts.helm import HelmChartRef

KUBERAY_OPERATOR = HelmChartRef(
    repository="https://ray-project.github.io/kuberay-helm/",
    chart="kuberay-operator",
    version="1.7.0",
)
EXTERNAL_SECRETS = HelmChartRef(
    repository="https://charts.external-secrets.io",
    chart="external-secrets",
    version="2.9.0",
)
