"""Availability probe of the Ray Serve OpenAI-compatible endpoint, run every minute by
EventBridge: a few small chat requests, one after another, then CloudWatch metrics.

Runs on the AWS Lambda Python 3.14 runtime (ray_serve_ha/constructs/lambda_code.py) with the standard
library and the runtime's boto3 only: no bundling.

Entry point: `index.handler`. Environment: SERVE_URL (required), SERVICE_NAME (required,
the `Service` dimension), MODEL (default: the first id of GET /v1/models), PROBE_REQUESTS
(default 3), REQUEST_TIMEOUT_S (default 20), METRIC_NAMESPACE (default RayServeHA),
API_KEYS_SECRET_ARN and API_KEY_NAME (the Secrets Manager secret of the API keys, a JSON
object, and the probe's name in it: read at each invocation, so a rotated key is used at once;
unset: no Authorization header).

Metrics (dimension Service=<SERVICE_NAME>): Availability (Percent), Latency (Milliseconds,
one value per successful request), Requests and FailedRequests (Count). An unreachable or
failing endpoint never raises (the metric is the signal); a failed PutMetricData does.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import boto3

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)

DEFAULT_NAMESPACE = "RayServeHA"
DEFAULT_REQUESTS = 3
DEFAULT_TIMEOUT_S = 20.0
# Keep a run well inside one schedule period and one PutMetricData call.
MAX_REQUESTS = 20
MAX_TOKENS = 8
PROMPT = "Reply with one word: ok"


class ProbeConfigError(ValueError):
    """The probe is misconfigured (fails the invocation: that is not the endpoint's fault)."""


@dataclass(frozen=True)
class ProbeConfig:
    serve_url: str
    service_name: str
    model: str | None = None
    requests: int = DEFAULT_REQUESTS
    timeout_s: float = DEFAULT_TIMEOUT_S
    namespace: str = DEFAULT_NAMESPACE
    # Sent as `Authorization: Bearer <key>`; never in a repr or a log line.
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProbeConfig:
        serve_url = env.get("SERVE_URL", "").strip().rstrip("/")
        if urllib.parse.urlsplit(serve_url).scheme not in ("http", "https"):
            raise ProbeConfigError(
                f"SERVE_URL must be an http(s) base URL such as http://internal-lb:8000, got {serve_url!r}"
            )
        service_name = env.get("SERVICE_NAME", "").strip()
        if not service_name:
            raise ProbeConfigError("SERVICE_NAME must be set (the value of the metrics' Service dimension)")
        requests = _number(env, "PROBE_REQUESTS", int, DEFAULT_REQUESTS)
        if not 1 <= requests <= MAX_REQUESTS:
            raise ProbeConfigError(f"PROBE_REQUESTS must be between 1 and {MAX_REQUESTS}, got {requests}")
        timeout_s = _number(env, "REQUEST_TIMEOUT_S", float, DEFAULT_TIMEOUT_S)
        if timeout_s <= 0:
            raise ProbeConfigError(f"REQUEST_TIMEOUT_S must be positive, got {timeout_s:g}")
        return cls(
            serve_url=serve_url,
            service_name=service_name,
            model=env.get("MODEL", "").strip() or None,
            requests=requests,
            timeout_s=timeout_s,
            namespace=env.get("METRIC_NAMESPACE", "").strip() or DEFAULT_NAMESPACE,
        )


def _number(env: Mapping[str, str], key: str, kind: Callable[[str], Any], default: Any) -> Any:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ProbeConfigError(f"{key} must be a number ({kind.__name__}), got {raw!r}") from None


@dataclass
class ProbeResult:
    requests: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.requests - len(self.latencies_ms)

    @property
    def availability(self) -> float:
        return 100.0 * len(self.latencies_ms) / self.requests if self.requests else 0.0


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------


class ProbeRequestError(Exception):
    """One probe request failed; the message says how (it becomes a log line)."""


# The endpoint is an internal load balancer: go direct, whatever proxy the environment names.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request_json(url: str, body: dict[str, Any] | None, timeout_s: float, api_key: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode("utf-8")
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        url,
        data=data,
        headers=headers,
        method="GET" if body is None else "POST",
    )
    try:
        # The timeout bounds each socket operation; the caller bounds the whole request.
        with _OPENER.open(request, timeout=timeout_s) as response:
            payload = response.read()
    except urllib.error.HTTPError as error:
        raise ProbeRequestError(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise ProbeRequestError(f"unreachable: {error.reason}") from None
    except (TimeoutError, OSError) as error:
        raise ProbeRequestError(f"{type(error).__name__}: {error or 'timed out'}") from None
    try:
        return json.loads(payload)
    except ValueError:
        raise ProbeRequestError("the response is not JSON") from None


def discover_model(serve_url: str, timeout_s: float, api_key: str | None = None) -> str:
    """The first model id the endpoint lists (GET /v1/models)."""
    listing = _request_json(f"{serve_url}/v1/models", None, timeout_s, api_key)
    models = listing.get("data") if isinstance(listing, dict) else None
    if not models or not isinstance(models[0], dict) or not models[0].get("id"):
        raise ProbeRequestError("GET /v1/models listed no model")
    return str(models[0]["id"])


def chat_request(model: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": False,
    }


def check_completion(body: Any) -> None:
    """A success is a JSON body with choices[0].message.content (a string)."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ProbeRequestError("the response has no choices[0].message.content") from None
    if not isinstance(content, str):
        raise ProbeRequestError("choices[0].message.content is not a string")


def probe_once(config: ProbeConfig, model: str, clock: Callable[[], float]) -> float:
    """Latency in ms of one successful chat request; raises ProbeRequestError otherwise."""
    started = clock()
    try:
        body = _request_json(
            f"{config.serve_url}/v1/chat/completions", chat_request(model), config.timeout_s, config.api_key
        )
    finally:
        elapsed_s = clock() - started
    check_completion(body)
    # The socket timeout applies per read: a slow trickle can outlast it in total.
    if elapsed_s > config.timeout_s:
        raise ProbeRequestError(f"answered in {elapsed_s * 1000:.0f} ms, beyond the {config.timeout_s:g} s timeout")
    return round(elapsed_s * 1000.0, 1)


def run_requests(config: ProbeConfig, clock: Callable[[], float] = time.perf_counter) -> tuple[ProbeResult, str | None]:
    """Send the probe requests one after another. Never raises for the endpoint's failures."""
    result = ProbeResult()
    model = config.model
    if model is None:
        try:
            model = discover_model(config.serve_url, config.timeout_s, config.api_key)
        except ProbeRequestError as error:
            # No model list means no service: every planned request counts as failed.
            result.requests = config.requests
            result.errors = [f"model discovery: {error}"] * config.requests
            return result, None
    for _ in range(config.requests):
        result.requests += 1
        try:
            result.latencies_ms.append(probe_once(config, model, clock))
        except ProbeRequestError as error:
            result.errors.append(str(error))
    return result, model


# ---------------------------------------------------------------------------------------
# Metrics (pure) and publishing
# ---------------------------------------------------------------------------------------


def metric_data(result: ProbeResult, service_name: str) -> list[dict[str, Any]]:
    """PutMetricData entries. Latency goes as Values/Counts so CloudWatch keeps the
    distribution (p50/p99 on the dashboard), not only an average."""
    dimensions = [{"Name": "Service", "Value": service_name}]
    data: list[dict[str, Any]] = [
        {"MetricName": "Availability", "Dimensions": dimensions, "Value": result.availability, "Unit": "Percent"},
        {"MetricName": "Requests", "Dimensions": dimensions, "Value": float(result.requests), "Unit": "Count"},
        {"MetricName": "FailedRequests", "Dimensions": dimensions, "Value": float(result.failed), "Unit": "Count"},
    ]
    if result.latencies_ms:
        # Each distinct value once, with how often it occurred (the API's contract).
        counts = sorted(Counter(result.latencies_ms).items())
        data.append(
            {
                "MetricName": "Latency",
                "Dimensions": dimensions,
                "Values": [value for value, _ in counts],
                "Counts": [float(count) for _, count in counts],
                "Unit": "Milliseconds",
            }
        )
    return data


@lru_cache(maxsize=1)
def cloudwatch_client() -> Any:
    # Made once per execution environment, reused by later invocations.
    return boto3.client("cloudwatch")


def run_probe(config: ProbeConfig, cloudwatch: Any, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    result, model = run_requests(config, clock)
    for error in result.errors:
        logger.warning("probe request failed: %s", error)
    # A failure here raises: without the metric, nobody would know the probe is blind.
    cloudwatch.put_metric_data(Namespace=config.namespace, MetricData=metric_data(result, config.service_name))
    summary = {
        "service": config.service_name,
        "model": model,
        "requests": result.requests,
        "failed": result.failed,
        "availability": result.availability,
        "latency_ms": result.latencies_ms,
        "errors": result.errors,
    }
    logger.info("probe summary: %s", json.dumps(summary))
    return summary


@lru_cache(maxsize=1)
def secrets_client() -> Any:
    return boto3.client("secretsmanager")


def api_key_from(secrets: Any, secret_arn: str, name: str) -> str:
    """The probe's own key from the API keys secret ({name: key}); ProbeConfigError names
    what is missing (never a key)."""
    try:
        keys = json.loads(secrets.get_secret_value(SecretId=secret_arn)["SecretString"])
    except ValueError:
        raise ProbeConfigError(f"the API keys secret {secret_arn} is not a JSON object of name: key") from None
    key = keys.get(name) if isinstance(keys, dict) else None
    if not isinstance(key, str) or not key:
        raise ProbeConfigError(f"the API keys secret {secret_arn} has no key named {name!r}: add one")
    return key


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    config = ProbeConfig.from_env(os.environ)
    secret_arn = os.environ.get("API_KEYS_SECRET_ARN", "").strip()
    if secret_arn:
        name = os.environ.get("API_KEY_NAME", "").strip() or "serve-probe"
        config = replace(config, api_key=api_key_from(secrets_client(), secret_arn, name))
    return run_probe(config, cloudwatch_client())
