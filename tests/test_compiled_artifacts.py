"""The compiled-artifact cache's S3 path for real: moto's S3-compatible HTTP server on
127.0.0.1, the engine's own boto3 client (endpoint from AWS_ENDPOINT_URL_S3), and
NeuronEngine.load_with_cache around a stand-in for NxD Inference that compiles into
NEURON_COMPILED_ARTIFACTS when it is empty and loads from it otherwise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import boto3
import pytest

from tests.conftest import ROOT
from tests.moto_server import moto_server

sys.path.insert(0, str(ROOT / "images" / "ray-serve"))

from ray_serve_ha.constructs.artifact_cache import ARTIFACTS_PREFIX
from ray_serve_llm.compiled_artifacts import MARKER, CompileKey
from ray_serve_llm.engines import neuron_engine
from ray_serve_llm.engines.neuron_engine import NEURON_MAX_NUM_SEQS, NeuronEngine

BUCKET = "compiled-artifacts"
MODEL = "mistralai/Mistral-7B-Instruct-v0.2"
SDK = "0.9.17334"
# What a compile writes (NxD Inference: the traced model and its config).
COMPILED = {"model.pt": b"\x00compiled graph\x01" * 4096, "neuron_config.json": b'{"tp_degree": 2}'}


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's server, a real HTTP server speaking the S3 REST API, on loopback only."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(monkeypatch, s3_endpoint, tmp_path):
    """The worker's view: credentials (Pod Identity on EKS; fake here) and the S3 endpoint."""
    for key in ("AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(neuron_engine, "neuron_sdk_version", lambda: SDK)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-east-2"})
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


class FakeNxdi:
    """Stands in for vLLM + NxD Inference's load: compiles into NEURON_COMPILED_ARTIFACTS
    when it holds nothing, loads what is there otherwise."""

    def __init__(self):
        self.compiles = 0
        self.loaded: dict[str, bytes] = {}

    def load(self, model_path, *, tensor_parallel_degree, max_model_len):
        folder = Path(os.environ["NEURON_COMPILED_ARTIFACTS"])
        if not any(folder.iterdir()):
            self.compiles += 1
            for name, body in COMPILED.items():
                (folder / name).write_bytes(body)
        self.loaded = {p.name: p.read_bytes() for p in folder.iterdir()}
        return object()


def start_worker(monkeypatch, node_disk: Path, nxdi: FakeNxdi, location: str, max_model_len: int = 4096):
    """One worker start on a fresh node (its own empty disk)."""
    monkeypatch.setattr(NeuronEngine, "load", nxdi.load)
    monkeypatch.setenv("NEURON_COMPILED_ARTIFACTS", "")
    NeuronEngine.load_with_cache(
        "/models/mistral", model_id=MODEL, tensor_parallel_degree=2, max_model_len=max_model_len,
        compiled_artifacts=location, local_root=node_disk,
    )


def test_first_start_compiles_and_uploads_later_starts_download(aws, monkeypatch, tmp_path):
    location = f"s3://{BUCKET}/{ARTIFACTS_PREFIX}"
    nxdi = FakeNxdi()
    start_worker(monkeypatch, tmp_path / "node-1", nxdi, location)
    assert nxdi.compiles == 1
    slug = CompileKey(MODEL, 2, 4096, NEURON_MAX_NUM_SEQS, SDK).slug
    listed = aws.list_objects_v2(Bucket=BUCKET, Prefix=f"{ARTIFACTS_PREFIX}/")
    keys = sorted(item["Key"] for item in listed["Contents"])
    assert keys == sorted(f"{ARTIFACTS_PREFIX}/{slug}/{name}" for name in [*COMPILED, MARKER])

    # A replacement node: nothing on its disk, the compiled model comes from S3.
    replacement = FakeNxdi()
    start_worker(monkeypatch, tmp_path / "node-2", replacement, location)
    assert replacement.compiles == 0
    assert replacement.loaded == COMPILED


def test_another_configuration_compiles_its_own_artifacts(aws, monkeypatch, tmp_path):
    location = f"s3://{BUCKET}/{ARTIFACTS_PREFIX}"
    start_worker(monkeypatch, tmp_path / "node-1", FakeNxdi(), location, max_model_len=4096)
    # A longer sequence length is another compiled graph: it must not load the first one.
    longer = FakeNxdi()
    start_worker(monkeypatch, tmp_path / "node-2", longer, location, max_model_len=8192)
    assert longer.compiles == 1
    prefixes = {item["Key"].rsplit("/", 1)[0] for item in aws.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert prefixes == {
        f"{ARTIFACTS_PREFIX}/{CompileKey(MODEL, 2, length, NEURON_MAX_NUM_SEQS, SDK).slug}" for length in (4096, 8192)
    }


def test_a_start_that_died_mid_upload_is_not_loaded(aws, monkeypatch, tmp_path):
    slug = CompileKey(MODEL, 2, 4096, NEURON_MAX_NUM_SEQS, SDK).slug
    # Half a model and no completion marker: what a worker killed while uploading leaves.
    aws.put_object(Bucket=BUCKET, Key=f"{ARTIFACTS_PREFIX}/{slug}/model.pt", Body=b"partial")
    nxdi = FakeNxdi()
    start_worker(monkeypatch, tmp_path / "node-1", nxdi, f"s3://{BUCKET}/{ARTIFACTS_PREFIX}")
    assert nxdi.compiles == 1
    assert nxdi.loaded == COMPILED


def test_an_unreachable_cache_compiles_instead_of_failing(aws, monkeypatch, tmp_path):
    nxdi = FakeNxdi()
    start_worker(monkeypatch, tmp_path / "node-1", nxdi, "s3://no-such-bucket/neuron-compiled-artifacts")
    assert nxdi.compiles == 1
