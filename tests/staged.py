"""What the staged-asset tests share: the pipeline app's cloud assembly (the `assembly`
fixture: synthesized once per session, by the first module that asks), moto's server, what
the manifests hold, and how CodeBuild runs a buildspec's commands. A test module takes the
fixtures in by name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import pytest

from app import build_app
from stacks.settings import Settings
from tests.conftest import ROOT, context
from tests.moto_server import moto_server
from tests.test_pipeline import PIPELINE

ACCOUNT = PIPELINE["account"]
REGION = PIPELINE["region"]
SETTINGS = Settings.from_context(context(**PIPELINE))
VENV_BIN = Path(sys.executable).parent
FAKES = ROOT / "tests" / "fakes"
# Static credentials of the CodeBuild or Lambda role (made up: every endpoint is local).
ROLE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEROLE",
    "AWS_SECRET_ACCESS_KEY": "example-secret-key",
    "AWS_SESSION_TOKEN": "example-session-token",
}
NO_AWS_CONFIG = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                 "AWS_EC2_METADATA_DISABLED": "true"}




def synthesize_pipeline_app(outdir: Path) -> Path:
    """The pipeline app (its stage holds the same serving stacks as `cdk deploy`), synthesized into `outdir`."""
    app = cdk.App(context=context(**PIPELINE), outdir=str(outdir))
    build_app(app)
    app.synth()
    return outdir


def stage_manifests(assembly: Path) -> list[Path]:
    """The asset manifests of the deployed stage (the pipeline stack's own manifest holds
    only its template, which the self-mutation step's `cdk deploy` publishes)."""
    (stage,) = assembly.glob("assembly-*")
    return sorted(stage.glob("*.assets.json"))


def stage_template(assembly: Path, stack: str) -> dict[str, Any]:
    (stage,) = assembly.glob("assembly-*")
    (path,) = stage.glob(f"*{stack.replace('-', '')}*.template.json")
    return json.loads(path.read_text())


def pipeline_template(assembly: Path) -> dict[str, Any]:
    return json.loads((assembly / f"{SETTINGS.cluster.name}-pipeline.template.json").read_text())


def buildspecs(template: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    return {
        name: json.loads(resource["Properties"]["Source"]["BuildSpec"])
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CodeBuild::Project" and name.startswith(prefix)
    }


@dataclass(frozen=True)
class Entry:
    """One asset destination of a manifest."""

    manifest: Path
    asset_id: str
    destination_id: str
    kind: str  # "files" or "dockerImages"
    source: dict[str, Any]
    destination: dict[str, Any]

    @property
    def selector(self) -> str:
        return f"{self.asset_id}:{self.destination_id}"

    @property
    def staged(self) -> Path:
        return (self.manifest.parent / (self.source.get("path") or self.source["directory"])).resolve()


def entries(manifests: list[Path]) -> list[Entry]:
    found = []
    for manifest in manifests:
        body = json.loads(manifest.read_text())
        for kind in ("files", "dockerImages"):
            for asset_id, asset in body.get(kind, {}).items():
                for destination_id, destination in asset["destinations"].items():
                    found.append(Entry(manifest, asset_id, destination_id, kind, asset["source"], destination))
    return found


def staged_file_asset(assembly: Path, object_key: str) -> Path:
    """The staged directory or file of the stage's file asset published as `object_key`."""
    (entry,) = [e for e in entries(stage_manifests(assembly)) if e.destination.get("objectKey") == object_key]
    return entry.staged


def run_phases(
    commands: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Buildspec commands as CodeBuild runs them (version 0.2: one shell keeps the directory
    and the variables; a failing command fails the build)."""
    return subprocess.run(["/bin/sh", "-ec", "\n".join(commands)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def tool(directory: Path, name: str, module: str) -> None:
    """A stand-in command `name` in `directory` that runs tests/fakes/<module>.py."""
    path = directory / name
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKES / module}.py" "$@"\n')
    path.chmod(0o755)




def moto_client(endpoint: str, service: str):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


_ASSEMBLY: list[Path] = []


@pytest.fixture(scope="module")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _ASSEMBLY:
        _ASSEMBLY.append(synthesize_pipeline_app(tmp_path_factory.mktemp("cdk.out")))
    return _ASSEMBLY[0]


@pytest.fixture(scope="module")
def aws_endpoint():
    """moto's server: S3, ECR, STS and CloudWatch of the pipeline's account, on loopback."""
    with moto_server(account=ACCOUNT) as endpoint:
        yield endpoint
