"""The readiness gate's API check (lambda/rayservice_ready/serve_api.py): once the RayService
is Ready, the gate reads the serve Service's load balancer address from the Kubernetes API,
its own key from the API keys secret, and asks GET /v1/models with it. Against real local
servers: the fake Kubernetes API, an HTTP server on 127.0.0.1 that answers 200/401/500 (or a
port nothing listens on), and moto's Secrets Manager. A fake Secrets Manager client stands in
only for what moto does not enforce: IAM's AccessDenied."""

from __future__ import annotations

import json
import re
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from ray_serve_ha.charts.key_propagation import (
    API_KEY_PROPAGATION_S,
    API_KEYS_REFRESH_S,
    KUBELET_POD_SYNC_MAX_S,
    SERVE_KEY_RELOAD_S,
)
from ray_serve_ha.constructs.api_keys import READINESS_GATE
from ray_serve_ha.constructs.readiness import API_KEY_GRACE, POLL_INTERVAL
from tests import serve_backend  # noqa: F401  (puts images/ray-serve on sys.path)
from tests.fakes import readiness_kube
from tests.fakes.openai_serve import MODEL, FakeServe, start_fake_serve
from tests.fakes.readiness_kube import NAMESPACE, RAYSERVICE_PATH, READY, poll_event
from tests.lambda_handlers import load_handler, load_module
from tests.moto_server import free_port, moto_server

from ray_serve_llm import api_keys as serve_key_ring  # isort: skip

gate = load_handler("rayservice_ready")
errors = load_module("rayservice_ready", "gate_errors")
serve_api = load_module("rayservice_ready", "serve_api")

# The fake API server and the environment's fake credentials, taken in by name.
fake_aws, server = readiness_kube.fake_aws, readiness_kube.server
kube, endpoint = readiness_kube.kube, readiness_kube.endpoint

SERVE_SERVICE = "mistral-serve-svc"
SERVICE_PATH = f"/api/v1/namespaces/{NAMESPACE}/services/{SERVE_SERVICE}"
GATE_KEY = "gate-" + "g" * 43
GRACE_S = int(API_KEY_GRACE.to_seconds())


# ---------------------------------------------------------------------------------------
# A scripted OpenAI-compatible endpoint, moto's Secrets Manager
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models_server():
    """The OpenAI endpoint, which takes only the gate's key (401 for any other)."""
    fake = FakeServe(api_key=GATE_KEY)
    http_server = start_fake_serve(fake)
    yield fake, http_server.server_address[1]
    http_server.shutdown()
    http_server.server_close()


@pytest.fixture
def models(models_server):
    fake, _ = models_server
    fake.models_script[:] = ["ok"]
    fake.received.clear()
    return fake


