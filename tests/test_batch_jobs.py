"""The benchmark jobs run for real: one small local Ray cluster (`ray start --head`, 2 CPUs,
loopback only) for the module, each job submitted through `batch.submit` as a team would.

The cluster is stopped by signalling the process group it was started in, never with
`ray stop` (which stops every Ray cluster on the machine).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from batch import pytorch_benchmark, xgboost_benchmark
from batch.submit import entrypoint, stage_working_dir, submit
from ray_serve_ha.charts.batch import job_files
from ray_serve_ha.charts.job_args import JOB_ARGUMENTS

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CLUSTER_CPUS = 2
START_TIMEOUT_S = 90
JOB_TIMEOUT_S = 240
# Ray's job log stream (aiohttp) warns about its own ssl argument.
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")

TRAINING_TIME = re.compile(r"^training time: \d+\.\d\d s$", re.MULTILINE)
PREDICTION_TIME = re.compile(r"^prediction time: \d+\.\d\d s$", re.MULTILINE)


def free_ports(count: int) -> list[int]:
    """Ports free on loopback now, all distinct (held open together while picked)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(closing(socket.socket())) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def summary_of(logs: str) -> dict:
    """The JSON line the benchmark prints last."""
    (line,) = [line for line in logs.splitlines() if line.startswith("{") and '"benchmark"' in line]
    return json.loads(line)


@dataclass(frozen=True)
class Cluster:
    dashboard_url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client_env(self) -> dict[str, str]:
        """A Ray client's environment for this cluster (as `batch.submit` documents it)."""
        return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}


