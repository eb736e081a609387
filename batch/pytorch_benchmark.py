"""PyTorch benchmark: a small MLP trained data-parallel (DDP) with Ray Train, then prediction.

Each Ray Train worker makes its own equal-sized shard of one synthetic binary classification
problem (the same hidden rule everywhere, different rows per worker), so no data moves and
the numbers measure training and prediction, not I/O. Prints

    training time: 12.34 s
    prediction time: 1.23 s

and a final JSON line with every number. Exits non-zero when the run fails or the model is
worse than `--min-accuracy`.

Runs as a Ray job (`RAY_ADDRESS` set by the job submission server or the RayJob) or on its
own (then it starts a private local Ray instance sized for the run). It imports only what
ships beside it (the team chart's ConfigMap, or the job's working directory): job_runner.py
and its argument spec, ray_serve_ha/charts/job_args.py, which the RayJob's command line is
written from. The training function travels to the workers by value, so the workers need
torch but not this file.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

# Shipped beside this script (the job runs with this folder on sys.path).
from job_runner import run_benchmark

from ray_serve_ha.charts.job_args import PYTORCH

BENCHMARK = PYTORCH.job
# Held-out rows, as a share of the training rows.
TEST_SHARE = 0.2
LABEL_SEED = 7


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The arguments, as job_args.PYTORCH declares them (defaults, bounds)."""
    return PYTORCH.parse(argv)


def make_classification(rows: int, features: int, seed: int):
    """Rows of one fixed, learnable rule (a linear score plus an interaction), with noise."""
    import torch

    weights = torch.randn(features, generator=torch.Generator().manual_seed(LABEL_SEED))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=generator)
    noise = 0.5 * torch.randn(rows, generator=generator)
    score = x @ weights + 1.5 * x[:, 0] * x[:, -1] + noise
    return x, (score > 0).float()


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from torch import nn

    torch.set_num_threads(config["cpus_per_worker"])
    torch.manual_seed(0)  # DDP also broadcasts rank 0's initial weights
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    features = config["features"]
    # Equal shards: with DDP every worker must run the same number of steps.
    train_x, train_y = make_classification(config["rows"] // world_size, features, seed=1000 + rank)
    test_rows = max(1, int(config["rows"] * TEST_SHARE) // world_size)
    test_x, test_y = make_classification(test_rows, features, seed=2000 + rank)
    train_x, train_y = train_x.to(device), train_y.to(device)
    test_x, test_y = test_x.to(device), test_y.to(device)

    hidden = config["hidden"]
    model = ray.train.torch.prepare_model(
        nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    batch_size = config["batch_size"]
    order = torch.Generator().manual_seed(rank)

    start = time.perf_counter()
    model.train()
    for _ in range(config["epochs"]):
        permutation = torch.randperm(len(train_x), generator=order).to(device)
        for begin in range(0, len(train_x), batch_size):
            batch = permutation[begin : begin + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(train_x[batch]).squeeze(1), train_y[batch])
            loss.backward()  # DDP all-reduces the gradients here
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    training_s = time.perf_counter() - start

    # Every worker holds the same weights: predict with the plain module, no DDP hooks.
    predictor = getattr(model, "module", model)
    predictor.eval()
    start = time.perf_counter()
    with torch.no_grad():
        predicted = predictor(test_x).squeeze(1) > 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    prediction_s = time.perf_counter() - start

    correct = float((predicted == (test_y > 0.5)).sum())
    seconds = torch.tensor([training_s, prediction_s], dtype=torch.float64, device=device)
    counts = torch.tensor([correct, float(len(test_y)), float(len(train_y))], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        # The slowest worker is the time the cluster took.
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    seconds, counts = seconds.tolist(), counts.tolist()
    # Rank 0's return value is the run's result (no checkpoint, so no shared storage needed).
    return {
        "training_time_s": seconds[0],
        "prediction_time_s": seconds[1],
        "accuracy": counts[0] / counts[1],
        "train_rows": int(counts[2]),
        "test_rows": int(counts[1]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "rows": args.rows,
            "features": args.features,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "hidden": args.hidden,
            "cpus_per_worker": args.cpus_per_worker,
        },
        scaling_config=ScalingConfig(
            num_workers=args.workers,
            # With use_gpu, Ray Train adds one GPU per worker to these.
            use_gpu=args.use_gpu,
            resources_per_worker={"CPU": args.cpus_per_worker},
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
        "use_gpu": args.use_gpu,
        "features": args.features,
        "epochs": args.epochs,
        **result.return_value,
        # Includes starting the workers, setting up DDP and making the data.
        "fit_wall_time_s": round(fit_s, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    return run_benchmark(BENCHMARK, parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
