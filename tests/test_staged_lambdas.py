"""Every Lambda handler of the project, run from its staged asset directory (cdk.out) by a
Python started without site-packages, with only the standard library and the Lambda
runtime's boto3 and botocore, against the fakes of tests/test_lambda_*.py.

Not exercised here: Lambda's Python 3.14 (here the project's Python) and AWS's authorization
of the calls (tests/test_resource_policies.py evaluates the policies).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest

from tests import staged
from tests.conftest import ROOT
from tests.fakes.openai_serve import FakeServe, start_fake_serve
from tests.fakes.readiness_kube import (
    READY,
    FakeKube,
    k8s_object,
    listing,
    self_signed,
    serve_fake_kube,
)
from tests.lambda_runtime import RUNTIME_PACKAGES, StagedFunction, invoke, run_staged, same_tree
from tests.staged import (
    ACCOUNT,
    REGION,
    SETTINGS,
    moto_client,
    stage_template,
    staged_file_asset,
)

pytestmark = pytest.mark.staged
# The session's cloud assembly and moto (tests/staged.py), taken in by name.
assembly, aws_endpoint = staged.assembly, staged.aws_endpoint

@pytest.fixture(scope="module")
def functions(assembly) -> list[StagedFunction]:
    """The stage's Python functions whose code is one of the project's lambda/ folders."""
    found = []
    for stack in ("network", "cluster", "gcs-store", "serving"):
        for name, resource in stage_template(assembly, stack)["Resources"].items():
            properties = resource["Properties"]
            if resource["Type"] != "AWS::Lambda::Function" or not properties["Runtime"].startswith("python"):
                continue
            code = staged_file_asset(assembly, properties["Code"]["S3Key"])
            folders = [f.name for f in (ROOT / "lambda").iterdir() if same_tree(code, f)]
            if folders:
                found.append(StagedFunction(name, properties["Handler"], code, folders[0],
                                            properties.get("Environment", {}).get("Variables", {})))
    return found


@pytest.fixture(scope="module")
def lambda_runtime(tmp_path_factory) -> Path:
    """The runtime's packages (boto3, botocore and what they need), from this venv."""
    runtime = tmp_path_factory.mktemp("lambda-runtime")
    site = Path(boto3.__file__).parent.parent
    for name in RUNTIME_PACKAGES:
        path = site / name if (site / name).is_dir() else site / f"{name}.py"
        (runtime / path.name).symlink_to(path)
    return runtime


def test_every_project_handler_is_staged_and_covered(functions):
    assert {f.key for f in functions} == set(SCENARIOS)
    assert {f.folder for f in functions} == {p.name for p in (ROOT / "lambda").iterdir() if p.is_dir()}


@pytest.fixture(scope="module")
def cluster_api(tmp_path_factory):
    """The fake Kubernetes API over TLS with its own CA, as the EKS endpoint is."""
    import ssl

    key, cert = self_signed(tmp_path_factory.mktemp("cluster-ca"), "cluster-ca")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    kube = FakeKube()
    server = serve_fake_kube(kube, tls=tls)
    yield kube, f"https://127.0.0.1:{server.server_address[1]}", base64.b64encode(cert.read_bytes()).decode()
    server.shutdown()
    server.server_close()


def gate_event(assembly: Path, resource_type: str, request_type: str, cluster_api) -> dict[str, Any]:
    """A CloudFormation request with the gate resource's properties from the template; the
    values CloudFormation resolves at deploy time are those of the fake cluster."""
    _, url, ca = cluster_api
    (properties,) = [r["Properties"] for r in stage_template(assembly, "serving")["Resources"].values()
                     if r["Type"] == resource_type]
    given = {"ClusterName": SETTINGS.cluster.name, "Endpoint": url, "CertificateAuthority": ca}
    resolved = {k: v if isinstance(v, str) else given.get(k, f"<{k} resolved by CloudFormation>")
                for k, v in properties.items()}
    return {
        "RequestType": request_type,
        "ResourceType": resource_type,
        "RequestId": "d3b1c2f0-0000-4000-8000-000000000000",
        "StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/serving/abc",
        "LogicalResourceId": "Readiness",
        "ResourceProperties": resolved,
        "PhysicalResourceId": f"{resolved['Namespace']}/{resolved['RayServiceName']}",
    }


