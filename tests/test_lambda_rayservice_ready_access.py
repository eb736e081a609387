"""How the readiness gate (lambda/rayservice_ready) reaches the cluster: the EKS token against
the documented format (presigning is local), onEvent's outputs, HTTPS that trusts the
cluster CA only, and a runtime of the standard library and botocore alone."""

from __future__ import annotations

import ast
import base64
import shutil
import ssl
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes import readiness_kube
from tests.fakes.readiness_kube import (
    ACCESS_KEY,
    CLUSTER,
    NAME,
    NAMESPACE,
    RAYSERVICE_PATH,
    READY,
    REGION,
    SECRET_KEY,
    SESSION_TOKEN,
    FakeKube,
    decode_token,
    poll_event,
    self_signed,
    serve_fake_kube,
    sigv4_matches,
)
from tests.lambda_handlers import load_handler, load_module

gate = load_handler("rayservice_ready")
token = load_module("rayservice_ready", "eks_token")
errors = load_module("rayservice_ready", "gate_errors")
kube_api = load_module("rayservice_ready", "kube_api")

# The environment's fake credentials (presigning reads them), taken in by name.
fake_aws = readiness_kube.fake_aws

# ---------------------------------------------------------------------------------------
# The EKS token
# ---------------------------------------------------------------------------------------


def test_token_has_the_documented_eks_format():
    url = decode_token(token.eks_token_from_environment(CLUSTER))
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert (parts.scheme, parts.hostname, parts.path) == ("https", f"sts.{REGION}.amazonaws.com", "/")
    assert query["Action"] == "GetCallerIdentity"
    assert query["Version"] == "2011-06-15"
    assert query["X-Amz-Expires"] == "60"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"].split(";")
    assert query["X-Amz-SignedHeaders"] == "host;x-k8s-aws-id"
    access_key, date, region, service, terminator = query["X-Amz-Credential"].split("/")
    assert (access_key, region, service, terminator) == (ACCESS_KEY, REGION, "sts", "aws4_request")
    assert date == query["X-Amz-Date"][:8]
    assert query["X-Amz-Security-Token"] == SESSION_TOKEN
    assert len(query["X-Amz-Signature"]) == 64


def test_token_signature_binds_the_cluster_name():
    url = decode_token(token.eks_token_from_environment(CLUSTER))
    assert sigv4_matches(url, CLUSTER, SECRET_KEY, REGION)
    # The same token presented to another cluster does not verify.
    assert not sigv4_matches(url, "another-cluster", SECRET_KEY, REGION)
    assert not sigv4_matches(url, CLUSTER, "wrong-secret", REGION)


def test_token_needs_a_region(monkeypatch):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(errors.GateError, match="AWS_REGION is not set"):
        token.eks_token_from_environment(CLUSTER)


# ---------------------------------------------------------------------------------------
# onEvent
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_on_event_starts_the_wait(request_type):
    before = int(time.time())
    event = poll_event("https://example.eks.amazonaws.com", request_type=request_type)
    del event["Data"]
    result = gate.on_event(event, None)
    assert result["PhysicalResourceId"] == f"{NAMESPACE}/{NAME}"
    assert set(result["Data"]) == {"StartedAt"}
    assert isinstance(result["Data"]["StartedAt"], str)
    assert before <= int(result["Data"]["StartedAt"]) <= int(time.time())


def test_on_event_delete_keeps_the_physical_id():
    event = {"RequestType": "Delete", "ResourceType": "Custom::RayServiceReady",
             "PhysicalResourceId": "serving/old-name", "ResourceProperties": {}}
    assert gate.on_event(event, None) == {"PhysicalResourceId": "serving/old-name"}


def test_on_event_refuses_missing_properties():
    event = poll_event("https://example.eks.amazonaws.com")
    del event["ResourceProperties"]["RayServiceName"]
    with pytest.raises(ValueError, match=r"^ResourceProperties is missing RayServiceName$"):
        gate.on_event(event, None)


# ---------------------------------------------------------------------------------------
# TLS with the cluster CA
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    assert shutil.which("openssl"), "the openssl command makes the test CA: install Debian's openssl"
    directory = tmp_path_factory.mktemp("tls")
    key, cert = self_signed(directory, "cluster-ca")
    _, other_cert = self_signed(directory, "other-ca")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    kube = FakeKube(answers={RAYSERVICE_PATH: [(200, READY)]})
    server = serve_fake_kube(kube, tls=context)
    yield (
        f"https://127.0.0.1:{server.server_address[1]}",
        base64.b64encode(cert.read_bytes()).decode(),
        base64.b64encode(other_cert.read_bytes()).decode(),
    )
    server.shutdown()
    server.server_close()


def test_https_trusts_the_cluster_ca(tls_server):
    url, cluster_ca, _ = tls_server
    assert gate.is_complete(poll_event(url, ca=cluster_ca), None)["IsComplete"] is True


def test_https_refuses_a_server_outside_the_cluster_ca(tls_server):
    url, _, other_ca = tls_server
    with pytest.raises(errors.GateError, match="TLS verification against the cluster CA failed"):
        gate.is_complete(poll_event(url, ca=other_ca), None)


def test_certificate_authority_must_be_base64_pem():
    with pytest.raises(errors.GateError, match=r"^CertificateAuthority is not base64-encoded PEM"):
        kube_api.ssl_context_for(base64.b64encode(b"not a certificate").decode())


# ---------------------------------------------------------------------------------------
# Runtime contract
# ---------------------------------------------------------------------------------------


def test_handler_imports_only_the_standard_library_botocore_and_its_own_modules():
    folder = Path(gate.__file__).parent
    own = {path.stem for path in folder.glob("*.py")}
    imported = set()
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported |= {
            alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        imported |= {
            node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
        }
    assert imported - sys.stdlib_module_names - {"__future__"} - own <= {"boto3", "botocore"}
    # Every sibling the handler imports ships beside it (the asset is the folder).
    assert {"eks_token", "gate_errors", "kube_api", "rayservice_status", "failure_report", "teardown"} <= own