@pytest.fixture(scope="module")
def ray_cluster():
    """A private Ray head on 127.0.0.1 with its own ports, temp dir and auth token."""
    temp_dir = tempfile.mkdtemp(prefix="rbatch-", dir="/tmp")  # short: Ray's socket paths have a limit
    gcs, dashboard, node_manager, object_manager, agent, agent_grpc, runtime_env, metrics, client = free_ports(9)
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",  # job entrypoints run `python`
        # Loopback only: with this off, Ray uses 127.0.0.1 for every address it hands out
        # (its default is the machine's outward IP, even with --node-ip-address 127.0.0.1).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # Every process of this cluster (Ray Train's helper actors included) talks to this
        # cluster, even while another one runs on the machine.
        "RAY_ADDRESS": f"127.0.0.1:{gcs}",
        # Token authentication, as the team clusters run it (KubeRay authOptions), with a
        # token of this cluster's own rather than the one in $HOME.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # The head writes its log through its own copy of the descriptor.
    # fmt: off
    with open(Path(temp_dir) / "ray-start.log", "wb") as log:
        head = subprocess.Popen(
            [
                str(VENV_BIN / "ray"), "start", "--head", "--block",
                "--node-ip-address", "127.0.0.1",
                "--port", str(gcs),
                "--num-cpus", str(CLUSTER_CPUS), "--num-gpus", "0",
                "--object-store-memory", str(256 * 1024**2),
                "--include-dashboard", "true",
                "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(dashboard),
                "--node-manager-port", str(node_manager),
                "--object-manager-port", str(object_manager),
                "--dashboard-agent-listen-port", str(agent),
                "--dashboard-agent-grpc-port", str(agent_grpc),
                "--runtime-env-agent-port", str(runtime_env),
                "--metrics-export-port", str(metrics),
                "--ray-client-server-port", str(client),
                "--temp-dir", temp_dir,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: every Ray process it starts is in it, so the teardown can
            # signal exactly these processes.
            start_new_session=True,
        )
    # fmt: on
    url = f"http://127.0.0.1:{dashboard}"
    cluster = Cluster(dashboard_url=url, token=token)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited with {head.returncode}:\n{_tail(Path(temp_dir) / 'ray-start.log')}")
            try:
                request = urllib.request.Request(f"{url}/api/version", headers=cluster.headers)
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not answer in {START_TIMEOUT_S} s")
            time.sleep(0.5)
        yield cluster
    finally:
        _stop_unfinished_jobs(cluster)
        _stop_process_group(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop_unfinished_jobs(cluster: Cluster) -> None:
    # Job drivers run in sessions of their own (Ray starts them so): stop them through the
    # API before the cluster goes, or a failed test could leave one behind.
    try:
        client = JobSubmissionClient(cluster.dashboard_url, headers=cluster.headers)
        for job in client.list_jobs():
            if not job.status.is_terminal():
                client.stop_job(job.submission_id)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(not j.status.is_terminal() for j in client.list_jobs()):
            time.sleep(0.5)
    except Exception:
        pass


def _stop_process_group(process: subprocess.Popen) -> None:
    pgid = process.pid  # start_new_session: the group id is the leader's pid
    # Ray's processes can hang on SIGTERM (gcs_server does): a short grace, then SIGKILL.
    for sig, grace_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                process.wait(timeout=5)
                return
            time.sleep(0.2)
    process.wait(timeout=5)


# --- the jobs on the cluster -----------------------------------------------------------

@pytest.mark.ray
def test_xgboost_job_trains_predicts_and_reports_its_times(ray_cluster):
    streamed: list[str] = []
    status, logs = submit(
        ray_cluster.dashboard_url,
        "xgboost",
        ["--rows", "2000", "--features", "10", "--rounds", "20", "--workers", "2", "--min-accuracy", "0.6"],
        timeout_s=JOB_TIMEOUT_S,
        on_log=streamed.append,
        headers=ray_cluster.headers,
    )
    assert status == JobStatus.SUCCEEDED, logs
    assert TRAINING_TIME.search(logs) and PREDICTION_TIME.search(logs), logs
    # Streamed as it ran, not only fetched at the end.
    assert TRAINING_TIME.search("".join(streamed))
    summary = summary_of(logs)
    assert summary["benchmark"] == "xgboost"
    assert (summary["workers"], summary["train_rows"], summary["test_rows"]) == (2, 2000, 400)
    assert summary["accuracy"] >= 0.6
    assert summary["training_time_s"] > 0 and summary["prediction_time_s"] > 0


@pytest.mark.ray
def test_pytorch_job_trains_predicts_and_reports_its_times(ray_cluster):
    status, logs = submit(
        ray_cluster.dashboard_url,
        "pytorch",
        ["--rows", "2000", "--features", "10", "--epochs", "2", "--workers", "2", "--min-accuracy", "0.6"],
        timeout_s=JOB_TIMEOUT_S,
        headers=ray_cluster.headers,
    )
    assert status == JobStatus.SUCCEEDED, logs
    assert TRAINING_TIME.search(logs) and PREDICTION_TIME.search(logs), logs
    summary = summary_of(logs)
    assert summary["benchmark"] == "pytorch"
    assert (summary["workers"], summary["train_rows"], summary["epochs"]) == (2, 2000, 2)
    assert summary["accuracy"] >= 0.6


@pytest.mark.ray
def test_a_failing_job_is_reported_failed_by_the_cli(ray_cluster):
    # Refused by the script's own checks before any training: a quick failure.
    result = subprocess.run(
        [sys.executable, "-m", "batch.submit", "--address", ray_cluster.dashboard_url, "--timeout", "120",
         "xgboost", "--rows", "1", "--workers", "2"],
        cwd=ROOT,
        env=ray_cluster.client_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "--rows 1 is fewer than --workers 2" in result.stdout
    assert "xgboost job FAILED" in result.stderr


# --- the pieces, without a cluster -----------------------------------------------------

def test_entrypoints_run_the_scripts_from_the_working_dir():
    assert entrypoint("xgboost", ["--rows", "2000"]) == "python xgboost_benchmark.py --rows 2000"
    assert entrypoint("pytorch", ["--epochs", "1; rm -rf /"]) == "python pytorch_benchmark.py --epochs '1; rm -rf /'"
    assert all((ROOT / "batch" / spec.script).is_file() for spec in JOB_ARGUMENTS.values())
    with pytest.raises(ValueError) as error:
        entrypoint("lightgbm")
    assert str(error.value) == "job 'lightgbm' is not one of: xgboost, pytorch"


@pytest.mark.parametrize("script", [xgboost_benchmark, pytorch_benchmark], ids=["xgboost", "pytorch"])
def test_scripts_refuse_impossible_sizes(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--rows", "1", "--workers", "2"])
    assert exit_info.value.code == 2
    assert "--rows 1 is fewer than --workers 2: every worker needs rows" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["--features", "0"])


def test_the_working_dir_holds_what_a_team_head_mounts_and_runs_from_there(tmp_path):
    # The scripts import their runner and their argument spec from beside them: staged alone
    # (no checkout on the path, no ray_serve_ha installed), a script's --help runs.
    staged = stage_working_dir(tmp_path)
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert files == sorted(job_files()) == [
        "job_runner.py", "pytorch_benchmark.py", "ray_serve_ha/charts/job_args.py", "xgboost_benchmark.py",
    ]
    result = subprocess.run([sys.executable, "xgboost_benchmark.py", "--help"], cwd=staged,
                            env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--rows ROWS" in result.stdout and "--max-depth MAX_DEPTH" in result.stdout


def test_shards_cover_every_row_once():
    for total, world_size in ((2000, 2), (2001, 2), (7, 3), (5, 5)):
        shards = [xgboost_benchmark.shard_rows(total, rank, world_size) for rank in range(world_size)]
        assert sum(shards) == total and max(shards) - min(shards) <= 1


def test_synthetic_data_is_one_learnable_rule_with_both_classes():
    x_a, y_a = xgboost_benchmark.make_classification(1000, 10, seed=1)
    x_b, y_b = xgboost_benchmark.make_classification(1000, 10, seed=1)
    assert (x_a == x_b).all() and (y_a == y_b).all()  # reproducible
    assert 0.3 < y_a.mean() < 0.7  # balanced enough that accuracy means something
    assert (xgboost_benchmark.make_classification(10, 10, seed=2)[0] != x_a[:10]).any()


@pytest.mark.ray
def test_the_cluster_refuses_a_client_without_its_token(ray_cluster):
    request = urllib.request.Request(f"{ray_cluster.dashboard_url}/api/jobs/")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 401