def scenario_on_event(function, assembly, runtime, tmp_path, cluster_api, aws_endpoint):
    event = gate_event(assembly, "Custom::RayServiceReady", "Create", cluster_api)
    del event["PhysicalResourceId"]
    result = invoke(function, event, runtime, tmp_path, {})
    assert result["PhysicalResourceId"] == "ray-serving/ray-serve-llm"
    assert result["Data"]["StartedAt"].isdigit()


def scenario_is_complete(function, assembly, runtime, tmp_path, cluster_api, aws_endpoint):
    kube, _, _ = cluster_api
    ready = gate_event(assembly, "Custom::RayServiceReady", "Create", cluster_api)
    properties = ready["ResourceProperties"]
    namespace = properties["Namespace"]
    path = f"/apis/ray.io/v1/namespaces/{namespace}/rayservices/ray-serve-llm"
    service = f"/api/v1/namespaces/{namespace}/services/{properties['ServeServiceName']}"
    # The API keys secret as CloudFormation makes it: the gate sends its own entry.
    gate_key = "gate-" + "k" * 43
    keys = moto_client(aws_endpoint, "secretsmanager").create_secret(
        Name=f"api-keys-{time.time_ns()}", SecretString=json.dumps({properties["ApiKeyName"]: gate_key,
                                                                    "serve-probe": "p" * 48}))
    properties["ApiKeysSecretArn"] = keys["ARN"]
    serve = FakeServe(api_key=gate_key)
    server = start_fake_serve(serve)
    # The serve load balancer's address as the controller writes it; the fake endpoint's
    # port stands in for the serve port (8000 on loopback is the local stack's).
    assert properties["ServePort"] == "8000"
    properties["ServePort"] = str(server.server_address[1])
    kube.answers.clear()
    kube.requests.clear()
    kube.answers[path] = [(200, READY)]
    kube.answers[service] = [(200, {"status": {"loadBalancer": {"ingress": [{"hostname": "127.0.0.1"}]}}})]
    ready["Data"] = {"StartedAt": str(int(time.time()))}
    try:
        done = invoke(function, ready, runtime, tmp_path, {}, {"AWS_ENDPOINT_URL_SECRETS_MANAGER": aws_endpoint})
    finally:
        server.shutdown()
        server.server_close()
    assert done["IsComplete"] is True
    assert done["Data"]["Models"] == serve.models[0]
    assert [r["path"] for r in kube.requests] == [path, service]
    assert kube.requests[0]["headers"]["Authorization"].startswith("Bearer k8s-aws-v1.")
    assert serve.received == [("GET", "/v1/models", None)]
    # Teardown: the deleted RayService left no RayCluster and no load balancer.
    gone = gate_event(assembly, "Custom::RayServiceGone", "Delete", cluster_api)
    gone["Data"] = {"StartedAt": str(int(time.time()))}
    kube.answers.clear()
    kube.requests.clear()
    kube.answers[f"/apis/ray.io/v1/namespaces/{namespace}/rayclusters"] = [(200, listing())]
    kube.answers[f"/api/v1/namespaces/{namespace}/services"] = [
        (200, listing(k8s_object("gradio", service_type="ClusterIP")))
    ]
    assert invoke(function, gone, runtime, tmp_path, {}) == {"IsComplete": True}
    assert {r["path"] for r in kube.requests} == {
        path, f"/apis/ray.io/v1/namespaces/{namespace}/rayclusters", f"/api/v1/namespaces/{namespace}/services"
    }


def scenario_probe(function, assembly, runtime, tmp_path, cluster_api, aws_endpoint):
    # The API keys secret as CloudFormation makes it: the probe sends its own entry.
    probe_key = "probe-" + "k" * 40
    keys = moto_client(aws_endpoint, "secretsmanager").create_secret(
        Name=f"api-keys-{time.time_ns()}", SecretString=json.dumps({"serve-probe": probe_key, "chat-ui": "u" * 48}))
    assert function.environment["API_KEY_NAME"] == "serve-probe"
    serve = FakeServe(api_key=probe_key)
    server = start_fake_serve(serve)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        summary = invoke(function, {"source": "aws.events", "detail-type": "Scheduled Event"}, runtime, tmp_path,
                         {"SERVE_URL": url, "API_KEYS_SECRET_ARN": keys["ARN"]},
                         {"AWS_ENDPOINT_URL_CLOUDWATCH": aws_endpoint,
                          "AWS_ENDPOINT_URL_SECRETS_MANAGER": aws_endpoint})
    finally:
        server.shutdown()
        server.server_close()
    requests = int(function.environment["PROBE_REQUESTS"])
    assert (summary["requests"], summary["failed"]) == (requests, 0)
    assert len([r for r in serve.received if r[0] == "POST"]) == requests
    cloudwatch = moto_client(aws_endpoint, "cloudwatch")
    metrics = cloudwatch.list_metrics(Namespace=function.environment["METRIC_NAMESPACE"])["Metrics"]
    dimensions = [{"Name": "Service", "Value": function.environment["SERVICE_NAME"]}]
    assert {m["MetricName"] for m in metrics if m["Dimensions"] == dimensions} == {
        "Availability", "Latency", "Requests", "FailedRequests"
    }


