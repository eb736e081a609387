"""A fake Kubernetes API server for the readiness gate (lambda/rayservice_ready): scripted
answers per path on 127.0.0.1 (plain HTTP, or TLS with a self-signed CA), the objects it
returns as KubeRay 1.7 and Kubernetes write them, and the CloudFormation events the gate
receives. The fixtures are taken into a test module by name (see its top).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

REGION = "eu-west-3"
CLUSTER = "ray-serve-ha"
NAMESPACE = "serving"
NAME = "mistral"
# Made-up credentials: presigning is local, nothing is sent to AWS.
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "test-secret-access-key"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLE//token+with/odd=chars"
RAYSERVICE_PATH = f"/apis/ray.io/v1/namespaces/{NAMESPACE}/rayservices/{NAME}"
EVENTS_PATH = f"/api/v1/namespaces/{NAMESPACE}/events"
RAYCLUSTERS_PATH = f"/apis/ray.io/v1/namespaces/{NAMESPACE}/rayclusters"
SERVICES_PATH = f"/api/v1/namespaces/{NAMESPACE}/services"


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch, tmp_path):
    """Static fake credentials from the environment only: no profile, no instance metadata."""
    for key in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# ---------------------------------------------------------------------------------------
# A fake Kubernetes API server
# ---------------------------------------------------------------------------------------


@dataclass
class FakeKube:
    """Scripted answers per path: each GET takes the next one, the last one repeats."""

    answers: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, raw_path: str) -> tuple[int, dict]:
        path = urlsplit(raw_path).path
        with self.lock:
            queue = self.answers.get(path)
            if not queue:
                return 404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
            return queue.pop(0) if len(queue) > 1 else queue[0]


def serve_fake_kube(kube: FakeKube, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            with kube.lock:
                kube.requests.append({"path": self.path, "headers": dict(self.headers)})
            status, body = kube.answer(self.path)
            payload = json.dumps(body).encode()
            self.send_response(status)
            if "location" in body:
                self.send_header("Location", body["location"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server():
    kube = FakeKube()
    http_server = serve_fake_kube(kube)
    yield kube, f"http://127.0.0.1:{http_server.server_address[1]}"
    http_server.shutdown()
    http_server.server_close()


@pytest.fixture
def kube(server):
    state, _ = server
    state.answers.clear()
    state.requests.clear()
    return state


@pytest.fixture
def endpoint(server):
    return server[1]


# ---------------------------------------------------------------------------------------
# Objects as the API server returns them
# ---------------------------------------------------------------------------------------


def condition(type_: str, status: str, reason: str, message: str = "") -> dict:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-11-23T04:00:00Z",
    }


def rayservice(
    *conditions: dict, generation: int = 1, observed: int | None = 1, active: str = "mistral-raycluster-abcde"
) -> dict:
    status: dict = {
        "conditions": list(conditions),
        "numServeEndpoints": 2,
        "activeServiceStatus": {
            "rayClusterName": active,
            "applicationStatuses": {"llm": {"status": "RUNNING"}},
        },
    }
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "generation": generation},
        "status": status,
    }


READY = rayservice(
    condition("Ready", "True", "NonZeroServeEndpoints", "Number of serve endpoints is greater than 0"),
    condition("UpgradeInProgress", "False", "NoPendingCluster", "Active Ray cluster exists and no pending Ray cluster"),
)
INITIALIZING = rayservice(
    condition("Ready", "False", "Initializing", "RayService is initializing"),
    condition("UpgradeInProgress", "False", "Initializing", "RayService is initializing"),
    observed=1,
    active="",
)
REJECTED = rayservice(
    condition(
        "Ready",
        "False",
        "ValidationFailed",
        "The RayService spec is invalid serving/mistral: "
        "ray.io/ft-enabled annotation and GcsFaultToleranceOptions are both set.",
    ),
)


def event(index: int, *, legacy: bool = True, message: str | None = None) -> dict:
    """A core/v1 Event; `legacy=False` fills eventTime instead of lastTimestamp."""
    stamp = f"2026-11-23T04:{index:02d}:00Z"
    body = {
        "metadata": {"name": f"{NAME}.{index}", "namespace": NAMESPACE},
        "involvedObject": {"kind": "RayService", "name": NAME, "namespace": NAMESPACE},
        "type": "Warning" if index % 2 else "Normal",
        "reason": f"Reason{index:02d}",
        "message": message or f"event number {index}",
        "count": 3 if index == 11 else 1,
    }
    if legacy:
        body["lastTimestamp"] = stamp
    else:
        body["eventTime"] = stamp.replace("Z", ".000000Z")
        body["lastTimestamp"] = None
    return body


def properties(endpoint: str, timeout_s: int = 900, ca: str = "") -> dict:
    return {
        "ServiceToken": "arn:aws:lambda:eu-west-3:123456789012:function:provider",
        "ClusterName": CLUSTER,
        "Endpoint": endpoint,
        "CertificateAuthority": ca or base64.b64encode(b"unused for http").decode(),
        "Namespace": NAMESPACE,
        "RayServiceName": NAME,
        "TimeoutSeconds": str(timeout_s),
    }


def poll_event(
    endpoint: str, *, started_ago_s: float = 0, request_type: str = "Create",
    resource_type: str = "Custom::RayServiceReady", **props,
) -> dict:
    """The event isComplete receives: the CloudFormation request merged with onEvent's output."""
    return {
        "RequestType": request_type,
        "RequestId": "d3b1c2f0-0000-4000-8000-000000000000",
        "ResponseURL": "https://cloudformation-custom-resource-response.example/secret-presigned",
        "StackId": "arn:aws:cloudformation:eu-west-3:123456789012:stack/serving/abc",
        "LogicalResourceId": "RayServiceReady",
        "ResourceType": resource_type,
        "ResourceProperties": properties(endpoint, **props),
        "PhysicalResourceId": f"{NAMESPACE}/{NAME}",
        "Data": {"StartedAt": str(int(time.time() - started_ago_s))},
    }



def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return key, cert



def listing(*items: dict) -> dict:
    return {"kind": "List", "items": list(items)}


def k8s_object(name: str, *finalizers: str, service_type: str | None = None) -> dict:
    body = {"metadata": {"name": name, "namespace": NAMESPACE, "finalizers": list(finalizers)}}
    if service_type:
        body["spec"] = {"type": service_type}
    return body

def decode_token(token: str) -> str:
    assert token.startswith("k8s-aws-v1.")
    body = token[len("k8s-aws-v1.") :]
    assert "=" not in body and "+" not in body and "/" not in body, "base64url without padding"
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def sigv4_matches(url: str, cluster: str, secret: str, region: str) -> bool:
    """Recompute the SigV4 query signature independently of botocore (AWS's published
    algorithm) with `x-k8s-aws-id: cluster` as a signed header."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    given = dict(params)["X-Amz-Signature"]
    unsigned = sorted((k, v) for k, v in params if k != "X-Amz-Signature")
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in unsigned)
    canonical_request = "\n".join(
        [
            "GET",
            parts.path or "/",
            canonical_query,
            f"host:{parts.hostname}\nx-k8s-aws-id:{cluster}\n",
            "host;x-k8s-aws-id",
            hashlib.sha256(b"").hexdigest(),
        ]
    )
    amz_date = dict(params)["X-Amz-Date"]
    scope = f"{amz_date[:8]}/{region}/sts/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = ("AWS4" + secret).encode()
    for part in (amz_date[:8], region, "sts", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest(), given)
