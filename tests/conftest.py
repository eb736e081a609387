"""Shared test set-up: the project's node on PATH for jsii, the cdk.json context (the feature
flags; settings take the model's defaults) for every test App, the CRD schema folder, and a
helper that synthesizes the serving system with setting overrides."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Batch job scripts run with their own folder on sys.path (job_runner.py beside them).
sys.path.insert(1, str(ROOT / "batch"))
# jsii needs node; use the project's Node 24 when the venv has it (quiet, supported).
_VENV_BIN = ROOT / ".venv" / "bin"
if (_VENV_BIN / "node").exists():
    os.environ["PATH"] = f"{_VENV_BIN}{os.pathsep}{os.environ['PATH']}"

import aws_cdk as cdk  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402

from local.redis_client import ping  # noqa: E402
from stacks.serving_system import ServingSystem, add_serving_system  # noqa: E402
from stacks.settings import Settings  # noqa: E402

CDK_JSON_CONTEXT: dict = json.loads((ROOT / "cdk.json").read_text())["context"]


def schemas_dir() -> Path:
    """CRD schemas: $RAY_SERVE_HA_SCHEMAS, or the project's own copies in schemas/ (each
    folder's SOURCE.md names the upstream repository, tag and path)."""
    return Path(os.environ.get("RAY_SERVE_HA_SCHEMAS", ROOT / "schemas"))


def context(**overrides) -> dict:
    """cdk.json context (same feature flags as `cdk synth`) with setting overrides."""
    return {**CDK_JSON_CONTEXT, **overrides}


# A `cdk.context.json` as the first `cdk synth` with credentials writes it for an existing
# VPC (vpc-provider lookup: three private subnets with NAT routes, public and isolated ones).
EXISTING_VPC_ID = "vpc-0a1b2c3d4e5f60718"
EXISTING_VPC_CONTEXT: dict = json.loads((ROOT / "tests" / "fixtures" / "existing-vpc.cdk.context.json").read_text())
EXISTING_VPC_SETTINGS = {"vpcId": EXISTING_VPC_ID, "account": "111122223333", "region": "us-east-2"}


def existing_vpc(**overrides) -> dict:
    """Setting overrides (and the cached lookup) for the system in the fixture's VPC."""
    return {**EXISTING_VPC_CONTEXT, **EXISTING_VPC_SETTINGS, **overrides}


# What `aws eks describe-cluster` gives for an existing cluster in that VPC.
EXISTING_CLUSTER_SETTINGS = {
    "clusterName": "team-platform",
    "existingClusterName": "team-platform",
    "existingClusterSecurityGroupId": "sg-0123456789abcdef0",
    "existingClusterEndpoint": "https://0123456789ABCDEF0123456789ABCDEF.gr7.us-east-2.eks.amazonaws.com",
    "existingClusterCertificateAuthorityData": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t",
}


def existing_cluster(**overrides) -> dict:
    """Setting overrides for the system in the fixture's existing cluster (and VPC)."""
    return existing_vpc(**EXISTING_CLUSTER_SETTINGS, **overrides)


@dataclass
class Synthesized:
    system: ServingSystem
    # None with an existing VPC: no network stack.
    network: Template | None
    cluster: Template
    gcs_store: Template
    serving: Template


def synthesize(**overrides) -> Synthesized:
    app = cdk.App(context=context(**overrides))
    system = add_serving_system(app, Settings.from_context(app.node.get_all_context()))
    return Synthesized(
        system=system,
        network=Template.from_stack(system.network) if system.network else None,
        cluster=Template.from_stack(system.cluster),
        gcs_store=Template.from_stack(system.gcs_store),
        serving=Template.from_stack(system.serving),
    )


_ASSET_HASH = re.compile(r"[0-9a-f]{64}")


def normalise_asset_hashes(template: dict) -> dict:
    """Replaces 64-hex asset hashes by numbered placeholders in order of appearance, so a
    snapshot survives library upgrades but two different assets stay two."""
    text = json.dumps(template, indent=1, sort_keys=True)
    seen: dict[str, str] = {}

    def number(match: re.Match) -> str:
        return seen.setdefault(match.group(0), f"<asset-{len(seen) + 1}>")

    return json.loads(_ASSET_HASH.sub(number, text))


@pytest.fixture(scope="session")
def default_system() -> Synthesized:
    """The system with cdk.json's defaults (neuron, Auto Mode), synthesized once."""
    return synthesize()


@pytest.fixture(scope="session")
def node_groups_neuron() -> Synthesized:
    return synthesize(capacityMode="node-groups")


@pytest.fixture(scope="session")
def node_groups_nvidia() -> Synthesized:
    return synthesize(capacityMode="node-groups", accelerator="nvidia")


@pytest.fixture(scope="session")
def mixed_auto_mode() -> Synthesized:
    """Spot replicas above an on-demand floor, on Auto Mode (neuron)."""
    return synthesize(servingCapacityType="mixed")


@pytest.fixture(scope="session")
def mixed_node_groups_nvidia() -> Synthesized:
    """Spot replicas above an on-demand floor, on managed node groups (nvidia: several spot types)."""
    return synthesize(servingCapacityType="mixed", capacityMode="node-groups", accelerator="nvidia")


@pytest.fixture(scope="session")
def auto_mode_nvidia() -> Synthesized:
    return synthesize(accelerator="nvidia")


@pytest.fixture(scope="session")
def in_existing_vpc() -> Synthesized:
    """The default system in the fixture's existing VPC (from its cached lookup)."""
    return synthesize(**existing_vpc())


@pytest.fixture(scope="session")
def in_existing_cluster() -> Synthesized:
    """The default system (Auto Mode) in the fixture's existing cluster."""
    return synthesize(**existing_cluster())


# The Serve application on a Ray cluster in this process (tests/serve_backend.py), shared by
# every module that talks to it, and the official openai client and the tokenizer on it.
@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest):
    from tests.serve_backend import shared_backend

    return shared_backend(request)


@pytest.fixture(scope="module")
def client(backend):
    import openai

    return openai.OpenAI(base_url=backend.openai_url, api_key="not-needed", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tokenizer(backend):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(backend.model_dir)


# Fixtures that start something `make check` leaves out: a test that uses one (directly or
# through another fixture) gets the marker, so selection follows what a test really needs.
_FIXTURE_MARKERS = {
    "backend": "ray",  # the Serve app on a Ray cluster in this process (tests/serve_backend.py)
    "serve_backend": "ray",
    "ray_cluster": "ray",
    "browser": "browser",  # Debian's Chromium through Playwright
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & set(_FIXTURE_MARKERS):
            item.add_marker(_FIXTURE_MARKERS[fixture])


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free loopback port (password "pw", AOF on); yields (process, port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "redis.conf"
    config.write_text(f"bind 127.0.0.1\nport {port}\nrequirepass pw\ndir {tmp_path}\nappendonly yes\nsave \"\"\n")
    server = subprocess.Popen(["redis-server", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not ping("127.0.0.1", port, "pw", 0.5)[0]:
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    yield server, port
    if server.poll() is None:
        os.kill(server.pid, signal.SIGCONT)
        server.kill()
        server.wait()
