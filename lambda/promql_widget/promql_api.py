"""A Prometheus-compatible range query: CloudWatch's QueryMetrics, or any Prometheus.

CloudWatch's `QueryMetrics` (AWS CloudWatch docs, "QueryMetrics",
CloudWatch-PromQL-API-QueryMetrics) answers `GET`/`POST https://monitoring.<region>.amazonaws.com
/api/v1/query_range` with `query`, `start`, `end`, `step` and an optional `limit` (1 to 500
series), form-encoded in a POST's body, in Prometheus's answer format; the caller needs
`cloudwatch:GetMetricData` and `cloudwatch:ListMetrics`, and requests are signed with
Signature Version 4 ("PromQL querying", CloudWatch-PromQL-Querying). The signing name is
CloudWatch's, `monitoring` (botocore's CloudWatch model: `signingName`). A Prometheus server's
`/api/v1/query_range` takes the same form and answers in the same shape, unsigned.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

SIGNING_NAME = "monitoring"
# QueryMetrics returns at most this many series per answer.
MAX_LIMIT = 500
AWS_HOST = re.compile(r"(^|\.)amazonaws\.com(\.cn)?$")


@dataclass(frozen=True)
class Series:
    """One returned series: its labels and its finite points, (Unix seconds, value)."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


class QueryError(Exception):
    """What failed, as the widget shows it: the step (`what`), the HTTP status if one came
    back, and the server's own message."""

    def __init__(self, what: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{what}: {message}")
        self.what, self.message, self.status = what, message, status


def default_endpoint(region: str) -> str:
    """The region's CloudWatch monitoring host (amazonaws.com.cn in the China regions)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://monitoring.{region}.{suffix}"


def is_aws(endpoint: str) -> bool:
    return bool(AWS_HOST.search(urllib.parse.urlsplit(endpoint).hostname or ""))


def range_request(endpoint: str, query: str, *, start: float, end: float, step: int, limit: int,
                  region: str) -> urllib.request.Request:
    """The POST to `<endpoint>/api/v1/query_range`, SigV4-signed when the endpoint is AWS's."""
    url = endpoint.rstrip("/") + "/api/v1/query_range"
    body = urllib.parse.urlencode({
        "query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step),
        "limit": str(max(1, min(limit, MAX_LIMIT))),
    }).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if is_aws(endpoint):
        headers = _signed(url, body, headers, region)
    return urllib.request.Request(url, data=body, headers=headers, method="POST")


def _signed(url: str, body: bytes, headers: dict[str, str], region: str) -> dict[str, str]:
    # botocore comes with the Lambda runtime; a local Prometheus needs none of it.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.session import Session

    credentials = Session().get_credentials()
    if credentials is None:
        raise QueryError("sign the request", "no AWS credentials found (the function's role provides them)")
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(credentials.get_frozen_credentials(), SIGNING_NAME, region).add_auth(request)
    return dict(request.headers.items())


def fetch(request: urllib.request.Request, timeout_s: float) -> list[Series]:
    """The answer's series; a QueryError says what failed, with the server's message."""
    host = urllib.parse.urlsplit(request.full_url).netloc
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        raise QueryError(f"query {host}", error_message(error.read()) or str(error.reason), error.code) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise QueryError(f"reach {host}", str(reason)) from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise QueryError(f"read the answer of {host}", "it is not JSON: " + _excerpt(raw), 200) from None
    if not isinstance(body, dict) or body.get("status") != "success":
        raise QueryError(f"query {host}", error_message(raw) or "the answer's status is not success", 200)
    return parse_result(body.get("data") or {})


def parse_result(data: dict) -> list[Series]:
    """A matrix (a range query over an instant vector) or a scalar, as series of finite points."""
    result = data.get("result") or []
    if data.get("resultType") == "scalar":
        result = [{"metric": {}, "values": [result]}]
    series = []
    for item in result:
        values = item.get("values") or ([item["value"]] if "value" in item else [])
        points = []
        for at, value in values:
            number = float(value)
            if math.isfinite(number):
                points.append((float(at), number))
        series.append(Series({str(k): str(v) for k, v in (item.get("metric") or {}).items()}, points))
    return series


def error_message(raw: bytes) -> str:
    """The server's own words: Prometheus's `error` (with its `errorType`), an AWS JSON
    error's `message`, an XML error's <Message>, or the start of the text."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        kind = body.get("errorType") or body.get("__type") or body.get("code") or body.get("Code")
        message = body.get("error") or body.get("message") or body.get("Message")
        if message:
            return f"{kind}: {message}" if kind else str(message)
    found = re.search(r"<Message>(.*?)</Message>", text, re.S)
    if found:
        return found.group(1).strip()
    return _excerpt(raw)


def _excerpt(raw: bytes, limit: int = 300) -> str:
    text = " ".join(raw.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[:limit] + "…"
