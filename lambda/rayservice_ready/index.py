"""Readiness gate for `cdk deploy`: CloudFormation custom resources (CDK Provider framework,
onEvent + isComplete) of two types. `Custom::RayServiceReady` completes when the KubeRay
RayService serves its current spec with nothing pending (`rayservice_status.evaluate`) and,
when it is given the API keys secret, when the OpenAI-compatible API answers the gate's own
key with a model list through the serve Service's load balancer (`serve_api`).
`Custom::RayServiceGone` does nothing on Create/Update; on Delete it completes once the
deleted RayService's RayClusters and LoadBalancer Services are gone (`teardown.leftovers`),
so what CloudFormation deletes next (the Redis password Secret, Redis, the cluster, the
VPC) is no longer needed by them.

Runs on the AWS Lambda Python 3.14 runtime (ray_serve_ha/constructs/readiness.py) with the standard library
and the runtime's botocore only: no bundling. Modules, one job each: `eks_token` (the EKS
bearer token), `kube_api` (the Kubernetes API reads), `rayservice_status` (what the status
says), `serve_api` (does the API answer the gate's key), `teardown` (what is left of a
deleted one), `failure_report` (the failure messages), `gate_errors`; this one holds the
handlers.

Entry points: `index.on_event` and `index.is_complete`.
ResourceProperties (strings, as CloudFormation passes them): ClusterName, Endpoint,
CertificateAuthority, Namespace, RayServiceName, TimeoutSeconds; for the API check, all or
none of ServeServiceName, ServePort, ApiKeysSecretArn, ApiKeyName and ApiKeyGraceSeconds
(how long a refused key is waited out); and RayServiceSpecHash
and DeployTimeValues, which the handlers do not read: they change whenever the RayService
manifest does, so CloudFormation sends an Update and the gate waits again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eks_token import eks_token_from_environment
from failure_report import api_timeout_report, clip, key_refused_report, timeout_report
from gate_errors import GateError, KubeApiError
from kube_api import (
    KubeApi,
    events_path,
    rayclusters_path,
    rayservice_path,
    service_path,
    services_path,
)
from rayservice_status import evaluate, ready_data, rejection
from serve_api import (
    ApiAnswer,
    KeyUnavailable,
    api_key_from,
    base_url,
    list_models,
    load_balancer_address,
    secrets_client,
)
from teardown import leftovers

# A named logger: the Lambda runtime's root handler prints it; tests keep their root level.
logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

# A fresh access entry (or its policy association), or a fresh IAM policy, can take a moment
# to be honoured; within this window after the wait started, 401/403 from the Kubernetes API
# and AccessDenied from Secrets Manager mean "not yet" instead of "refused".
AUTH_GRACE_S = 120.0
READY_TYPE = "Custom::RayServiceReady"
GONE_TYPE = "Custom::RayServiceGone"
REQUIRED_PROPERTIES = (
    "ClusterName",
    "Endpoint",
    "CertificateAuthority",
    "Namespace",
    "RayServiceName",
    "TimeoutSeconds",
)
# The API check's properties: all of them, or none (no check).
API_PROPERTIES = ("ServeServiceName", "ServePort", "ApiKeysSecretArn", "ApiKeyName", "ApiKeyGraceSeconds")


def _number(props: Mapping[str, Any], key: str, kind: type[float] | type[int], least: float) -> Any:
    try:
        value = kind(props[key])
    except ValueError:
        what = "a number of seconds" if kind is float else "a whole number"
        raise ValueError(f"{key} must be {what}, got {props[key]!r}") from None
    if value < least:
        raise ValueError(f"{key} must be at least {least:g}, got {props[key]!r}")
    return value


@dataclass(frozen=True)
class ApiCheck:
    """How the gate proves the API answers: the serve Service (KubeRay's) and its port, the
    API keys secret and the gate's entry in it, and how long a refusal of that key is waited
    out (as long as a key takes to reach the Serve replicas)."""

    serve_service: str
    port: int
    keys_secret_arn: str
    key_name: str
    grace_s: float

    @classmethod
    def from_properties(cls, props: Mapping[str, Any]) -> ApiCheck | None:
        given = [key for key in API_PROPERTIES if str(props.get(key, "")).strip()]
        if not given:
            return None
        missing = [key for key in API_PROPERTIES if key not in given]
        if missing:
            raise ValueError(
                f"ResourceProperties is missing {', '.join(missing)}: the API check needs all of "
                f"{', '.join(API_PROPERTIES)}, or none"
            )
        port = _number(props, "ServePort", int, 1)
        if port > 65535:
            raise ValueError(f"ServePort must be a TCP port (1-65535), got {props['ServePort']!r}")
        return cls(
            serve_service=str(props["ServeServiceName"]),
            port=port,
            keys_secret_arn=str(props["ApiKeysSecretArn"]),
            key_name=str(props["ApiKeyName"]),
            grace_s=_number(props, "ApiKeyGraceSeconds", float, 0),
        )


@dataclass(frozen=True)
class GateProperties:
    cluster_name: str
    endpoint: str
    certificate_authority: str
    namespace: str
    rayservice_name: str
    timeout_s: float
    spec_hash: str
    api: ApiCheck | None = None

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> GateProperties:
        props = event.get("ResourceProperties") or {}
        missing = [key for key in REQUIRED_PROPERTIES if not str(props.get(key, "")).strip()]
        if missing:
            raise ValueError(f"ResourceProperties is missing {', '.join(missing)}")
        try:
            timeout_s = float(props["TimeoutSeconds"])
        except ValueError:
            raise ValueError(f"TimeoutSeconds must be a number of seconds, got {props['TimeoutSeconds']!r}") from None
        if timeout_s <= 0:
            raise ValueError(f"TimeoutSeconds must be positive, got {props['TimeoutSeconds']!r}")
        api = ApiCheck.from_properties(props) if event.get("ResourceType") == READY_TYPE else None
        return cls(
            cluster_name=str(props["ClusterName"]),
            endpoint=str(props["Endpoint"]).rstrip("/"),
            certificate_authority=str(props["CertificateAuthority"]),
            namespace=str(props["Namespace"]),
            rayservice_name=str(props["RayServiceName"]),
            timeout_s=timeout_s,
            spec_hash=str(props.get("RayServiceSpecHash", "")),
            api=api,
        )

    @property
    def resource_id(self) -> str:
        return f"{self.namespace}/{self.rayservice_name}"


def _waits(event: Mapping[str, Any]) -> bool:
    """Whether this request has something to wait for: a RayServiceReady on Create/Update,
    a RayServiceGone on Delete."""
    resource_type = event.get("ResourceType")
    if resource_type not in (READY_TYPE, GONE_TYPE):
        raise ValueError(f"unknown ResourceType {resource_type!r}: expected {READY_TYPE} or {GONE_TYPE}")
    return (resource_type == GONE_TYPE) == (event["RequestType"] == "Delete")


def on_event(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Records when the wait started. The Provider framework merges this output into the
    event that `is_complete` receives."""
    request_type = event["RequestType"]
    logger.info("on_event %s %s %s", request_type, event.get("ResourceType"), event.get("LogicalResourceId"))
    if request_type not in ("Create", "Update", "Delete"):
        raise ValueError(f"unknown RequestType {request_type!r}")
    if not _waits(event):
        if request_type == "Delete":
            return {"PhysicalResourceId": event["PhysicalResourceId"]}
        return {"PhysicalResourceId": GateProperties.from_event(event).resource_id}
    # Validate now: a bad property fails the deploy at once instead of after the first poll.
    props = GateProperties.from_event(event)
    logger.info("waiting for RayService %s (spec %s)", props.resource_id, props.spec_hash or "?")
    physical_id = event["PhysicalResourceId"] if request_type == "Delete" else props.resource_id
    return {"PhysicalResourceId": physical_id, "Data": {"StartedAt": str(int(time.time()))}}


def is_complete(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Polled by the Provider framework until it returns IsComplete=True or raises."""
    if not _waits(event):
        return {"IsComplete": True}
    if event["ResourceType"] == GONE_TYPE:
        return _is_gone(event)
    props = GateProperties.from_event(event)
    waited_s = time.time() - _started_at(event)
    api = KubeApi(props.endpoint, eks_token_from_environment(props.cluster_name), props.certificate_authority)

    try:
        rayservice = api.get(rayservice_path(props.namespace, props.rayservice_name))
        api_error = None
    except KubeApiError as error:
        if not _worth_waiting(error, waited_s):
            raise GateError(f"RayService {props.resource_id}: {error}{_auth_hint(error)}") from None
        logger.warning("not yet: %s", error)
        rayservice, api_error = None, error

    waiting_for = None
    if rayservice is not None:
        readiness = evaluate(rayservice)
        if readiness.rejected:
            raise GateError(rejection(props.resource_id, readiness) + clip(readiness.detail, 3000))
        if readiness.ready:
            data = ready_data(rayservice)
            logger.info("RayService %s is Ready: %s", props.resource_id, data)
            if props.api is None:
                return {"IsComplete": True, "Data": data}
            answer = _ask_api(api, props, props.api, waited_s)
            if answer.answered:
                logger.info("RayService %s: the API answered the gate's key: %s", props.resource_id, answer.detail)
                return {"IsComplete": True, "Data": {**data, "Models": ",".join(answer.models)}}
            logger.info("RayService %s: the API has not answered yet: %s", props.resource_id, answer.detail)
            if waited_s > props.timeout_s:
                raise GateError(api_timeout_report(props.resource_id, props.api.serve_service, waited_s, answer.detail))
            return {"IsComplete": False}
        waiting_for = readiness.detail
        logger.info("RayService %s not ready: %s", props.resource_id, readiness.detail)
    elif api_error is None:
        # Manifests apply concurrently with this resource: the object may not exist yet.
        logger.info("RayService %s not found yet", props.resource_id)

    if waited_s > props.timeout_s:
        raise GateError(
            timeout_report(
                props.resource_id,
                waited_s,
                rayservice,
                _events_or_reason(api, props),
                str(api_error) if api_error else None,
                waiting_for,
            )
        )
    # The framework refuses Data on an incomplete answer.
    return {"IsComplete": False}


def _is_gone(event: Mapping[str, Any]) -> dict[str, Any]:
    """Delete of a RayServiceGone: complete once nothing of the deleted RayService is left."""
    props = GateProperties.from_event(event)
    waited_s = time.time() - _started_at(event)
    api = KubeApi(props.endpoint, eks_token_from_environment(props.cluster_name), props.certificate_authority)
    try:
        left = leftovers(
            api.get(rayservice_path(props.namespace, props.rayservice_name)),
            list((api.get(rayclusters_path(props.namespace)) or {}).get("items") or []),
            list((api.get(services_path(props.namespace)) or {}).get("items") or []),
        )
    except KubeApiError as error:
        if not _worth_waiting(error, waited_s) or waited_s > props.timeout_s:
            raise GateError(f"RayService {props.resource_id} teardown: {error}{_auth_hint(error)}") from None
        logger.warning("not yet: %s", error)
        return {"IsComplete": False}
    if not left:
        logger.info("RayService %s: its clusters and load balancers are gone", props.resource_id)
        return {"IsComplete": True}
    logger.info("RayService %s teardown: still there: %s", props.resource_id, "; ".join(left))
    if waited_s > props.timeout_s:
        raise GateError(
            clip(
                f"RayService {props.resource_id} teardown did not finish in {waited_s:.0f} s; still there: "
                f"{'; '.join(left)}. Delete them (or remove their finalizers) and destroy again.",
                3500,
            )
        )
    return {"IsComplete": False}


def _ask_api(api: KubeApi, props: GateProperties, check: ApiCheck, waited_s: float) -> ApiAnswer:
    """GET /v1/models with the gate's own key through the serve Service's load balancer.
    Raises GateError when waiting cannot help; otherwise the answer says what is missing."""
    try:
        service = api.get(service_path(props.namespace, check.serve_service))
    except KubeApiError as error:
        if not _worth_waiting(error, waited_s):
            raise GateError(f"RayService {props.resource_id}: {error}{_auth_hint(error)}") from None
        return ApiAnswer(f"reading the serve Service: {error}")
    address = load_balancer_address(service)
    if address is None:
        state = "does not exist yet" if service is None else "has no load balancer address yet"
        return ApiAnswer(f"the serve Service {props.namespace}/{check.serve_service} {state}")
    try:
        key = api_key_from(secrets_client(), check.keys_secret_arn, check.key_name)
    except GateError as error:
        raise GateError(f"RayService {props.resource_id} is Ready, but the gate cannot call its API: {error}") from None
    except KeyUnavailable as error:
        if error.denied and waited_s >= AUTH_GRACE_S:
            raise GateError(
                f"RayService {props.resource_id} is Ready, but the gate cannot call its API: {error} (the "
                f"isComplete function's role must be allowed secretsmanager:GetSecretValue on {check.keys_secret_arn})"
            ) from None
        return ApiAnswer(str(error))
    url = base_url(address, check.port)
    answer = list_models(url, key)
    if answer.refused and waited_s >= check.grace_s:
        # Long enough for External Secrets' refresh, the kubelet's resync of the mounted file
        # and the replicas' reload (the construct derives the grace from those): not a delay.
        raise GateError(
            key_refused_report(
                props.resource_id, f"{url}/v1/models", answer.detail, waited_s, check.grace_s,
                check.keys_secret_arn, check.key_name,
            )
        )
    return ApiAnswer(f"GET {url}/v1/models: {answer.detail}", answer.status, answer.models)


def _started_at(event: Mapping[str, Any]) -> float:
    started = (event.get("Data") or {}).get("StartedAt")
    try:
        return float(started)
    except (TypeError, ValueError):
        raise GateError(f"the event carries no valid Data.StartedAt from on_event (got {started!r})") from None


def _events_or_reason(api: KubeApi, props: GateProperties) -> list[dict[str, Any]] | str:
    """Events help explain a timeout; failing to read them must not hide the timeout itself."""
    try:
        listing = api.get(events_path(props.namespace, props.rayservice_name)) or {}
    except KubeApiError as error:
        return f"unavailable ({error})"
    return list(listing.get("items") or [])


def _worth_waiting(error: KubeApiError, waited_s: float) -> bool:
    if error.status in (401, 403):
        # Right after the access entry is created it may not be honoured yet; later, a
        # refusal is a permission problem that waiting will not fix.
        return waited_s < AUTH_GRACE_S
    return error.transient


def _auth_hint(error: KubeApiError) -> str:
    if error.status == 401:
        return " (the EKS token was not accepted: does the function's role have an access entry on this cluster?)"
    if error.status == 403:
        return (
            " (the function's access entry must allow get on rayservices.ray.io and list on events, "
            "rayclusters.ray.io and services in this namespace)"
        )
    return ""
