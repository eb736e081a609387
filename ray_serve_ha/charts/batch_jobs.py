"""Benchmark RayJobs on a batch team's Ray cluster (ray_serve_ha/charts/batch.py), from one registry.

A job is a script in batch/ (its name in `batch.JOB_SCRIPTS`) plus one `BatchJob` entry in
`JOBS` here: the dataclass of its arguments and how they become its command line. The
RayJob itself (on the team's long-lived cluster, its logs in the submitter Job), the
placement of its Ray Train workers and the name limits are common to every job.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cdk8s
from constructs import Construct

from batch import JOB_SCRIPTS
from ray_serve_ha.charts.batch import SCRIPTS_MOUNT_PATH, TEAM_LABEL, BatchTeam, raycluster_name, worker_resources
from ray_serve_ha.charts.objects import add_api_object
from ray_serve_ha.charts.ray_pods import DNS_1035_LABEL, MAX_RAYJOB_NAME_LENGTH


def _check_positive(what: str, arguments: Any, fields: tuple[str, ...]) -> None:
    for field in fields:
        value = getattr(arguments, field)
        if value is not None and value < 1:
            raise ValueError(f"{what} {field}={value} must be at least 1")


@dataclass(frozen=True)
class XGBoostBenchmark:
    """batch/xgboost_benchmark.py's arguments. Workers and CPUs default to the team's workers."""

    rows: int = 100_000
    features: int = 20
    rounds: int = 50
    workers: int | None = None
    cpus_per_worker: int | None = None

    def __post_init__(self) -> None:
        _check_positive("XGBoost benchmark", self, ("rows", "features", "rounds", "workers", "cpus_per_worker"))


@dataclass(frozen=True)
class PyTorchBenchmark:
    """batch/pytorch_benchmark.py's arguments. Workers and CPUs default to the team's workers."""

    rows: int = 100_000
    features: int = 20
    epochs: int = 5
    batch_size: int = 256
    workers: int | None = None
    cpus_per_worker: int | None = None

    def __post_init__(self) -> None:
        _check_positive(
            "PyTorch benchmark", self, ("rows", "features", "epochs", "batch_size", "workers", "cpus_per_worker")
        )


@dataclass(frozen=True)
class Placement:
    """Where a job's Ray Train workers go on the team's worker pods."""

    workers: int
    cpus_per_worker: int
    use_gpu: bool


def placement(team: BatchTeam, workers: int | None, cpus_per_worker: int | None, rows: int) -> Placement:
    """Ray Train workers for a job: by default one per worker pod (one per device where the
    team's accelerator trains on its devices: GPUs)."""
    resources = worker_resources(team)
    pod_cpus = int(resources.cpu)
    accelerator = team.accelerator
    use_gpu = accelerator is not None and accelerator.train_on_devices
    per_pod = resources.devices if use_gpu else 1
    cpus = cpus_per_worker or pod_cpus // per_pod
    count = workers or team.max_workers * per_pod
    fit_per_pod = min(pod_cpus // cpus, per_pod if use_gpu else pod_cpus)
    if count > team.max_workers * fit_per_pod:
        raise ValueError(
            f"{count} Ray Train workers of {cpus} CPUs do not fit on team {team.name!r}'s "
            f"{team.max_workers} worker pods of {pod_cpus} CPUs"
        )
    if rows < count:
        raise ValueError(f"{rows} rows are fewer than the {count} Ray Train workers: every worker needs rows")
    return Placement(workers=count, cpus_per_worker=cpus, use_gpu=use_gpu)


def _xgboost_command_line(benchmark: XGBoostBenchmark, where: Placement) -> list[str]:
    return [
        "--rows", str(benchmark.rows),
        "--features", str(benchmark.features),
        "--rounds", str(benchmark.rounds),
        "--workers", str(where.workers),
        "--cpus-per-worker", str(where.cpus_per_worker),
    ]  # fmt: skip


def _pytorch_command_line(benchmark: PyTorchBenchmark, where: Placement) -> list[str]:
    args = [
        "--rows", str(benchmark.rows),
        "--features", str(benchmark.features),
        "--epochs", str(benchmark.epochs),
        "--batch-size", str(benchmark.batch_size),
        "--workers", str(where.workers),
        "--cpus-per-worker", str(where.cpus_per_worker),
    ]  # fmt: skip
    if where.use_gpu:
        args.append("--use-gpu")
    return args


@dataclass(frozen=True)
class BatchJob:
    """One job of batch/: its name (a key of `batch.JOB_SCRIPTS`), the dataclass of its
    arguments (with `rows`, `workers` and `cpus_per_worker`), and its command line."""

    name: str
    arguments: type[Any]
    command_line: Callable[[Any, Placement], list[str]]

    @property
    def script(self) -> str:
        return JOB_SCRIPTS[self.name]


JOBS: dict[str, BatchJob] = {
    job.name: job
    for job in (
        BatchJob("xgboost", XGBoostBenchmark, _xgboost_command_line),
        BatchJob("pytorch", PyTorchBenchmark, _pytorch_command_line),
    )
}


def rayjob(team: BatchTeam, job: str, arguments: Any = None, *, name: str | None = None) -> dict[str, Any]:
    """A RayJob that runs `job` (a key of JOBS) with `arguments` (its dataclass; None: the
    defaults) on the team's cluster."""
    entry = JOBS[job]
    if arguments is None:
        arguments = entry.arguments()
    if not isinstance(arguments, entry.arguments):
        raise ValueError(f"job {job!r} takes {entry.arguments.__name__}, not {type(arguments).__name__}")
    name = name or f"{team.name}-{job}"
    if len(name) > MAX_RAYJOB_NAME_LENGTH or not DNS_1035_LABEL.match(name):
        raise ValueError(
            f"RayJob name {name!r} must be a DNS-1035 label of at most {MAX_RAYJOB_NAME_LENGTH} characters"
        )
    where = placement(team, arguments.workers, arguments.cpus_per_worker, arguments.rows)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "namespace": team.namespace, "labels": {TEAM_LABEL: team.name}},
        "spec": {
            # The team's long-lived cluster, not one made for this job.
            "clusterSelector": {"ray.io/cluster": raycluster_name(team)},
            # No entrypoint resources: the driver then runs on the head, where the scripts are.
            "entrypoint": shlex.join(
                ["python", f"{SCRIPTS_MOUNT_PATH}/{entry.script}", *entry.command_line(arguments, where)]
            ),
            # A submitter Job runs `ray job submit` and tails the job's logs, so the results
            # are in `kubectl logs job/<name>` as well as on the dashboard. (SidecarMode
            # needs a cluster of the job's own; the operator refuses it with clusterSelector.)
            "submissionMode": "K8sJobMode",
            # The cluster is the team's: never deleted with a job. With this false the operator
            # refuses any ttlSecondsAfterFinished above 0, so none is set.
            "shutdownAfterJobFinishes": False,
            # A benchmark is not retried: a second attempt would blur what the numbers mean.
            "backoffLimit": 0,
        },
    }


