"""The readiness gate (lambda/rayservice_ready): the EKS token against the documented format,
onEvent outputs, and isComplete against a real local HTTP(S) server that speaks the few
Kubernetes API reads the gate makes, with RayService statuses as KubeRay 1.7 writes them
through a first start and a NewCluster upgrade. All traffic stays on 127.0.0.1; presigning
is local."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes import readiness_kube
from tests.fakes.readiness_kube import (
    CLUSTER,
    EVENTS_PATH,
    INITIALIZING,
    NAME,
    RAYSERVICE_PATH,
    READY,
    REGION,
    REJECTED,
    SECRET_KEY,
    condition,
    decode_token,
    event,
    poll_event,
    rayservice,
    sigv4_matches,
)
from tests.lambda_handlers import load_handler, load_module

gate = load_handler("rayservice_ready")
errors = load_module("rayservice_ready", "gate_errors")
report = load_module("rayservice_ready", "failure_report")
rayservice_status = load_module("rayservice_ready", "rayservice_status")

# The fake API server and the environment's fake credentials, taken in by name.
fake_aws, server = readiness_kube.fake_aws, readiness_kube.server
kube, endpoint = readiness_kube.kube, readiness_kube.endpoint


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
