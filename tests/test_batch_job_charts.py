"""Batch teams' RayJobs: they run on the team cluster, which outlives them, with command lines
written from the one argument spec each job script parses (ray_serve_ha/charts/job_args.py),
and a job is its spec plus one registry entry."""

from __future__ import annotations

import shlex
from dataclasses import replace

import cdk8s
import pytest

from batch import pytorch_benchmark, xgboost_benchmark
from ray_serve_ha.assets import asset_path
from ray_serve_ha.charts.accelerators import NVIDIA
from ray_serve_ha.charts.batch import (
    SCRIPTS_MOUNT_PATH,
    team_job_scripts,
    team_raycluster,
)
from ray_serve_ha.charts.batch_jobs import (
    BatchJobsChart,
    PyTorchBenchmark,
    XGBoostBenchmark,
    pytorch_rayjob,
    xgboost_rayjob,
)
from ray_serve_ha.charts.batch_teams import (
    AcceleratorWorkerShape,
    BatchTeam,
    raycluster_name,
)
from tests.batch_team_inputs import CPU_TEAM, NEURON_TEAM, TEAMS, worker_spec
from tests.crd_schemas import schema_errors

# --- RayJobs ---------------------------------------------------------------------------

@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
@pytest.mark.parametrize("make_job", [xgboost_rayjob, pytorch_rayjob], ids=["xgboost", "pytorch"])
def test_rayjobs_run_on_the_team_cluster_which_outlives_them(team, make_job):
    job = make_job(team)
    spec = job["spec"]
    assert job["metadata"]["namespace"] == team.namespace
    assert spec["clusterSelector"] == {"ray.io/cluster": raycluster_name(team)}
    assert team_raycluster(team)["metadata"]["name"] == raycluster_name(team)
    assert "rayClusterSpec" not in spec
    # The operator's rules for clusterSelector jobs (ValidateRayJobSpec): no SidecarMode, no
    # suspend, and no TTL unless the cluster is shut down with the job.
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is False
    assert "ttlSecondsAfterFinished" not in spec and "suspend" not in spec
    # Without entrypoint resources the driver runs on the head, which mounts the scripts.
    assert not {"entrypointNumCpus", "entrypointNumGpus", "entrypointResources"} & set(spec)
    assert spec["backoffLimit"] == 0
    assert len(job["metadata"]["name"]) <= 47


@pytest.mark.parametrize("team", TEAMS, ids=lambda t: t.name)
def test_rayjob_entrypoints_run_a_mounted_script_with_arguments_it_accepts(team):
    for job, script in ((xgboost_rayjob(team), xgboost_benchmark), (pytorch_rayjob(team), pytorch_benchmark)):
        python, path, *args = shlex.split(job["spec"]["entrypoint"])
        assert python == "python"
        assert path.startswith(f"{SCRIPTS_MOUNT_PATH}/") and path.rsplit("/", 1)[1] in team_job_scripts(team)["data"]
        parsed = script.parse_args(args)
        # One Ray Train worker per worker pod, taking the pod's CPUs.
        assert parsed.workers == team.max_workers
        assert parsed.cpus_per_worker == int(worker_spec(team)["containers"][0]["resources"]["limits"]["cpu"])


def test_data_size_and_epochs_are_configurable():
    xgb = xgboost_rayjob(
        CPU_TEAM, XGBoostBenchmark(rows=5_000_000, features=50, rounds=200, workers=2, cpus_per_worker=2)
    )
    parsed = xgboost_benchmark.parse_args(shlex.split(xgb["spec"]["entrypoint"])[2:])
    assert (parsed.rows, parsed.features, parsed.rounds, parsed.workers, parsed.cpus_per_worker) == (
        5_000_000, 50, 200, 2, 2,
    )  # fmt: skip
    torch_job = pytorch_rayjob(NEURON_TEAM, PyTorchBenchmark(rows=1_000_000, epochs=10, batch_size=512))
    parsed = pytorch_benchmark.parse_args(shlex.split(torch_job["spec"]["entrypoint"])[2:])
    assert (parsed.rows, parsed.epochs, parsed.batch_size, parsed.use_gpu) == (1_000_000, 10, 512, False)


def test_nvidia_teams_train_pytorch_on_their_gpus():
    team = BatchTeam(
        name="speech",
        namespace="team-speech",
        ray_image="111122223333.dkr.ecr.us-east-2.amazonaws.com/ray-batch:nvidia",
        worker_shape=AcceleratorWorkerShape(accelerator=NVIDIA, instance_type="g5.12xlarge"),
        max_workers=2,
    )
    parsed = pytorch_benchmark.parse_args(shlex.split(pytorch_rayjob(team)["spec"]["entrypoint"])[2:])
    # g5.12xlarge: 4 GPUs and 47 CPUs per worker pod; one Ray Train worker per GPU.
    assert (parsed.use_gpu, parsed.workers, parsed.cpus_per_worker) == (True, 8, 11)
    assert schema_errors(team_raycluster(team)) == [] and schema_errors(pytorch_rayjob(team)) == []




# --- the job registry ------------------------------------------------------------------

