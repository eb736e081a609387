"""The messages CloudFormation shows when the gate fails: a RayService not Ready in time (its
conditions and its recent events), an API that does not answer in time, or one that keeps
refusing the gate's own key; each short enough for a stack event."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rayservice_status import conditions

# CloudFormation shows the failure in the stack events; keep it readable and under its limit.
MAX_REASON_CHARS = 3500
MAX_EVENTS = 10


def clip(text: Any, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_conditions(rayservice: Mapping[str, Any] | None) -> str:
    if rayservice is None:
        return "RayService not found"
    found = conditions(rayservice)
    if not found:
        return "no conditions reported"
    return "; ".join(
        f"{c.get('type')}={c.get('status')} ({c.get('reason', '')}: {clip(c.get('message', ''), 300)})" for c in found
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
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


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
        lines.append(f"{head}: {clip(event.get('message', ''), 200)}{repeat}".rstrip())
    return " | ".join(lines)


def timeout_report(
    resource_id: str,
    waited_s: float,
    rayservice: Mapping[str, Any] | None,
    events: list[Mapping[str, Any]] | str,
    last_error: str | None = None,
    waiting_for: str | None = None,
) -> str:
    """One message for the CloudFormation status reason: what the operator says and did."""
    parts = [f"RayService {resource_id} did not become Ready in {waited_s:.0f} s."]
    if waiting_for:
        parts.append(f"Still waiting for: {clip(waiting_for, 300)}.")
    parts.append(f"Conditions: {format_conditions(rayservice)}.")
    if last_error:
        parts.append(f"Last API error: {clip(last_error, 300)}.")
    parts.append(f"Recent events: {events if isinstance(events, str) else format_events(events)}")
    return clip(" ".join(parts), MAX_REASON_CHARS)


def api_timeout_report(resource_id: str, serve_service: str, waited_s: float, last_answer: str) -> str:
    """The RayService is Ready, but its API never answered the gate with a model list."""
    namespace = resource_id.split("/", 1)[0]
    return clip(
        f"RayService {resource_id} is Ready, but its OpenAI API did not answer the readiness gate with a model "
        f"list in {waited_s:.0f} s. Last answer: {clip(last_answer, 600)}. Look at the serve Service's load "
        f"balancer (`kubectl -n {namespace} describe service {serve_service}`: its address and events) and at the "
        "Serve proxies' logs; the gate reaches the serve port inside the VPC.",
        MAX_REASON_CHARS,
    )


def key_refused_report(
    resource_id: str, url: str, answer: str, waited_s: float, grace_s: float, secret_arn: str, key_name: str
) -> str:
    """The API answers, but refuses the gate's own key for longer than a key takes to arrive."""
    namespace = resource_id.split("/", 1)[0]
    return clip(
        f"RayService {resource_id} is Ready, but its OpenAI API refuses the readiness gate's own API key "
        f"(GET {url}: {clip(answer, 300)}) {waited_s:.0f} s into the wait; a key reaches the Serve replicas "
        f"within {grace_s:.0f} s. The replicas do not have the {key_name!r} entry of the API keys secret "
        f"{secret_arn}. Check that the secret holds that entry, and that External Secrets syncs it into the pods: "
        f"`kubectl -n {namespace} get externalsecrets` (each should say SecretSynced; "
        f"`kubectl -n {namespace} describe externalsecret <name>` says why not). Then deploy again.",
        MAX_REASON_CHARS,
    )