@pytest.fixture(scope="module")
def secrets_endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture
def keys_secret(secrets_endpoint, monkeypatch, fake_aws):
    """The API keys secret in moto, as CloudFormation makes it; the gate's botocore client
    is pointed at moto through the standard endpoint variable."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets_endpoint)
    serve_api.secrets_client.cache_clear()
    client = boto3.client("secretsmanager", endpoint_url=secrets_endpoint, region_name=readiness_kube.REGION)

    def make(value: str) -> str:
        return client.create_secret(Name=f"api-keys-{time.time_ns()}", SecretString=value)["ARN"]

    yield make
    serve_api.secrets_client.cache_clear()


def ready_with_api(kube, endpoint, models_server, keys_secret, *, address="127.0.0.1", port=None,
                   keys=None, started_ago_s=0.0, **props) -> dict:
    """A Ready RayService whose serve Service's load balancer is `address`; the event of a
    gate given the API keys."""
    kube.answers[RAYSERVICE_PATH] = [(200, READY)]
    ingress = [{"hostname": address}] if address else []
    kube.answers[SERVICE_PATH] = [(200, {"metadata": {"name": SERVE_SERVICE, "namespace": NAMESPACE},
                                         "spec": {"type": "LoadBalancer"},
                                         "status": {"loadBalancer": {"ingress": ingress}}})]
    secret_arn = keys_secret(json.dumps(keys if keys is not None else {READINESS_GATE: GATE_KEY, "chat-ui": "u" * 48}))
    event = poll_event(endpoint, started_ago_s=started_ago_s, **props)
    event["ResourceProperties"].update({
        "ServeServiceName": SERVE_SERVICE,
        "ServePort": str(port or models_server[1]),
        "ApiKeysSecretArn": secret_arn,
        "ApiKeyName": READINESS_GATE,
        "ApiKeyGraceSeconds": str(GRACE_S),
    })
    return event


# ---------------------------------------------------------------------------------------
# What completes, what waits
# ---------------------------------------------------------------------------------------


def test_a_ready_rayservice_completes_once_the_api_lists_models_for_the_gates_key(
    kube, endpoint, models_server, models, keys_secret
):
    result = gate.is_complete(ready_with_api(kube, endpoint, models_server, keys_secret), None)
    assert result["IsComplete"] is True
    assert result["Data"]["Models"] == MODEL
    assert result["Data"]["ActiveRayClusterName"] == "mistral-raycluster-abcde"
    # One request, answered 200: the endpoint refuses any key but the gate's.
    assert models.received == [("GET", "/v1/models", None)]
    # The status first, then the serve Service's address.
    assert [r["path"] for r in kube.requests] == [RAYSERVICE_PATH, SERVICE_PATH]


@pytest.mark.parametrize(
    "address, port, script, waiting_for",
    [
        (None, None, ["ok"], f"the serve Service {NAMESPACE}/{SERVE_SERVICE} has no load balancer address yet"),
        ("serve-lb.invalid", None, ["ok"], "no answer:"),
        ("127.0.0.1", "refused", ["ok"], "Connection refused"),
        ("127.0.0.1", None, ["500"], "HTTP 500 Internal Server Error"),
        ("127.0.0.1", None, ["empty"], "HTTP 200 but no model listed"),
    ],
    ids=["no-address-yet", "dns-not-resolving", "connection-refused", "server-error", "no-model"],
)
def test_an_api_that_does_not_answer_yet_is_waited_for_then_reported(
    kube, endpoint, models_server, models, keys_secret, address, port, script, waiting_for
):
    models.models_script[:] = script
    closed = free_port() if port == "refused" else None
    event = ready_with_api(kube, endpoint, models_server, keys_secret, address=address, port=closed)
    assert gate.is_complete(event, None) == {"IsComplete": False}
    # At the time-out the deploy fails with the API's last answer, not the RayService's status.
    late = ready_with_api(kube, endpoint, models_server, keys_secret, address=address, port=closed,
                          started_ago_s=120, timeout_s=60)
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(late, None)
    message = str(raised.value)
    assert message.startswith("RayService serving/mistral is Ready, but its OpenAI API did not answer the readiness "
                              "gate with a model list in 12")
    assert waiting_for in message
    assert f"kubectl -n {NAMESPACE} describe service {SERVE_SERVICE}" in message


def test_the_serve_service_not_created_yet_is_waited_for(kube, endpoint, models_server, models, keys_secret):
    event = ready_with_api(kube, endpoint, models_server, keys_secret)
    del kube.answers[SERVICE_PATH]
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert models.received == []


def test_the_api_is_not_asked_before_the_rayservice_is_ready(kube, endpoint, models_server, models, keys_secret):
    event = ready_with_api(kube, endpoint, models_server, keys_secret)
    kube.answers[RAYSERVICE_PATH] = [(200, readiness_kube.INITIALIZING)]
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert [r["path"] for r in kube.requests] == [RAYSERVICE_PATH]
    assert models.received == []


# ---------------------------------------------------------------------------------------
# A refused key: waited out as long as a key takes to reach the replicas, then a failure
# ---------------------------------------------------------------------------------------


def test_a_refused_key_is_waited_out_while_it_may_still_be_on_its_way(
    kube, endpoint, models_server, models, keys_secret
):
    # External Secrets, the kubelet and the replicas bring the key within the grace: 401,
    # then the model list.
    models.models_script[:] = ["401", "401", "ok"]
    event = ready_with_api(kube, endpoint, models_server, keys_secret, started_ago_s=GRACE_S - 40)
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert gate.is_complete(event, None) == {"IsComplete": False}
    assert gate.is_complete(event, None)["IsComplete"] is True


def test_a_key_refused_past_the_grace_fails_with_what_to_check(kube, endpoint, models_server, models, keys_secret):
    models.models_script[:] = ["401"]
    event = ready_with_api(kube, endpoint, models_server, keys_secret, started_ago_s=GRACE_S + 1)
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(event, None)
    arn = event["ResourceProperties"]["ApiKeysSecretArn"]
    port = models_server[1]
    # How long it waited, in whole seconds (the poll's own time may add one).
    message = re.sub(r"\) (\d+) s into", lambda m: ") <waited> s into" if int(m[1]) in (GRACE_S + 1, GRACE_S + 2)
                     else m[0], str(raised.value))
    assert message == (
        "RayService serving/mistral is Ready, but its OpenAI API refuses the readiness gate's own API key (GET "
        f"http://127.0.0.1:{port}/v1/models: HTTP 401 Incorrect API key provided.) <waited> s into the wait; "
        f"a key reaches the Serve replicas within {GRACE_S} s. The replicas do not have the 'readiness-gate' entry "
        f"of the API keys secret {arn}. Check that the secret holds that entry, and that External Secrets syncs it "
        f"into the pods: `kubectl -n {NAMESPACE} get externalsecrets` (each should say SecretSynced; `kubectl -n "
        f"{NAMESPACE} describe externalsecret <name>` says why not). Then deploy again."
    )
    assert GATE_KEY not in str(raised.value)


def test_the_grace_is_how_long_a_key_takes_to_reach_the_replicas_plus_a_poll():
    # External Secrets' refresh of the API keys, the kubelet's resync of the mounted Secret
    # (1 min + 50 % jitter), the replicas' look at the file, and one more poll after that.
    assert API_KEY_PROPAGATION_S == API_KEYS_REFRESH_S + KUBELET_POD_SYNC_MAX_S + SERVE_KEY_RELOAD_S == 125
    assert GRACE_S == API_KEY_PROPAGATION_S + POLL_INTERVAL.to_seconds() == 155
    # The library's reload interval is the image's.
    assert serve_key_ring.RELOAD_INTERVAL_S == SERVE_KEY_RELOAD_S


# ---------------------------------------------------------------------------------------
# The secret
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, problem",
    [
        (json.dumps({"chat-ui": "u" * 48}), "has no key named 'readiness-gate': add one"),
        (json.dumps({READINESS_GATE: ""}), "has no key named 'readiness-gate': add one"),
        (json.dumps(["not", "an", "object"]), "is not a JSON object of name: key: make it one"),
        ('{"readiness-gate": "half-written', "is not a JSON object of name: key: make it one"),
    ],
    ids=["missing-entry", "empty-entry", "a-list", "not-json"],
)
def test_a_bad_keys_secret_fails_at_once(kube, endpoint, models_server, models, keys_secret, value, problem):
    event = ready_with_api(kube, endpoint, models_server, keys_secret)
    arn = keys_secret(value)
    event["ResourceProperties"]["ApiKeysSecretArn"] = arn
    with pytest.raises(errors.GateError) as raised:
        gate.is_complete(event, None)
    assert str(raised.value) == (
        f"RayService serving/mistral is Ready, but the gate cannot call its API: the API keys secret {arn} {problem}"
    )
    assert models.received == []


def test_a_secret_that_does_not_exist_fails_at_once(kube, endpoint, models_server, models, keys_secret):
    event = ready_with_api(kube, endpoint, models_server, keys_secret)
    missing = event["ResourceProperties"]["ApiKeysSecretArn"] + "-gone"
    event["ResourceProperties"]["ApiKeysSecretArn"] = missing
    with pytest.raises(errors.GateError, match=f"the API keys secret {missing} does not exist"):
        gate.is_complete(event, None)


class DeniedSecrets:
    """Secrets Manager refusing the role (IAM is not enforced by moto)."""

    def get_secret_value(self, SecretId):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}},
                          "GetSecretValue")


def test_a_denied_secret_read_is_waited_out_briefly_then_fails(
    kube, endpoint, models_server, models, keys_secret, monkeypatch
):
    monkeypatch.setattr(gate, "secrets_client", DeniedSecrets)
    # A policy attached moments ago may not be honoured yet.
    assert gate.is_complete(ready_with_api(kube, endpoint, models_server, keys_secret, started_ago_s=10), None) == {
        "IsComplete": False
    }
    late = ready_with_api(kube, endpoint, models_server, keys_secret, started_ago_s=gate.AUTH_GRACE_S + 5)
    with pytest.raises(errors.GateError, match=r"AccessDeniedException \(the isComplete function's role must be "
                                               r"allowed secretsmanager:GetSecretValue on arn:aws:secretsmanager:"):
        gate.is_complete(late, None)


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------


def test_the_api_check_needs_all_of_its_properties(endpoint):
    event = poll_event(endpoint)
    event["ResourceProperties"].update({"ServeServiceName": SERVE_SERVICE, "ApiKeyName": READINESS_GATE})
    with pytest.raises(ValueError, match=r"^ResourceProperties is missing ServePort, ApiKeysSecretArn, "
                                         r"ApiKeyGraceSeconds: the API check needs all of"):
        gate.on_event(event, None)


@pytest.mark.parametrize(
    "port, message",
    [("http", "ServePort must be a whole number, got 'http'"), ("70000", "ServePort must be a TCP port (1-65535)")],
)
def test_a_bad_serve_port_is_refused_before_the_wait(endpoint, port, message):
    event = poll_event(endpoint)
    event["ResourceProperties"].update({
        "ServeServiceName": SERVE_SERVICE, "ServePort": port, "ApiKeysSecretArn": "arn:aws:secretsmanager:x",
        "ApiKeyName": READINESS_GATE, "ApiKeyGraceSeconds": str(GRACE_S),
    })
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        gate.on_event(event, None)