def scenario_api_key_entries(function, assembly, runtime, tmp_path, cluster_api, aws_endpoint):
    """The keys secret as CloudFormation creates it (the initial consumers' keys), then the
    deploys that follow: each adds the entries of consumers without one and keeps the rest."""
    secrets = moto_client(aws_endpoint, "secretsmanager")
    (properties,) = [r["Properties"] for r in stage_template(assembly, "serving")["Resources"].values()
                     if r["Type"] == "Custom::ApiKeyEntries"]
    names = [c["Name"] for c in properties["Consumers"]]
    assert names == ["chat-ui", "serve-probe", "ha-drill", "operator", "readiness-gate"]
    run = time.time_ns()
    seeds = {name: secrets.create_secret(Name=f"seed-{name}-{run}", SecretString=f"{name}-key".ljust(48, "x"))["ARN"]
             for name in [*names, "team-a"]}
    keys = secrets.create_secret(Name=f"api-keys-{run}", SecretString=json.dumps(
        {name: f"{name}-key".ljust(48, "x") for name in names[:4]}))["ARN"]
    env = {"AWS_ENDPOINT_URL_SECRETS_MANAGER": aws_endpoint}

    def event(request_type: str, consumers: list[str], **extra: Any) -> dict[str, Any]:
        return {"RequestType": request_type, "ResourceType": "Custom::ApiKeyEntries",
                "RequestId": "7c2e8a10-0000-4000-8000-000000000000",
                "StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/serving/abc",
                "LogicalResourceId": "ApiKeysEntries",
                "ResourceProperties": {"ServiceToken": "arn:aws:lambda:provider",
                                       "KeysSecretArn": keys,
                                       "Consumers": [{"Name": n, "SeedArn": seeds[n]} for n in consumers]},
                **extra}

    def raw() -> tuple[str, str]:
        """The keys secret's current value and version (a write makes a new version)."""
        value = secrets.get_secret_value(SecretId=keys)
        return value["SecretString"], value["VersionId"]

    def current() -> tuple[dict[str, str], str]:
        text, version = raw()
        return json.loads(text), version

    def seed(name: str) -> str:
        return secrets.get_secret_value(SecretId=seeds[name])["SecretString"]

    # Create, with the secret CloudFormation made: the readiness gate's entry is added.
    created = invoke(function, event("Create", names), runtime, tmp_path, {}, env)
    assert created == {"PhysicalResourceId": keys, "Data": {"Added": "readiness-gate"}}
    keys_now, _ = current()
    assert keys_now == {name: seed(name) for name in names}
    # An operator adds alice and revokes the probe's generated key (a new value).
    edited = {**keys_now, "alice": "a" * 48, "serve-probe": "rotated-" + "p" * 40}
    edit = secrets.put_secret_value(SecretId=keys, SecretString=json.dumps(edited))["VersionId"]
    # The same consumers again: nothing to add, nothing written.
    same = invoke(function, event("Update", names, PhysicalResourceId=keys), runtime, tmp_path, {}, env)
    assert same == {"PhysicalResourceId": keys, "Data": {"Added": ""}}
    assert current() == (edited, edit)
    # A deploy that adds team-a and drops ha-drill: alice, the rotated key and ha-drill's entry stay.
    consumers = [*[n for n in names if n != "ha-drill"], "team-a"]
    updated = invoke(function, event("Update", consumers, PhysicalResourceId=keys), runtime, tmp_path, {}, env)
    assert updated == {"PhysicalResourceId": keys, "Data": {"Added": "team-a"}}
    merged, version = current()
    assert merged == {**edited, "team-a": seed("team-a")} and version != edit
    # A hand edit that broke the JSON: the deploy fails, naming the secret and the fix; the secret is left as it is.
    secrets.put_secret_value(SecretId=keys, SecretString='{"alice": "' + "a" * 48)
    broken = raw()
    failed = run_staged(function, event("Update", [*consumers, "ha-drill"], PhysicalResourceId=keys), runtime,
                        tmp_path, {}, env)
    assert failed.returncode != 0
    assert f"the API keys secret {keys} is not JSON (line 1, column 11): restore a JSON object" in failed.stderr
    assert "a" * 48 not in failed.stderr  # no key in the message
    assert raw() == broken
    # Valid JSON that is not an object of strings fails the same way.
    for value, problem in (('["' + "a" * 48 + '"]', "holds a JSON array, not an object"),
                           ('{"alice": 1, "bob": null}', "has entries whose keys are not strings (alice, bob)")):
        secrets.put_secret_value(SecretId=keys, SecretString=value)
        broken = raw()
        failed = run_staged(function, event("Update", consumers, PhysicalResourceId=keys), runtime, tmp_path, {}, env)
        assert failed.returncode != 0
        assert f"the API keys secret {keys} {problem}: restore a JSON object" in failed.stderr
        assert raw() == broken
    # Delete: nothing happens to the secret (CloudFormation deletes it itself).
    secrets.put_secret_value(SecretId=keys, SecretString=json.dumps(edited))
    before = current()
    deleted = invoke(function, event("Delete", consumers, PhysicalResourceId=keys), runtime, tmp_path, {}, env)
    assert deleted == {"PhysicalResourceId": keys}
    assert current() == before


