"""A pinned Helm chart reference, shared by the operators (ray_serve_ha/constructs/operators.py) and
the accelerator table's device plugins (ray_serve_ha/charts/accelerators.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HelmChartRef:
    repository: str
    chart: str
    version: str
