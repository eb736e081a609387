"""XGBoost benchmark: data-parallel training with Ray Train, then prediction on held-out rows.

Each Ray Train worker makes its own shard of one synthetic binary classification problem
(the same hidden rule everywhere, different rows per worker), so no data moves and the
numbers measure training and prediction, not I/O. Prints

    training time: 12.34 s
    prediction time: 1.23 s

and a final JSON line with every number. Exits non-zero when the run fails or the model is
worse than `--min-accuracy`.

Runs as a Ray job (`RAY_ADDRESS` set by the job submission server or the RayJob) or on its
own (then it starts a private local Ray instance sized for the run). It imports only what
ships beside it (the team chart's ConfigMap, or the job's working directory): job_runner.py
and its argument spec, ray_serve_ha/charts/job_args.py, which the RayJob's command line is
written from. The training function travels to the workers by value, so the workers need
xgboost but not this file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

# Shipped beside this script (the job runs with this folder on sys.path).
from job_runner import run_benchmark

from ray_serve_ha.charts.job_args import XGBOOST

BENCHMARK = XGBOOST.job
# Held-out rows, as a share of the training rows.
TEST_SHARE = 0.2
LABEL_SEED = 7


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments, as job_args.XGBOOST declares them (defaults, bounds)."""
    return XGBOOST.parse(argv)


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
    return run_benchmark(BENCHMARK, parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
