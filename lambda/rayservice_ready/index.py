"""Readiness gate for `cdk deploy`: a CloudFormation custom resource (CDK Provider framework,
onEvent + isComplete) that completes when the KubeRay RayService reports `Ready=True`.

Runs on the AWS Lambda Python 3.12 runtime with the standard library and the runtime's
botocore only: no bundling. It talks to the Kubernetes API with an EKS bearer token (a
presigned STS GetCallerIdentity request, as `aws eks get-token` makes it) over HTTPS that
trusts only the cluster's own CA.

Entry points: `index.on_event` and `index.is_complete`.
ResourceProperties (strings, as CloudFormation passes them): ClusterName, Endpoint,
CertificateAuthority, Namespace, RayServiceName, TimeoutSeconds.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

import botocore.session
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest

# A named logger: the Lambda runtime's root handler prints it; tests keep their root level.
logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

# The documented EKS token format (aws-iam-authenticator, `aws eks get-token`).
TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
# The authenticator rejects presigned URLs valid for longer than this.
TOKEN_URL_EXPIRES_S = 60
# One Kubernetes API call must finish well inside the Lambda timeout (60 s in the stack).
HTTP_TIMEOUT_S = 10.0
# A fresh access entry (or its policy association) can take a moment to be honoured;
# within this window after the wait started, 401/403 mean "not yet" instead of "refused".
AUTH_GRACE_S = 120.0
# KubeRay's condition reason when the operator (not the CRD schema) rejects the spec: it
# will not retry until the spec changes, so waiting longer cannot help.
VALIDATION_FAILED = "ValidationFailed"
# CloudFormation shows the failure in the stack events; keep it readable and under its limit.
MAX_REASON_CHARS = 3500
MAX_EVENTS = 10


class GateError(Exception):
    """The RayService will not become Ready (rejected, timed out, or unreachable for good)."""


class KubeApiError(Exception):
    """A Kubernetes API call failed. `transient` errors are worth another poll."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateProperties:
    cluster_name: str
    endpoint: str
    certificate_authority: str
    namespace: str
    rayservice_name: str
    timeout_s: float

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> "GateProperties":
        props = event.get("ResourceProperties") or {}
        required = ("ClusterName", "Endpoint", "CertificateAuthority", "Namespace", "RayServiceName", "TimeoutSeconds")
        missing = [key for key in required if not str(props.get(key, "")).strip()]
        if missing:
            raise ValueError(f"ResourceProperties is missing {', '.join(missing)}")
        try:
            timeout_s = float(props["TimeoutSeconds"])
        except ValueError:
            raise ValueError(f"TimeoutSeconds must be a number of seconds, got {props['TimeoutSeconds']!r}") from None
        if timeout_s <= 0:
            raise ValueError(f"TimeoutSeconds must be positive, got {props['TimeoutSeconds']!r}")
        return cls(
            cluster_name=str(props["ClusterName"]),
            endpoint=str(props["Endpoint"]).rstrip("/"),
            certificate_authority=str(props["CertificateAuthority"]),
            namespace=str(props["Namespace"]),
            rayservice_name=str(props["RayServiceName"]),
            timeout_s=timeout_s,
        )

    @property
    def resource_id(self) -> str:
        return f"{self.namespace}/{self.rayservice_name}"


# ---------------------------------------------------------------------------------------
# EKS token
# ---------------------------------------------------------------------------------------


def sts_url(region: str) -> str:
    """The regional STS GetCallerIdentity URL that the token presigns."""
    return f"https://sts.{region}.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"


def build_eks_token(cluster_name: str, region: str, credentials: Any) -> str:
    """An EKS bearer token: "k8s-aws-v1." + base64url(presigned STS URL), padding stripped.

    The cluster name travels as the signed `x-k8s-aws-id` header, so a token made for one
    cluster is refused by another. `credentials` has access_key, secret_key and token
    (botocore credentials); signing is local, no call to STS is made here.
    """
    request = AWSRequest(method="GET", url=sts_url(region), headers={CLUSTER_ID_HEADER: cluster_name})
    SigV4QueryAuth(credentials, "sts", region, expires=TOKEN_URL_EXPIRES_S).add_auth(request)
    encoded = base64.urlsafe_b64encode(request.url.encode("utf-8")).decode("ascii")
    return TOKEN_PREFIX + encoded.rstrip("=")


