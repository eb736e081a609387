"""Benchmark RayJobs on a batch team's Ray cluster (batch.py), from one registry.

A job is a script in batch/ plus its argument spec (job_args.py: names, defaults, bounds),
which the script's parser reads too, and one `BatchJob` entry in `JOBS` here: the
dataclass of the arguments a chart may set. The RayJob itself (on the team's long-lived
cluster, its logs in the submitter Job), the placement of its Ray Train workers and the
name limits are common to every job.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cdk8s
from constructs import Construct

from ray_serve_ha.charts.batch import SCRIPTS_MOUNT_PATH
from ray_serve_ha.charts.batch_teams import TEAM_LABEL, BatchTeam, raycluster_name, worker_resources
from ray_serve_ha.charts.job_args import PLACEMENT, PYTORCH, XGBOOST, JobArguments
from ray_serve_ha.charts.objects import add_api_object
from ray_serve_ha.charts.ray_pods import DNS_1035_LABEL, MAX_RAYJOB_NAME_LENGTH


def _check_minimums(spec: JobArguments, arguments: Any) -> None:
    what = spec.description.split(":", 1)[0]
    for field in dataclasses.fields(arguments):
        value, minimum = getattr(arguments, field.name), spec.option(field.name).minimum
        if value is not None and minimum is not None and value < minimum:
            raise ValueError(f"{what} {field.name}={value} must be at least {minimum}")


@dataclass(frozen=True)
class XGBoostBenchmark:
    """batch/xgboost_benchmark.py's arguments (defaults: job_args.XGBOOST). Workers and CPUs
    default to the team's workers."""

    rows: int = XGBOOST.default("rows")
    features: int = XGBOOST.default("features")
    rounds: int = XGBOOST.default("rounds")
    workers: int | None = None
    cpus_per_worker: int | None = None

    def __post_init__(self) -> None:
        _check_minimums(XGBOOST, self)


@dataclass(frozen=True)
class PyTorchBenchmark:
    """batch/pytorch_benchmark.py's arguments (defaults: job_args.PYTORCH). Workers and CPUs
    default to the team's workers."""

    rows: int = PYTORCH.default("rows")
    features: int = PYTORCH.default("features")
    epochs: int = PYTORCH.default("epochs")
    batch_size: int = PYTORCH.default("batch_size")
    workers: int | None = None
    cpus_per_worker: int | None = None

    def __post_init__(self) -> None:
        _check_minimums(PYTORCH, self)


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


@dataclass(frozen=True)
class BatchJob:
    """One job of batch/: its argument spec (job_args.py: script, options) and the
    dataclass of the arguments a chart sets (with `rows`, `workers` and `cpus_per_worker`)."""

    spec: JobArguments
    arguments: type[Any]

    @property
    def name(self) -> str:
        return self.spec.job

    @property
    def script(self) -> str:
        return self.spec.script

    def command_line(self, arguments: Any, where: Placement) -> list[str]:
        """The script's arguments: the chart's values, with the placement's workers, CPUs and
        (for a job that has the option) GPUs."""
        values = {k: v for k, v in dataclasses.asdict(arguments).items() if k not in PLACEMENT}
        options = {option.name for option in self.spec.options}
        values.update({k: v for k, v in dataclasses.asdict(where).items() if k in options})
        return self.spec.command_line(values)


JOBS: dict[str, BatchJob] = {
    job.name: job for job in (BatchJob(XGBOOST, XGBoostBenchmark), BatchJob(PYTORCH, PyTorchBenchmark))
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
