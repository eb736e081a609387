"""What both benchmark jobs share: joining the Ray cluster, and running a benchmark to the
result lines a user reads (`training time: … s`, `prediction time: … s`) and an exit status.

Shipped beside the job scripts (the job's working directory, or the ConfigMap on a team's
head pod), so the scripts import it as a plain module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

# On an autoscaling cluster the workers' nodes may take minutes to appear (Karpenter, then the
# image pull); with Ray Train's 60 s default every such wait is a logged startup failure.
WORKER_GROUP_START_TIMEOUT_S = "900"


def connect(cpus: int) -> None:
    if os.environ.get("RAY_ADDRESS"):
        import ray

        ray.init()  # the cluster this job was submitted to
        return
    # On its own: a private local instance on loopback only (read when Ray is imported;
    # Ray's default is the machine's outward IP), never somebody else's cluster.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(address="local", num_cpus=cpus, include_dashboard=False)


def run_benchmark(
    benchmark: str, args: argparse.Namespace, run: Callable[[argparse.Namespace], dict[str, Any]]
) -> int:
    """Runs `run(args)` on the cluster, prints the result lines and a JSON summary; 1 on any
    failure or an accuracy below --min-accuracy."""
    # Read by Ray Train when the trainer starts, and passed on to its controller.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", WORKER_GROUP_START_TIMEOUT_S)
    try:
        connect(args.workers * args.cpus_per_worker)
        summary = run(args)
    except Exception as error:
        print(f"{benchmark} benchmark failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"training time: {summary['training_time_s']:.2f} s")
    print(f"prediction time: {summary['prediction_time_s']:.2f} s")
    print(f"accuracy: {summary['accuracy']:.4f}")
    print(json.dumps(summary, sort_keys=True), flush=True)
    if summary["accuracy"] < args.min_accuracy:
        print(
            f"{benchmark} benchmark failed: accuracy {summary['accuracy']:.4f} is below "
            f"--min-accuracy {args.min_accuracy}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0
