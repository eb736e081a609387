"""XGBoost benchmark: data-parallel training with Ray Train, then prediction on held-out rows.

Each Ray Train worker makes its own shard of one synthetic binary classification problem
(the same hidden rule everywhere, different rows per worker), so no data moves and the
numbers measure training and prediction, not I/O. Prints

    training time: 12.34 s
    prediction time: 1.23 s

and a final JSON line with every number. Exits non-zero when the run fails or the model is
worse than `--min-accuracy`.

Runs as a Ray job (`RAY_ADDRESS` set by the job submission server or the RayJob) or on its
own (then it starts a private local Ray instance sized for the run). The script is
self-contained on purpose: the Kubernetes RayJob runs it from a ConfigMap mount, and the
training function travels to the workers by value, so the workers need xgboost but not
this file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

# On an autoscaling cluster the workers' nodes may take minutes to appear (Karpenter, then the
# image pull); with Ray Train's 60 s default every such wait is a logged startup failure.
WORKER_GROUP_START_TIMEOUT_S = "900"
BENCHMARK = "xgboost"
# Held-out rows, as a share of the training rows.
TEST_SHARE = 0.2
LABEL_SEED = 7


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="training rows, over all workers")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=50, help="boosting rounds")
    parser.add_argument("--max-depth", type=int, default=6)
    parser.add_argument("--min-accuracy", type=float, default=0.0, help="fail below this test accuracy")
    args = parser.parse_args(argv)
    for name in ("rows", "features", "workers", "cpus_per_worker", "rounds", "max_depth"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rows < args.workers:
        parser.error(f"--rows {args.rows} is fewer than --workers {args.workers}: every worker needs rows")
    return args


def shard_rows(total: int, rank: int, world_size: int) -> int:
    """Rows of worker `rank` when `total` rows are spread as evenly as possible."""
    return total // world_size + (1 if rank < total % world_size else 0)


def make_classification(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of one fixed, learnable rule (a linear score plus an interaction), with noise."""
    weights = np.random.default_rng(LABEL_SEED).normal(size=features)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    score = x @ weights + 1.5 * x[:, 0] * x[:, -1] + rng.normal(scale=0.5, size=rows)
    return x, (score > 0).astype(np.float32)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    import ray.train
    import xgboost
    from xgboost import collective

    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    features = config["features"]
    train_x, train_y = make_classification(
        shard_rows(config["rows"], rank, world_size), features, seed=1000 + rank
    )
    test_rows = max(world_size, int(config["rows"] * TEST_SHARE))
    test_x, test_y = make_classification(shard_rows(test_rows, rank, world_size), features, seed=2000 + rank)

    params = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_depth": config["max_depth"],
        "eta": 0.3,
        "nthread": config["cpus_per_worker"],
    }
    # Ray Train has started XGBoost's collective (rabit) for the workers: every histogram
    # is all-reduced, so each worker ends with the same model.
    start = time.perf_counter()
    booster = xgboost.train(params, xgboost.DMatrix(train_x, label=train_y), num_boost_round=config["rounds"])
    training_s = time.perf_counter() - start

    start = time.perf_counter()
    probabilities = booster.predict(xgboost.DMatrix(test_x))
    prediction_s = time.perf_counter() - start

    correct = float(((probabilities > 0.5) == (test_y > 0.5)).sum())
    seconds = np.array([training_s, prediction_s], dtype=np.float64)
    counts = np.array([correct, float(len(test_y)), float(len(train_y))], dtype=np.float64)
    if collective.is_distributed():
        # The slowest worker is the time the cluster took.
        seconds = collective.allreduce(seconds, collective.Op.MAX)
        counts = collective.allreduce(counts, collective.Op.SUM)
    # Rank 0's return value is the run's result (no checkpoint, so no shared storage needed).
    return {
        "training_time_s": float(seconds[0]),
        "prediction_time_s": float(seconds[1]),
        "accuracy": float(counts[0] / counts[1]),
        "train_rows": int(counts[2]),
        "test_rows": int(counts[1]),
    }


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


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer

    trainer = XGBoostTrainer(
        train_loop_per_worker,
        train_loop_config={
            "rows": args.rows,
            "features": args.features,
            "rounds": args.rounds,
            "max_depth": args.max_depth,
            "cpus_per_worker": args.cpus_per_worker,
        },
        scaling_config=ScalingConfig(
            num_workers=args.workers, resources_per_worker={"CPU": args.cpus_per_worker}
        ),
        run_config=RunConfig(name=f"{BENCHMARK}-benchmark-{int(time.time())}"),
    )
    start = time.perf_counter()
    result = trainer.fit()
    fit_s = time.perf_counter() - start
    return {
        "benchmark": BENCHMARK,
        "workers": args.workers,
        "cpus_per_worker": args.cpus_per_worker,
        "features": args.features,
        "rounds": args.rounds,
        **result.return_value,
        # Includes starting the workers and making the data.
        "fit_wall_time_s": round(fit_s, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Read by Ray Train when the trainer starts, and passed on to its controller.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", WORKER_GROUP_START_TIMEOUT_S)
    try:
        connect(args.workers * args.cpus_per_worker)
        summary = run(args)
    except Exception as error:  # noqa: BLE001 - any failure is the job's verdict
        print(f"{BENCHMARK} benchmark failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"training time: {summary['training_time_s']:.2f} s")
    print(f"prediction time: {summary['prediction_time_s']:.2f} s")
    print(f"accuracy: {summary['accuracy']:.4f}")
    print(json.dumps(summary, sort_keys=True), flush=True)
    if summary["accuracy"] < args.min_accuracy:
        print(
            f"{BENCHMARK} benchmark failed: accuracy {summary['accuracy']:.4f} is below "
            f"--min-accuracy {args.min_accuracy}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