def eks_token_from_environment(cluster_name: str) -> str:
    """A token signed with the function's own role (credentials and AWS_REGION from the runtime)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise GateError("AWS_REGION is not set: cannot choose the STS endpoint for the EKS token")
    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        raise GateError("no AWS credentials found to sign the EKS token")
    return build_eks_token(cluster_name, region, credentials.get_frozen_credentials())


# ---------------------------------------------------------------------------------------
# Kubernetes API client (urllib)
# ---------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # The API server does not redirect these reads; following one would send the bearer
    # token to wherever it points.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ssl_context_for(certificate_authority_b64: str) -> ssl.SSLContext:
    """Verify the API server against the cluster CA only (EKS returns it base64 encoded)."""
    try:
        pem = base64.b64decode("".join(certificate_authority_b64.split()), validate=True).decode("ascii")
        context = ssl.create_default_context(cadata=pem)
    except (ValueError, UnicodeDecodeError, ssl.SSLError) as error:
        raise GateError(f"CertificateAuthority is not base64-encoded PEM certificate data: {error}") from None
    return context


@dataclass(frozen=True)
class KubeApi:
    """The few reads the gate needs. HTTPS with the cluster CA; plain HTTP only to a
    loopback address (tests), so a bearer token never crosses a network in the clear."""

    endpoint: str
    token: str
    certificate_authority: str
    timeout_s: float = HTTP_TIMEOUT_S

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.endpoint)
        if parts.scheme == "https":
            return
        if parts.scheme == "http" and _is_loopback(parts.hostname or ""):
            return
        raise GateError(f"Endpoint must be an https:// URL (http:// only to a loopback address), got {self.endpoint!r}")

    def _opener(self) -> urllib.request.OpenerDirector:
        handlers: list[urllib.request.BaseHandler] = [
            # Reach the API server directly: no proxy from the environment sees the token.
            urllib.request.ProxyHandler({}),
            _NoRedirect(),
        ]
        if self.endpoint.startswith("https://"):
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context_for(self.certificate_authority)))
        return urllib.request.build_opener(*handlers)

    def get(self, path: str) -> dict[str, Any] | None:
        """GET a JSON object; None when it does not exist (404)."""
        request = urllib.request.Request(
            self.endpoint + path,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
            method="GET",
        )
        try:
            with self._opener().open(request, timeout=self.timeout_s) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            detail = _status_message(error)
            # 5xx and 429 are the API server's trouble and pass; 401/403 are judged by the
            # caller (grace period); any other 4xx is a request it will never accept.
            transient = error.code >= 500 or error.code == 429
            raise KubeApiError(f"GET {path}: HTTP {error.code} {detail}", status=error.code, transient=transient) from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                # The endpoint does not present a certificate from the cluster CA: wrong
                # CertificateAuthority or a different server. Retrying cannot fix it.
                raise KubeApiError(
                    f"GET {path}: TLS verification against the cluster CA failed: {reason.verify_message or reason}",
                    transient=False,
                ) from None
            raise KubeApiError(f"GET {path}: cannot reach {self.endpoint}: {reason}") from None
        except (TimeoutError, OSError) as error:
            raise KubeApiError(f"GET {path}: {type(error).__name__}: {error}") from None
        except json.JSONDecodeError as error:
            raise KubeApiError(f"GET {path}: the response is not JSON: {error}") from None


def _status_message(error: urllib.error.HTTPError) -> str:
    """The Kubernetes Status message of an error response, else its reason phrase."""
    try:
        body = json.loads(error.read().decode("utf-8", "replace"))
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])[:300]
    except (ValueError, OSError):
        pass
    return str(error.reason)


def rayservice_path(namespace: str, name: str) -> str:
    return f"/apis/ray.io/v1/namespaces/{_quote(namespace)}/rayservices/{_quote(name)}"


def events_path(namespace: str, name: str) -> str:
    selector = f"involvedObject.name={name},involvedObject.kind=RayService"
    return f"/api/v1/namespaces/{_quote(namespace)}/events?" + urllib.parse.urlencode({"fieldSelector": selector})


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


# ---------------------------------------------------------------------------------------
# Readiness (pure)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readiness:
    ready: bool
    # Why it is not ready yet (for the log), or the rejection message when `rejected`.
    detail: str
    rejected: bool = False


def _conditions(rayservice: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((rayservice.get("status") or {}).get("conditions") or [])


def _condition(rayservice: Mapping[str, Any], condition_type: str) -> dict[str, Any] | None:
    return next((c for c in _conditions(rayservice) if c.get("type") == condition_type), None)


def evaluate(rayservice: Mapping[str, Any]) -> Readiness:
    """Ready when `Ready=True` describes the current spec: the operator has observed the
    latest generation and no zero-downtime upgrade is still moving traffic (on an Update,
    the old cluster keeps `Ready=True` while the new one comes up)."""
    for condition in _conditions(rayservice):
        if condition.get("reason") == VALIDATION_FAILED:
            return Readiness(False, str(condition.get("message") or "no message"), rejected=True)

    status = rayservice.get("status") or {}
    generation = (rayservice.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and int(observed) < int(generation):
        return Readiness(False, f"operator has not observed generation {generation} yet (observed {observed})")

    ready = _condition(rayservice, "Ready")
    if ready is None:
        return Readiness(False, "no Ready condition yet")
    if ready.get("status") != "True":
        return Readiness(False, f"Ready={ready.get('status')} ({ready.get('reason')}: {ready.get('message')})")

    upgrade = _condition(rayservice, "UpgradeInProgress")
    if upgrade is not None and upgrade.get("status") == "True":
        return Readiness(False, f"upgrade in progress ({upgrade.get('reason')})")
    return Readiness(True, str(ready.get("reason") or "Ready"))


def ready_data(rayservice: Mapping[str, Any]) -> dict[str, str]:
    """A few facts for Fn::GetAtt (CloudFormation attributes are strings)."""
    status = rayservice.get("status") or {}
    active = status.get("activeServiceStatus") or {}
    applications = active.get("applicationStatuses") or {}
    return {
        "ActiveRayClusterName": str(active.get("rayClusterName", "")),
        "NumServeEndpoints": str(status.get("numServeEndpoints", 0)),
        "Applications": ",".join(f"{name}={app.get('status', '')}" for name, app in sorted(applications.items())),
    }


# ---------------------------------------------------------------------------------------
# Failure report (pure)
# ---------------------------------------------------------------------------------------


def _clip(text: Any, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_conditions(rayservice: Mapping[str, Any] | None) -> str:
    if rayservice is None:
        return "RayService not found"
    conditions = _conditions(rayservice)
    if not conditions:
        return "no conditions reported"
    return "; ".join(
        f"{c.get('type')}={c.get('status')} ({c.get('reason', '')}: {_clip(c.get('message', ''), 300)})" for c in conditions
    )


def _event_time(event: Mapping[str, Any]) -> datetime:
    # core/v1 Events fill lastTimestamp; events created through events.k8s.io fill eventTime.
    for value in (
        event.get("lastTimestamp"),
        event.get("eventTime"),
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("firstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if value:
            try:
                parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                continue
            # Sorting mixes sources: make every time zone-aware (the API server writes UTC).
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return datetime.min.replace(tzinfo=timezone.utc)


def recent_events(events: list[Mapping[str, Any]], limit: int = MAX_EVENTS) -> list[Mapping[str, Any]]:
    """The newest `limit` events, oldest first (reads like a log)."""
    return sorted(events, key=_event_time)[-limit:]


def format_events(events: list[Mapping[str, Any]]) -> str:
    if not events:
        return "none"
    lines = []
    for event in recent_events(events):
        count = event.get("count") or (event.get("series") or {}).get("count") or 1
        repeat = f" (x{count})" if int(count) > 1 else ""
        at = _event_time(event)
        when = at.strftime("%Y-%m-%dT%H:%M:%SZ") if at.year > 1 else "?"
        head = " ".join(str(part) for part in (when, event.get("type"), event.get("reason")) if part)
        lines.append(f"{head}: {_clip(event.get('message', ''), 200)}{repeat}".rstrip())
    return " | ".join(lines)


def timeout_report(
    resource_id: str,
    waited_s: float,
    rayservice: Mapping[str, Any] | None,
    events: list[Mapping[str, Any]] | str,
    last_error: str | None = None,
) -> str:
    """One message for the CloudFormation status reason: what the operator says and did."""
    parts = [
        f"RayService {resource_id} did not become Ready in {waited_s:.0f} s.",
        f"Conditions: {format_conditions(rayservice)}.",
    ]
    if last_error:
        parts.append(f"Last API error: {_clip(last_error, 300)}.")
    parts.append(f"Recent events: {events if isinstance(events, str) else format_events(events)}")
    return _clip(" ".join(parts), MAX_REASON_CHARS)


# ---------------------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------------------


def on_event(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Create/Update start the wait; Delete has nothing to wait for. The Provider framework
    merges this output into the event that `is_complete` receives."""
    request_type = event["RequestType"]
    logger.info("on_event %s %s", request_type, event.get("LogicalResourceId"))
    if request_type == "Delete":
        return {"PhysicalResourceId": event["PhysicalResourceId"]}
    if request_type not in ("Create", "Update"):
        raise ValueError(f"unknown RequestType {request_type!r}")
    # Validate now: a bad property fails the deploy at once instead of after the first poll.
    props = GateProperties.from_event(event)
    return {"PhysicalResourceId": props.resource_id, "Data": {"StartedAt": str(int(time.time()))}}


def is_complete(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Polled by the Provider framework until it returns IsComplete=True or raises."""
    if event["RequestType"] == "Delete":
        return {"IsComplete": True}
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

    if rayservice is not None:
        readiness = evaluate(rayservice)
        if readiness.rejected:
            raise GateError(f"RayService {props.resource_id} was rejected by KubeRay ({VALIDATION_FAILED}): {_clip(readiness.detail, 3000)}")
        if readiness.ready:
            data = ready_data(rayservice)
            logger.info("RayService %s is Ready: %s", props.resource_id, data)
            return {"IsComplete": True, "Data": data}
        logger.info("RayService %s not ready: %s", props.resource_id, readiness.detail)
    elif api_error is None:
        # Manifests apply concurrently with this resource: the object may not exist yet.
        logger.info("RayService %s not found yet", props.resource_id)

    if waited_s > props.timeout_s:
        raise GateError(
            timeout_report(props.resource_id, waited_s, rayservice, _events_or_reason(api, props), str(api_error) if api_error else None)
        )
    # The framework refuses Data on an incomplete answer.
    return {"IsComplete": False}


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
        return " (the function's access entry must allow get on rayservices.ray.io and list on events in this namespace)"
    return ""
