"""The pinned CDK CLI runs the app as users do (`make synth`): offline, with a region alone,
and with a clear message, no stack trace and nothing synthesized when a setting is bad."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.bad_settings import ACCELERATOR_NAMES, DEFAULT_TYPES
from tests.conftest import ROOT

CDK = ROOT / "node_modules" / ".bin" / "cdk"
pytestmark = pytest.mark.cli
STACKS = [
    "ray-serve-ha-cluster.template.json",
    "ray-serve-ha-gcs-store.template.json",
    "ray-serve-ha-network.template.json",
    "ray-serve-ha-serving.template.json",
]


def cdk(*args: str, outdir: Path) -> subprocess.CompletedProcess:
    assert CDK.exists(), "the pinned CDK CLI is missing: run `make setup`"
    env = {**os.environ, "CDK_DISABLE_VERSION_CHECK": "1"}
    env.pop("AWS_PROFILE", None)
    return subprocess.run(
        [str(CDK), "synth", "--quiet", "--no-notices", "-o", str(outdir), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_synth_writes_every_stack_offline(tmp_path):
    result = cdk(outdir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("*.template.json")) == STACKS


def test_a_region_without_an_account_synthesizes_for_that_region(tmp_path):
    # cdk-nag names findings with the literal region and the account's placeholder then.
    result = cdk("-c", "region=us-east-2", outdir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("*.template.json")) == STACKS
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {a["environment"] for a in manifest["artifacts"].values() if a["type"] == "aws:cloudformation:stack"} == {
        "aws://unknown-account/us-east-2"
    }


BAD = {
    "README's example": (
        ["-c", "accelerator=tpu", "-c", "acceleratorMinNodes=9", "-c", "gcsStoreEngineVersion=6.2"],
        "error: Invalid settings (3 problems). Fix them in cdk.json or with -c key=value:\n"
        f"  - accelerator='tpu': must be one of: {ACCELERATOR_NAMES}\n"
        "  - acceleratorMinNodes=9: must not exceed acceleratorMaxNodes (4)\n"
        "  - gcsStoreEngineVersion='6.2': the GCS store requires TLS (transit encryption mode 'required'), "
        "which needs redis 7.0 or later; use one of 7.0, 7.1\n",
    ),
    "batch team values": (
        ["-c", "capacityMode=node-groups", "-c",
         'batchTeams=[{"name": "a", "namespace": "team-a", "cpus": 64, "memoryGib": 300},'
         ' {"name": "b", "namespace": "team-b", "cpus": 2.5, "memoryGib": 8, "maxWorkers": "2"}]',
         "-c", "acceleratorInstanceTypes="],
        "error: Invalid settings (4 problems). Fix them in cdk.json or with -c key=value:\n"
        "  - acceleratorInstanceTypes='': must name at least one instance type; leave it unset for the "
        f"accelerator's default ({DEFAULT_TYPES})\n"
        "  - batchTeams[1].cpus=2.5: must be a whole number from 1 to 192\n"
        "  - batchTeams[1].maxWorkers='2': must be a whole number from 1 to 100 (a JSON number, not a string)\n"
        "  - batchTeams[0]: cpus=64, memoryGib=300: no node-group instance type holds this worker once the "
        "node's own reservations are taken (capacityMode=node-groups); sizes: m7i.large (1 CPU, 5 GiB for a "
        "worker), m7i.xlarge (3 CPU, 12 GiB for a worker), m7i.2xlarge (7 CPU, 26 GiB for a worker), "
        "m7i.4xlarge (15 CPU, 53 GiB for a worker), m7i.8xlarge (31 CPU, 110 GiB for a worker), "
        "m7i.16xlarge (63 CPU, 219 GiB for a worker)\n",
    ),
    "a pipeline without its settings": (
        ["-c", "pipeline=true"],
        "error: Invalid settings (4 problems). Fix them in cdk.json or with -c key=value:\n"
        "  - account: must be set when pipeline=true\n"
        "  - region: must be set when pipeline=true\n"
        "  - pipelineRepository: must be set when pipeline=true\n"
        "  - pipelineConnectionArn: must be set when pipeline=true\n",
    ),
}


@pytest.mark.parametrize("args,message", BAD.values(), ids=BAD.keys())
def test_bad_settings_fail_with_one_message_and_no_stack_trace(tmp_path, args, message):
    result = cdk(*args, outdir=tmp_path)
    assert result.returncode == 1
    # The app's one message, then only the CLI's own line about the app's exit status.
    assert result.stderr.startswith(message)
    assert result.stderr[len(message):].strip() == ".venv/bin/python app.py: Subprocess exited with error 1"
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.template.json"))


def test_an_existing_vpc_without_credentials_names_the_lookup_alone(tmp_path):
    # A copy of the project without cdk.context.json, as a new user's clone is; no AWS
    # credentials anywhere (environment, files, instance metadata).
    project = tmp_path / "project"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.split():
        if name != "cdk.context.json" and (ROOT / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, project / name)
    for name in (".venv", "node_modules"):
        (project / name).symlink_to(ROOT / name)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(CDK_DISABLE_VERSION_CHECK="1", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    result = subprocess.run(
        [str(CDK), "synth", "--quiet", "--no-notices", "-o", str(tmp_path / "out"),
         "-c", "account=111122223333", "-c", "region=us-east-2", "-c", "vpcId=vpc-0a1b2c3d4e5f60718"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    # The reason first, and nothing about CDK's placeholder VPC and subnets.
    assert errors[0].startswith(
        "error: the existing VPC vpc-0a1b2c3d4e5f60718 could not be looked up: Need to perform AWS calls for "
        "account 111122223333, but no credentials have been configured. Run `cdk synth` once with credentials"
    ), result.stderr
    assert [line for line in errors if "error" in line.lower()][1:] == [
        ".venv/bin/python app.py: Subprocess exited with error 1"
    ], result.stderr
    assert "does not match" not in result.stderr and "Traceback" not in result.stderr
    assert not (project / "cdk.context.json").exists()
