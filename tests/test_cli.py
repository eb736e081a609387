"""The pinned CDK CLI runs the app as users do (`make synth`): offline, and with a clear
message and nothing synthesized when a setting is bad."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

CDK = ROOT / "node_modules" / ".bin" / "cdk"
pytestmark = pytest.mark.cli


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
    assert sorted(p.name for p in tmp_path.glob("*.template.json")) == [
        "ray-serve-ha-cluster.template.json",
        "ray-serve-ha-gcs-store.template.json",
        "ray-serve-ha-network.template.json",
        "ray-serve-ha-serving.template.json",
    ]


def test_bad_setting_fails_with_one_message_and_no_stack_trace(tmp_path):
    result = cdk("-c", "accelerator=tpu", "-c", "acceleratorMinNodes=9", outdir=tmp_path)
    assert result.returncode != 0
    assert (
        "error: Invalid settings (2 problems). Fix them in cdk.json or with -c key=value:\n"
        "  - accelerator='tpu': must be one of: neuron, nvidia\n"
        "  - acceleratorMinNodes=9: must not exceed acceleratorMaxNodes (4)\n"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.template.json"))
