"""A serving replica's start, step by step, on paper: what the RayService's initializing
time-out, the docs' budget and NAT traffic figures are computed from.

Estimates, not measurements (no Inferentia2 or GPU account here): data sizes come from the
image table (ray_serve_ha/charts/images.py) and the models table (weights), compile and load
times from the accelerator table; the transfer rates below are assumptions.
`python -m ray_serve_ha.charts.replica_start` prints the docs' tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ray_serve_ha.charts.accelerators import ACCELERATORS, Accelerator
from ray_serve_ha.charts.images import COMPILED_ARTIFACTS_GB, SERVING_IMAGES
from ray_serve_ha.charts.models import DEFAULT_MODEL, Model
from ray_serve_ha.charts.serve_config import COMPILED_ARTIFACT_ENGINES

# Assumed rates, MB/s: an image pull from ECR in the region (download and unpack), the
# weights from the Hugging Face Hub (huggingface-hub 2.x's Xet transfer), S3 in the region.
IMAGE_PULL_MB_S = 200
HUB_MB_S = 300
S3_MB_S = 300
# From an instance's launch to its node Ready (EC2 boot, kubelet joins), and from the pod's
# start to its replica placed (Ray worker joins the cluster, Serve places the replica).
NODE_LAUNCH_S = 120
RAY_JOIN_S = 15
# The RayService's initializing time-out: the slowest first start, with the node's launch,
# twice over, in whole minutes of this step.
INITIALIZING_TIMEOUT_FACTOR = 2
INITIALIZING_TIMEOUT_STEP_MIN = 5


@dataclass(frozen=True)
class Step:
    what: str
    assumption: str
    cached_s: int
    recompiling_s: int


def _transfer_s(gb: float, mb_s: int) -> int:
    return math.ceil(gb * 1000 / mb_s)


def replica_start(accelerator: Accelerator, model: Model = DEFAULT_MODEL) -> list[Step]:
    """From the node Ready to the replica serving: with the compiled-artifact cache (where the
    engine has one) and without it."""
    image = SERVING_IMAGES[accelerator.dockerfile]
    cache = accelerator.engine in COMPILED_ARTIFACT_ENGINES
    compile_with_cache = 0 if cache else accelerator.compile_s
    steps = [
        Step(f"image pull (≈{image.pulled_gb:g} GB of layers, ECR in the region)",
             f"≈{IMAGE_PULL_MB_S} MB/s pull and unpack", *[_transfer_s(image.pulled_gb, IMAGE_PULL_MB_S)] * 2),
        Step("Ray worker start, joins the cluster, replica placed", "", RAY_JOIN_S, RAY_JOIN_S),
        Step(f"weights (≈{model.weights_gb:g} GB, bf16) from the Hugging Face Hub", f"≈{HUB_MB_S} MB/s",
             *[_transfer_s(model.weights_gb, HUB_MB_S)] * 2),
    ]
    if cache:
        steps.append(Step(f"compiled artifacts from S3 (< {COMPILED_ARTIFACTS_GB:g} GB)", f"≈{S3_MB_S} MB/s",
                          _transfer_s(COMPILED_ARTIFACTS_GB, S3_MB_S), 0))
    steps += [
        Step("compile for the devices", "accelerator table", compile_with_cache, accelerator.compile_s),
        Step("load onto the devices and warm up", "accelerator table", accelerator.load_s, accelerator.load_s),
    ]
    return steps


def start_seconds(accelerator: Accelerator, *, cached: bool, model: Model = DEFAULT_MODEL) -> int:
    return sum(s.cached_s if cached else s.recompiling_s for s in replica_start(accelerator, model))


def initializing_timeout_minutes(accelerator: Accelerator, model: Model = DEFAULT_MODEL) -> int:
    """`ray.io/initializing-timeout`: KubeRay gives up for good on a RayService that has not
    been Ready this long since its creation. A first deploy launches a node and compiles."""
    first_start = NODE_LAUNCH_S + start_seconds(accelerator, cached=False, model=model)
    minutes = INITIALIZING_TIMEOUT_FACTOR * first_start / 60
    return math.ceil(minutes / INITIALIZING_TIMEOUT_STEP_MIN) * INITIALIZING_TIMEOUT_STEP_MIN


def nat_traffic_gb(
    accelerator: Accelerator, *, s3_endpoint: bool, cached: bool = True, model: Model = DEFAULT_MODEL
) -> float:
    """What one replica start sends through the NAT gateways: ECR's image layers and the
    compiled artifacts come from S3 (an S3 gateway endpoint takes them off the NAT path; ECR's
    API and manifests are kilobytes), the weights from the Hugging Face Hub (the internet)."""
    image = SERVING_IMAGES[accelerator.dockerfile]
    from_s3 = image.pulled_gb + (
        COMPILED_ARTIFACTS_GB if cached and accelerator.engine in COMPILED_ARTIFACT_ENGINES else 0
    )
    return model.weights_gb + (0 if s3_endpoint else from_s3)


def budget_table(accelerator: Accelerator) -> str:
    rows = ["| step | assumption | with the cache | recompiling |", "|---|---|---|---|"]
    for step in replica_start(accelerator):
        cells = (f"≈{seconds} s" if seconds else "—" for seconds in (step.cached_s, step.recompiling_s))
        rows.append(f"| {step.what} | {step.assumption} | {' | '.join(cells)} |")
    total = [start_seconds(accelerator, cached=cached) / 60 for cached in (True, False)]
    rows.append(f"| **total** | | **≈{total[0]:.1f} min** | **≈{total[1]:.1f} min** |")
    return "\n".join(rows)


def nat_table() -> str:
    rows = ["| accelerator | NAT traffic per replica start, no endpoints | with the S3 gateway endpoint | "
            "initializing time-out |", "|---|---|---|---|"]
    for accelerator in ACCELERATORS.values():
        rows.append(
            f"| {accelerator.name} | ≈{nat_traffic_gb(accelerator, s3_endpoint=False):g} GB | "
            f"≈{nat_traffic_gb(accelerator, s3_endpoint=True):g} GB | {initializing_timeout_minutes(accelerator)} min |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    for accelerator in ACCELERATORS.values():
        print(f"{accelerator.name}:\n{budget_table(accelerator)}\n")
    print(nat_table())