def xgboost_rayjob(
    team: BatchTeam, benchmark: XGBoostBenchmark = XGBoostBenchmark(), *, name: str | None = None
) -> dict[str, Any]:
    """A RayJob that runs batch/xgboost_benchmark.py on the team's cluster."""
    return rayjob(team, "xgboost", benchmark, name=name)


def pytorch_rayjob(
    team: BatchTeam, benchmark: PyTorchBenchmark = PyTorchBenchmark(), *, name: str | None = None
) -> dict[str, Any]:
    """A RayJob that runs batch/pytorch_benchmark.py on the team's cluster (on the GPUs of
    an accelerator that trains on its devices)."""
    return rayjob(team, "pytorch", benchmark, name=name)


class BatchJobsChart(cdk8s.Chart):
    """RayJobs on a team's cluster, one per job in `jobs` (job name -> arguments; default:
    every job of JOBS with its default arguments). A RayJob runs once: delete it to run it
    again."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        team: BatchTeam,
        jobs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.team = team
        chosen = {name: None for name in JOBS} if jobs is None else dict(jobs)
        unknown = sorted(set(chosen) - set(JOBS))
        if unknown:
            raise ValueError(f"unknown job(s) {', '.join(unknown)}; jobs: {', '.join(JOBS)}")
        self.rayjobs = [add_api_object(self, rayjob(team, name, arguments)) for name, arguments in chosen.items()]
