"""The readiness gate (lambda/rayservice_ready): the EKS token against the documented format,
onEvent outputs, and isComplete against a real local HTTP(S) server that speaks the few
Kubernetes API reads the gate makes, with RayService statuses as KubeRay 1.7 writes them
through a first start and a NewCluster upgrade. All traffic stays on 127.0.0.1; presigning
is local."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

import pytest

from tests.lambda_handlers import load_handler, load_module

gate = load_handler("rayservice_ready")
token = load_module("rayservice_ready", "eks_token")
errors = load_module("rayservice_ready", "gate_errors")
report = load_module("rayservice_ready", "failure_report")
kube_api = load_module("rayservice_ready", "kube_api")
rayservice_status = load_module("rayservice_ready", "rayservice_status")

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


def _serve(kube: FakeKube, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
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
    http_server = _serve(kube)
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


# ---------------------------------------------------------------------------------------
# The EKS token
# ---------------------------------------------------------------------------------------


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
# isComplete against the fake API server
# ---------------------------------------------------------------------------------------


def test_ready_rayservice_completes_with_data(kube, endpoint):
    kube.answers[RAYSERVICE_PATH] = [(200, READY)]
    result = gate.is_complete(poll_event(endpoint), None)
    assert result == {
        "IsComplete": True,
        "Data": {
            "ActiveRayClusterName": "mistral-raycluster-abcde",
            "NumServeEndpoints": "2",
            "Applications": "llm=RUNNING",
            "ObservedGeneration": "1",
        },
    }
    (request,) = kube.requests
    assert request["path"] == RAYSERVICE_PATH
    authorization = request["headers"]["Authorization"]
    assert authorization.startswith("Bearer k8s-aws-v1.")
    url = decode_token(authorization.removeprefix("Bearer "))
    assert sigv4_matches(url, CLUSTER, SECRET_KEY, REGION)


def test_not_found_then_initializing_then_ready(kube, endpoint):
    # The manifest may still be applying (404), then KubeRay initializes, then serves.
    kube.answers[RAYSERVICE_PATH] = [(404, {"kind": "Status", "code": 404}), (200, INITIALIZING), (200, READY)]
    event = poll_event(endpoint)
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert gate.is_complete(event, None)["IsComplete"] is True
    assert [r["path"] for r in kube.requests] == [RAYSERVICE_PATH] * 3


def test_ready_of_an_older_generation_is_not_enough(kube, endpoint):
    # Right after an Update the operator has not reconciled the new spec yet.
    stale = rayservice(*READY["status"]["conditions"], generation=2, observed=1)
    kube.answers[RAYSERVICE_PATH] = [(200, stale)]
    assert gate.is_complete(poll_event(endpoint, request_type="Update"), None) == {"IsComplete": False}


def test_ready_while_upgrading_is_not_enough(kube, endpoint):
    # A zero-downtime upgrade keeps the old cluster Ready while the new one comes up.
    upgrading = rayservice(
        condition("Ready", "True", "NonZeroServeEndpoints"),
        condition(
            "UpgradeInProgress", "True", "BothActivePendingClustersExist", "Both active and pending Ray clusters exist"
        ),
    )
    kube.answers[RAYSERVICE_PATH] = [(200, upgrading)]
    assert gate.is_complete(poll_event(endpoint, request_type="Update"), None) == {"IsComplete": False}


def upgrade_status(
    *,
    generation: int,
    observed: int,
    active: str,
    active_apps: str = "RUNNING",
    pending: str = "",
    pending_apps: str | None = None,
    condition_generation: int | None = None,
) -> dict:
    """A RayService status as KubeRay 1.7's calculateStatus writes it: observedGeneration,
    the active and pending clusters with their Serve applications, and the conditions that
    follow from them (UpgradeInProgress=True exactly when both clusters exist)."""
    both = bool(active and pending)
    conditions = [
        condition("Ready", "True", "NonZeroServeEndpoints", "Number of serve endpoints is greater than 0"),
        condition(
            "UpgradeInProgress",
            "True" if both else "False",
            "BothActivePendingClustersExist" if both else "NoPendingCluster",
        ),
    ]
    for item in conditions:
        item["observedGeneration"] = observed if condition_generation is None else condition_generation
    body = rayservice(*conditions, generation=generation, observed=observed, active=active)
    body["status"]["activeServiceStatus"]["applicationStatuses"] = {"llm": {"status": active_apps}}
    body["status"]["pendingServiceStatus"] = {"rayClusterName": pending} if pending else {}
    if pending and pending_apps:
        body["status"]["pendingServiceStatus"]["applicationStatuses"] = {"llm": {"status": pending_apps}}
    return body


OLD, NEW = "mistral-raycluster-old00", "mistral-raycluster-new11"


def test_an_update_waits_until_the_new_cluster_is_active_and_serving(kube, endpoint):
    # A new image: KubeRay prepares a pending cluster, deploys Serve on it, switches the
    # serve Service and promotes it; the old cluster stays Ready=True all along.
    kube.answers[RAYSERVICE_PATH] = [
        (200, upgrade_status(generation=2, observed=1, active=OLD)),
        (200, upgrade_status(generation=2, observed=2, active=OLD, pending=NEW)),
        (200, upgrade_status(generation=2, observed=2, active=OLD, pending=NEW, pending_apps="DEPLOYING")),
        (200, upgrade_status(generation=2, observed=2, active=NEW)),
    ]
    event = poll_event(endpoint, request_type="Update")
    assert [gate.is_complete(event, None) for _ in range(3)] == [{"IsComplete": False}] * 3
    done = gate.is_complete(event, None)
    assert done["IsComplete"] is True
    assert (done["Data"]["ActiveRayClusterName"], done["Data"]["ObservedGeneration"]) == (NEW, "2")


def test_a_pending_cluster_is_waited_for_even_without_the_upgrade_condition():
    # Nothing pending means no pending cluster, whatever the conditions say.
    status = upgrade_status(generation=2, observed=2, active=OLD, pending=NEW)
    status["status"]["conditions"] = [c for c in status["status"]["conditions"] if c["type"] == "Ready"]
    verdict = rayservice_status.evaluate(status)
    assert not verdict.ready
    assert (
        verdict.detail == f"upgrade in progress: pending RayCluster {NEW} (no applications yet); {OLD} serves meanwhile"
    )


def test_an_in_place_serve_config_update_waits_for_running_applications(kube, endpoint):
    # A serve-config-only change keeps the cluster; its application goes through DEPLOYING.
    kube.answers[RAYSERVICE_PATH] = [
        (200, upgrade_status(generation=3, observed=3, active=NEW, active_apps="DEPLOYING")),
        (200, upgrade_status(generation=3, observed=3, active=NEW)),
    ]
    event = poll_event(endpoint, request_type="Update")
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert gate.is_complete(event, None)["IsComplete"] is True


@pytest.mark.parametrize(
    "status, detail",
    [
        (upgrade_status(generation=2, observed=2, active=NEW, condition_generation=1),
         "the Ready condition describes generation 1, not 2"),
        (rayservice(*READY["status"]["conditions"], generation=2, observed=None),
         "operator has not observed generation 2 yet (observed None)"),
        (upgrade_status(generation=1, observed=1, active=NEW, active_apps="UNHEALTHY"),
         "Serve applications not running yet: llm=UNHEALTHY"),
    ],
    ids=["stale-ready-condition", "no-observed-generation", "unhealthy-application"],
)
def test_ready_true_is_not_enough_when_the_status_is_stale_or_unhealthy(status, detail):
    verdict = rayservice_status.evaluate(status)
    assert (verdict.ready, verdict.detail) == (False, detail)


def test_initializing_timeout_fails_at_once_and_says_it_is_terminal(kube, endpoint):
    # KubeRay gives up for good: it deletes the clusters and never retries, not even for a new spec.
    message = ("RayService failed to become ready within the configured timeout of 30m0s. Time spent "
               "initializing: 30m4.2s")
    timed_out = rayservice(condition("Ready", "False", "InitializingTimeout", message), active="")
    kube.answers[RAYSERVICE_PATH] = [(200, timed_out)]
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(poll_event(endpoint), None)
    assert str(raised.value) == (
        "RayService serving/mistral was not Ready within its initializing time-out (InitializingTimeout): "
        f"{message}. KubeRay has deleted its Ray clusters and will not try again, not even for a new spec: the "
        "RayService must be created anew (a first deploy's rollback deletes it; otherwise `kubectl -n serving "
        "delete rayservice mistral` and deploy again). Its events and the Ray pods' logs say what kept it from serving"
    )


def test_the_initializing_timeout_is_read_from_the_ready_condition_only(kube, endpoint):
    # The reason on another condition (UpgradeInProgress keeps its own) is no verdict on Ready.
    status = rayservice(condition("Ready", "False", "Initializing", "not yet"), active="")
    status["status"]["conditions"].append(condition("UpgradeInProgress", "Unknown", "InitializingTimeout", "x"))
    kube.answers[RAYSERVICE_PATH] = [(200, status)]
    assert gate.is_complete(poll_event(endpoint), None) == {"IsComplete": False}


def test_timeout_says_what_it_was_still_waiting_for(kube, endpoint):
    kube.answers[RAYSERVICE_PATH] = [(200, upgrade_status(generation=2, observed=2, active=OLD, pending=NEW))]
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(poll_event(endpoint, started_ago_s=120, timeout_s=60, request_type="Update"), None)
    assert f"Still waiting for: upgrade in progress: pending RayCluster {NEW}" in str(raised.value)


def test_validation_failed_fails_at_once(kube, endpoint):
    kube.answers[RAYSERVICE_PATH] = [(200, REJECTED)]
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(poll_event(endpoint, started_ago_s=0), None)
    assert str(raised.value) == (
        "RayService serving/mistral was rejected by KubeRay (ValidationFailed): The RayService spec is invalid "
        "serving/mistral: ray.io/ft-enabled annotation and GcsFaultToleranceOptions are both set."
    )


def test_timeout_reports_conditions_and_recent_events(kube, endpoint):
    kube.answers[RAYSERVICE_PATH] = [(200, INITIALIZING)]
    # Twelve events, out of order, half of them with eventTime only.
    events = [event(i, legacy=i % 2 == 0) for i in (7, 1, 12, 3, 9, 2, 11, 4, 10, 5, 8, 6)]
    kube.answers[EVENTS_PATH] = [(200, {"kind": "EventList", "items": events})]
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(poll_event(endpoint, started_ago_s=120, timeout_s=60), None)
    message = str(raised.value)
    assert message.startswith("RayService serving/mistral did not become Ready in 12")
    assert "Ready=False (Initializing: RayService is initializing)" in message
    assert "UpgradeInProgress=False (Initializing: RayService is initializing)" in message
    # The ten newest, oldest first; the two oldest are left out.
    shown = [f"Reason{i:02d}" for i in range(3, 13)]
    positions = [message.index(reason) for reason in shown]
    assert positions == sorted(positions)
    assert "Reason01" not in message and "Reason02" not in message
    assert "2026-11-23T04:11:00Z Warning Reason11: event number 11 (x3)" in message
    assert "2026-11-23T04:12:00Z Normal Reason12: event number 12" in message
    # The events were asked for this RayService only.
    events_request = next(r for r in kube.requests if r["path"].startswith(EVENTS_PATH))
    selector = parse_qs(urlsplit(events_request["path"]).query)["fieldSelector"][0]
    assert set(selector.split(",")) == {f"involvedObject.name={NAME}", "involvedObject.kind=RayService"}


def test_event_times_of_every_shape_sort_together():
    # lastTimestamp, eventTime with microseconds, a time without zone, and none at all.
    events = [
        {"reason": "b", "eventTime": "2026-11-23T04:00:02.500000Z"},
        {"reason": "none"},
        {"reason": "c", "lastTimestamp": "2026-11-23T04:00:03"},
        {"reason": "a", "lastTimestamp": "2026-11-23T04:00:01Z"},
    ]
    assert [e["reason"] for e in report.recent_events(events)] == ["none", "a", "b", "c"]
    assert report.format_events(events) == (
        "? none: | 2026-11-23T04:00:01Z a: | 2026-11-23T04:00:02Z b: | 2026-11-23T04:00:03Z c:"
    )


def test_timeout_report_stays_short_with_long_messages(kube, endpoint):
    noisy = rayservice(condition("Ready", "False", "ZeroServeEndpoints", "x" * 5000), active="")
    kube.answers[RAYSERVICE_PATH] = [(200, noisy)]
    kube.answers[EVENTS_PATH] = [(200, {"items": [event(i, message="y" * 2000) for i in range(1, 13)]})]
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(poll_event(endpoint, started_ago_s=120, timeout_s=60), None)
    message = str(raised.value)
    assert len(message) <= 3500
    assert "Ready=False (ZeroServeEndpoints: xxx" in message
    assert "Reason12" in message


def test_timeout_while_the_rayservice_never_appeared(kube, endpoint):
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(poll_event(endpoint, started_ago_s=120, timeout_s=60), None)
    assert "Conditions: RayService not found. Recent events: none" in str(raised.value)


def test_server_errors_are_waited_out_then_reported(kube, endpoint):
    kube.answers[RAYSERVICE_PATH] = [(503, {"kind": "Status", "message": "etcdserver: leader changed"})]
    assert gate.is_complete(poll_event(endpoint), None) == {"IsComplete": False}
    with pytest.raises(errors.GateError, match=r"Last API error: GET .*: HTTP 503 etcdserver: leader changed"):
        gate.is_complete(poll_event(endpoint, started_ago_s=120, timeout_s=60), None)


def test_forbidden_is_waited_out_briefly_then_fails(kube, endpoint):
    forbidden = {"kind": "Status", "message": 'rayservices.ray.io "mistral" is forbidden', "code": 403}
    kube.answers[RAYSERVICE_PATH] = [(403, forbidden)]
    assert gate.is_complete(poll_event(endpoint, started_ago_s=10), None) == {"IsComplete": False}
    with pytest.raises(errors.GateError, match=r"is forbidden .*must allow get on rayservices.ray.io"):
        gate.is_complete(poll_event(endpoint, started_ago_s=gate.AUTH_GRACE_S + 5), None)


def test_redirects_are_not_followed(kube, endpoint):
    # Following one would hand the bearer token to wherever it points.
    kube.answers[RAYSERVICE_PATH] = [(302, {"location": "/elsewhere"})]
    with pytest.raises(errors.GateError, match=f"^RayService serving/mistral: GET {RAYSERVICE_PATH}: HTTP 302 Found$"):
        gate.is_complete(poll_event(endpoint), None)
    assert [r["path"] for r in kube.requests] == [RAYSERVICE_PATH]


def test_delete_completes_without_calling_the_cluster(kube, endpoint):
    assert gate.is_complete(poll_event(endpoint, request_type="Delete"), None) == {"IsComplete": True}
    assert kube.requests == []


@pytest.mark.parametrize("endpoint_url", ["http://kube.example:8080", "http://10.0.0.1", "ftp://127.0.0.1"])
def test_plain_http_only_to_loopback(kube, endpoint_url):
    # Refused before any connection: a bearer token never travels in the clear.
    with pytest.raises(errors.GateError, match=r"^Endpoint must be an https:// URL"):
        gate.is_complete(poll_event(endpoint_url), None)
    assert kube.requests == []


# ---------------------------------------------------------------------------------------
# Teardown: Custom::RayServiceGone waits on Delete for what the RayService leaves behind
# ---------------------------------------------------------------------------------------

GONE = "Custom::RayServiceGone"


def listing(*items: dict) -> dict:
    return {"kind": "List", "items": list(items)}


def k8s_object(name: str, *finalizers: str, service_type: str | None = None) -> dict:
    body = {"metadata": {"name": name, "namespace": NAMESPACE, "finalizers": list(finalizers)}}
    if service_type:
        body["spec"] = {"type": service_type}
    return body


REDIS_CLEANUP = "ray.io/gcs-ft-redis-cleanup-finalizer"
LB_CLEANUP = "service.eks.amazonaws.com/resources"


def test_gone_has_nothing_to_do_on_create(kube, endpoint):
    event = poll_event(endpoint, resource_type=GONE)
    del event["Data"]
    assert gate.on_event(event, None) == {"PhysicalResourceId": f"{NAMESPACE}/{NAME}"}
    assert gate.is_complete(event, None) == {"IsComplete": True}
    assert kube.requests == []


def test_delete_waits_until_the_clusters_and_load_balancers_are_gone(kube, endpoint):
    # The RayService is gone (kubectl delete returned), but its RayCluster still runs the
    # Redis cleanup Job and the serve Service still holds its NLB.
    gradio = k8s_object("gradio", service_type="ClusterIP")
    kube.answers[RAYCLUSTERS_PATH] = [
        (200, listing(k8s_object("ray-serve-llm-raycluster-x1", REDIS_CLEANUP))), (200, listing()), (200, listing()),
    ]
    kube.answers[SERVICES_PATH] = [
        (200, listing(k8s_object("ray-serve-llm-serve-svc", LB_CLEANUP, service_type="LoadBalancer"), gradio)),
        (200, listing(k8s_object("ray-serve-llm-serve-svc", LB_CLEANUP, service_type="LoadBalancer"), gradio)),
        (200, listing(gradio)),
    ]
    event = poll_event(endpoint, request_type="Delete", resource_type=GONE)
    started = gate.on_event({**event, "Data": None}, None)
    assert started["PhysicalResourceId"] == f"{NAMESPACE}/{NAME}" and "StartedAt" in started["Data"]
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert gate.is_complete(event, None) == {"IsComplete": True}
    assert {r["path"] for r in kube.requests} == {RAYSERVICE_PATH, RAYCLUSTERS_PATH, SERVICES_PATH}


def test_delete_that_does_not_finish_names_what_is_left(kube, endpoint):
    kube.answers[RAYSERVICE_PATH] = [(200, k8s_object(NAME, "ray.io/rayservice-finalizer"))]
    kube.answers[RAYCLUSTERS_PATH] = [(200, listing(k8s_object("ray-serve-llm-raycluster-x1", REDIS_CLEANUP)))]
    kube.answers[SERVICES_PATH] = [
        (200, listing(k8s_object("ray-serve-llm-serve-svc", LB_CLEANUP, service_type="LoadBalancer")))
    ]
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(
            poll_event(endpoint, request_type="Delete", resource_type=GONE, started_ago_s=120, timeout_s=60), None
        )
    # The waited seconds are 120 or 121 (StartedAt is whole seconds).
    assert re.sub(r"in 12[01] s;", "in 120 s;", str(raised.value)) == (
        "RayService serving/mistral teardown did not finish in 120 s; still there: "
        "RayService mistral (finalizers: ray.io/rayservice-finalizer); "
        f"RayCluster ray-serve-llm-raycluster-x1 (finalizers: {REDIS_CLEANUP}); "
        f"Service ray-serve-llm-serve-svc (finalizers: {LB_CLEANUP}). "
        "Delete them (or remove their finalizers) and destroy again."
    )


# ---------------------------------------------------------------------------------------
# TLS with the cluster CA
# ---------------------------------------------------------------------------------------


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    assert shutil.which("openssl"), "the openssl command makes the test CA: install Debian's openssl"
    directory = tmp_path_factory.mktemp("tls")
    key, cert = _self_signed(directory, "cluster-ca")
    _, other_cert = _self_signed(directory, "other-ca")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    kube = FakeKube(answers={RAYSERVICE_PATH: [(200, READY)]})
    server = _serve(kube, tls=context)
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
