"""Submit a benchmark to a running Ray cluster through the Job Submission API and stream its logs.

    python -m batch.submit --address http://127.0.0.1:8265 xgboost --rows 2000
    python -m batch.submit --address http://127.0.0.1:8265 pytorch --rows 2000 --epochs 2

Everything after the job name goes to the job script. The job's working directory holds
what a team's Ray head mounts from its ConfigMap (`ray_serve_ha.charts.batch.job_files`:
the scripts, their runner and their argument spec), uploaded by the client, so the cluster
needs the libraries (xgboost, torch), not the files. For a cluster with Ray token
authentication (every team cluster on EKS), set `RAY_AUTH_MODE=token` and `RAY_AUTH_TOKEN`
(from the Secret KubeRay made for the cluster) as for any Ray client, or pass `headers` to
`submit`. The exit status is 0 only when the job SUCCEEDED.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

from ray_serve_ha.charts.batch import job_files
from ray_serve_ha.charts.job_args import JOB_ARGUMENTS

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
DEFAULT_TIMEOUT_S = 900.0
_POLL_S = 0.5


def entrypoint(job: str, args: Sequence[str] = ()) -> str:
    """The shell command the cluster runs, from the job's working directory."""
    if job not in JOB_ARGUMENTS:
        raise ValueError(f"job {job!r} is not one of: {', '.join(JOB_ARGUMENTS)}")
    return shlex.join(["python", JOB_ARGUMENTS[job].script, *args])


def stage_working_dir(folder: Path) -> Path:
    """Writes the files a job runs with (what a team's head mounts) into `folder`."""
    for relative, text in job_files().items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def submit(
    dashboard_url: str,
    job: str,
    args: Sequence[str] = (),
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    on_log: Callable[[str], None] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[JobStatus, str]:
    """Runs `job` with `args` on the cluster behind `dashboard_url` and waits for it to end.

    Log lines go to `on_log` as they arrive. Returns the final status and the job's whole
    log. A job still running after `timeout_s` is stopped (status STOPPED). `headers` go
    with every request (e.g. `Authorization: Bearer <token>`; without one, Ray's client
    adds the token from its environment when token authentication is on).
    """
    command = entrypoint(job, args)
    client = JobSubmissionClient(dashboard_url, headers=dict(headers) if headers else None)
    # The client uploads the working directory while it submits: the staged copy can go after.
    with tempfile.TemporaryDirectory(prefix="batch-job-") as folder:
        job_id = client.submit_job(
            entrypoint=command,
            submission_id=f"{job}-benchmark-{uuid.uuid4().hex[:8]}",
            runtime_env={"working_dir": str(stage_working_dir(Path(folder)))},
            # The driver only coordinates: Ray Train's workers take the CPUs.
            entrypoint_num_cpus=0,
            metadata={"benchmark": job},
        )
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(TimeoutError):
        asyncio.run(asyncio.wait_for(_stream_logs(client, job_id, on_log), timeout=timeout_s))
    status = _wait_for_end(client, job_id, deadline)
    if not status.is_terminal():
        client.stop_job(job_id)
        if on_log is not None:
            on_log(f"[batch.submit] {job_id} still {status.value} after {timeout_s:g} s: stopped\n")
        status = _wait_for_end(client, job_id, time.monotonic() + 30)
    return status, client.get_job_logs(job_id)


async def _stream_logs(client: JobSubmissionClient, job_id: str, on_log: Callable[[str], None] | None) -> None:
    # The stream ends when the job does.
    async for chunk in client.tail_job_logs(job_id):
        if on_log is not None:
            on_log(chunk)


def _wait_for_end(client: JobSubmissionClient, job_id: str, deadline: float) -> JobStatus:
    # The log stream can close a moment before the status turns terminal.
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        status = client.get_job_status(job_id)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m batch.submit", description="Submit a benchmark job to a Ray cluster and stream its logs."
    )
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help=f"Ray dashboard URL (default {DEFAULT_ADDRESS})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds before the job is stopped")
    parser.add_argument("job", choices=sorted(JOB_ARGUMENTS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the job script")
    options = parser.parse_args(argv)

    def echo(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    status, _ = submit(options.address, options.job, options.args, timeout_s=options.timeout, on_log=echo)
    print(f"[batch.submit] {options.job} job {status.value}", file=sys.stderr)
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())