def test_every_job_script_has_a_registry_entry():
    from ray_serve_ha.charts.batch_jobs import JOBS
    from ray_serve_ha.charts.job_args import JOB_ARGUMENTS

    assert set(JOBS) == set(JOB_ARGUMENTS)
    assert all(JOBS[name].spec is spec for name, spec in JOB_ARGUMENTS.items())
    assert all((asset_path("batch") / job.script).is_file() for job in JOBS.values())


@pytest.mark.parametrize(
    ("script", "make_job"), [(xgboost_benchmark, xgboost_rayjob), (pytorch_benchmark, pytorch_rayjob)],
    ids=["xgboost", "pytorch"],
)
def test_the_chart_and_the_script_read_one_argument_spec(script, make_job):
    # A RayJob with no arguments runs what the script runs by default (workers, CPUs and GPUs
    # excepted: the team's pods decide those).
    from ray_serve_ha.charts.job_args import PLACEMENT

    def chosen(args):
        return {k: v for k, v in vars(args).items() if k not in PLACEMENT}

    by_default = script.parse_args([])
    from_rayjob = script.parse_args(shlex.split(make_job(CPU_TEAM)["spec"]["entrypoint"])[2:])
    assert chosen(from_rayjob) == chosen(by_default)
    assert by_default.rows == 100_000


def test_a_new_job_is_its_spec_and_one_registry_entry(monkeypatch):
    from dataclasses import dataclass as frozen

    from ray_serve_ha.charts.batch_jobs import JOBS, BatchJob
    from ray_serve_ha.charts.job_args import JOB_ARGUMENTS, JobArguments, Option

    spec = JobArguments("echo", "echo_benchmark.py", "Echo", (Option("rows", 10), Option("workers", 1)))

    @frozen(frozen=True)
    class Echo:
        rows: int = spec.default("rows")
        workers: int | None = None
        cpus_per_worker: int | None = None

    monkeypatch.setitem(JOB_ARGUMENTS, "echo", spec)
    monkeypatch.setitem(JOBS, "echo", BatchJob(spec, Echo))
    rayjobs = [o for o in BatchJobsChart(cdk8s.App(), "jobs", team=CPU_TEAM).to_json() if o["kind"] == "RayJob"]
    assert [job["metadata"]["name"] for job in rayjobs] == ["analytics-xgboost", "analytics-pytorch", "analytics-echo"]
    echo = rayjobs[-1]
    assert schema_errors(echo) == []
    # The placement's workers where the spec has the option; no CPUs where it has none.
    assert shlex.split(echo["spec"]["entrypoint"]) == [
        "python",
        f"{SCRIPTS_MOUNT_PATH}/echo_benchmark.py",
        "--rows",
        "10",
        "--workers",
        "4",
    ]


def test_a_chart_of_chosen_jobs_and_their_arguments():
    chart = BatchJobsChart(cdk8s.App(), "jobs", team=CPU_TEAM, jobs={"pytorch": PyTorchBenchmark(epochs=2)})
    (job,) = chart.to_json()
    assert job["metadata"]["name"] == "analytics-pytorch"
    assert "--epochs 2" in job["spec"]["entrypoint"]


def test_unknown_jobs_and_wrong_arguments_are_refused():
    from ray_serve_ha.charts.batch_jobs import rayjob

    with pytest.raises(ValueError, match=r"^unknown job\(s\) lightgbm; jobs: xgboost, pytorch$"):
        BatchJobsChart(cdk8s.App(), "jobs", team=CPU_TEAM, jobs={"lightgbm": None})
    with pytest.raises(ValueError, match=r"^job 'xgboost' takes XGBoostBenchmark, not PyTorchBenchmark$"):
        rayjob(CPU_TEAM, "xgboost", PyTorchBenchmark())


def test_team_names_leave_room_for_the_longest_job_suffix():
    from ray_serve_ha.charts.batch_teams import max_team_name_length
    from ray_serve_ha.charts.job_args import JOB_ARGUMENTS
    from ray_serve_ha.charts.ray_pods import MAX_RAYJOB_NAME_LENGTH

    longest = max(JOB_ARGUMENTS, key=len)
    team = replace(CPU_TEAM, name="t" * max_team_name_length())
    assert len(f"{team.name}-{longest}") == MAX_RAYJOB_NAME_LENGTH
    assert xgboost_rayjob(team) and pytorch_rayjob(team)


def test_the_ray_pod_module_needs_no_cdk8s():
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = "import sys, ray_serve_ha.charts.ray_pods; sys.exit('cdk8s' in sys.modules or 'constructs' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_the_rayservice_and_team_clusters_share_their_pod_builders():
    # One builder for each: resources, head group, worker group, autoscaler (ray_serve_ha/charts/ray_pods.py).
    from ray_serve_ha.charts import batch, rayservice
    from ray_serve_ha.charts.ray_pods import autoscaling, container_resources, head_group, worker_group

    for module in (batch, rayservice):
        assert module.container_resources is container_resources
        assert module.head_group is head_group
        assert module.worker_group is worker_group
        assert module.autoscaling is autoscaling
        assert not hasattr(module, "_resources")