class QueryRange(BaseHTTPRequestHandler):
    """A Prometheus-compatible query_range API on loopback: two series, a point every step."""

    forms: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        QueryRange.forms.append({"path": self.path, **form})
        start, end, step = float(form["start"]), float(form["end"]), int(form["step"])
        offsets = range(0, int(end - start), step)
        result = [{"metric": {"pod": pod}, "values": [[start + t, str(t * k)] for t in offsets]}
                  for pod, k in (("worker-1", 1), ("worker-2", 2))]
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_) -> None:
        pass


def scenario_promql_widget(function, assembly, runtime, tmp_path, cluster_api, aws_endpoint):
    # The dashboard's own call: one of its custom widgets, with its params as synthesized.
    (widget,) = [w for w in staged_dashboard_widgets(assembly) if w["properties"]["title"] == "Requests per second"]
    params = widget["properties"]["params"]
    now_ms = int(time.time() * 1000)
    event = {**params, "widgetContext": {"params": params, "width": 588, "height": 300, "theme": "light",
                                         "timeRange": {"mode": "relative", "start": now_ms - 600_000, "end": now_ms}}}
    server = ThreadingHTTPServer(("127.0.0.1", 0), QueryRange)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = invoke(function, event, runtime, tmp_path, {},
                      {"PROMQL_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}"})
    finally:
        server.shutdown()
        server.server_close()
    (form,) = QueryRange.forms
    assert form["path"] == "/api/v1/query_range" and form["query"] == params["query"]
    assert form["step"] == "5" and form["limit"] == function.environment["MAX_SERIES"]
    assert page.count("<polyline") == 2 and 'class="legend"' in page and "requests/s" in page


def staged_dashboard_widgets(assembly: Path) -> list[dict[str, Any]]:
    """The dashboard's widgets; what CloudFormation resolves (ARNs, the region, all inside
    JSON strings) reads as <token>."""
    (dashboard,) = [r for r in stage_template(assembly, "serving")["Resources"].values()
                    if r["Type"] == "AWS::CloudWatch::Dashboard"]
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body = "".join(p if isinstance(p, str) else "<token>" for p in parts)
    return json.loads(body)["widgets"]


SCENARIOS = {
    ("promql_widget", "index.render"): scenario_promql_widget,
    ("rayservice_ready", "index.on_event"): scenario_on_event,
    ("rayservice_ready", "index.is_complete"): scenario_is_complete,
    ("serve_probe", "index.handler"): scenario_probe,
    ("api_keys_merge", "index.add_missing_entries"): scenario_api_key_entries,
}


@pytest.mark.parametrize("key", sorted(SCENARIOS), ids=lambda key: f"{key[0]}:{key[1]}")
def test_handler_runs_from_its_staged_asset_with_only_the_runtime(
    key, functions, assembly, lambda_runtime, tmp_path, cluster_api, aws_endpoint
):
    matching = [f for f in functions if f.key == key]
    assert matching, f"no function runs {key}"
    for function in matching:
        SCENARIOS[key](function, assembly, lambda_runtime, tmp_path, cluster_api, aws_endpoint)
