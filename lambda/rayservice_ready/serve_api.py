"""Does the OpenAI-compatible API answer the readiness gate with its own key? A Ready
RayService can still refuse every request (the Serve replicas never got the API keys), or
sit behind a load balancer that does not answer yet. Once the RayService is Ready the gate
reads the serve Service's load balancer address (Kubernetes API), its own key (the API keys
secret in Secrets Manager, with botocore), and asks `GET /v1/models` with it.

Each outcome is an `ApiAnswer`; the handler (index.py) judges it: a model list completes
the wait, a refusal (401/403) is waited out for as long as a key takes to reach the
replicas, anything else (no address yet, DNS, refused or timed-out connections, 5xx) is
"not yet" until the gate's time-out.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from failure_report import clip
from gate_errors import GateError
from kube_api import NoRedirect

# One request to the load balancer; with the two Kubernetes reads and the secret it stays
# inside the function's 60 s.
API_TIMEOUT_S = 10.0
# Secrets Manager: one short attempt per poll (the next poll is the retry).
SECRETS_CONFIG = Config(connect_timeout=5, read_timeout=5, retries={"total_max_attempts": 1})
# Secrets Manager error codes that name the caller's permissions (worth a wait right after the
# policy is attached, then a failure) and the secret's absence (a failure at once).
DENIED_CODES = ("AccessDeniedException", "AccessDenied", "DecryptionFailure")
MISSING_CODES = ("ResourceNotFoundException",)

# The load balancer is inside the VPC: go direct, whatever proxy the environment names, and
# never follow a redirect with the key.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())


class KeyUnavailable(Exception):
    """The key could not be read this time; `denied`: Secrets Manager refused the role."""

    def __init__(self, message: str, *, denied: bool = False) -> None:
        super().__init__(message)
        self.denied = denied


@dataclass(frozen=True)
class ApiAnswer:
    """What `GET /v1/models` got: the model ids, or why not (`status`: the HTTP status, None
    when nothing answered). Never holds the key."""

    detail: str
    status: int | None = None
    models: tuple[str, ...] = ()

    @property
    def answered(self) -> bool:
        return bool(self.models)

    @property
    def refused(self) -> bool:
        return self.status in (401, 403)


def load_balancer_address(service: Mapping[str, Any] | None) -> str | None:
    """The serve Service's load balancer hostname (an NLB's DNS name) or IP, once the load
    balancer controller has written it into the status."""
    status = (service or {}).get("status") or {}
    for ingress in (status.get("loadBalancer") or {}).get("ingress") or []:
        address = ingress.get("hostname") or ingress.get("ip")
        if address:
            return str(address)
    return None


def base_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


@lru_cache(maxsize=1)
def secrets_client() -> Any:
    """Made once per execution environment (loading the service model takes a moment)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return botocore.session.get_session().create_client("secretsmanager", region_name=region, config=SECRETS_CONFIG)


def api_key_from(secrets: Any, secret_arn: str, name: str) -> str:
    """The gate's own key from the API keys secret ({name: key}). GateError names what is
    wrong with the secret (never a key); KeyUnavailable when reading it failed this time."""
    try:
        text = secrets.get_secret_value(SecretId=secret_arn)["SecretString"]
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in MISSING_CODES:
            raise GateError(
                f"the API keys secret {secret_arn} does not exist: the gate's ApiKeysSecretArn must name it"
            ) from None
        raise KeyUnavailable(
            f"reading the API keys secret {secret_arn}: {code or error}", denied=code in DENIED_CODES
        ) from None
    except BotoCoreError as error:
        raise KeyUnavailable(f"reading the API keys secret {secret_arn}: {error}") from None
    try:
        keys = json.loads(text)
    except ValueError:
        keys = None
    if not isinstance(keys, dict):
        raise GateError(f"the API keys secret {secret_arn} is not a JSON object of name: key: make it one")
    key = keys.get(name)
    if not isinstance(key, str) or not key:
        raise GateError(f"the API keys secret {secret_arn} has no key named {name!r}: add one")
    return key


def list_models(url: str, api_key: str, timeout_s: float = API_TIMEOUT_S) -> ApiAnswer:
    """`GET <url>/v1/models` with the key. Never raises for the endpoint's failures."""
    request = urllib.request.Request(
        f"{url}/v1/models",
        headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        method="GET",
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        return ApiAnswer(f"HTTP {error.code} {_error_message(error)}", status=error.code)
    except urllib.error.URLError as error:
        return ApiAnswer(f"no answer: {error.reason}")
    except (OSError, http.client.HTTPException) as error:
        return ApiAnswer(f"no answer: {type(error).__name__}: {error or 'timed out'}")
    try:
        listing = json.loads(body)
    except ValueError:
        return ApiAnswer("HTTP 200 but the body is not JSON", status=200)
    items = listing.get("data") if isinstance(listing, dict) else None
    models = tuple(str(m["id"]) for m in items or [] if isinstance(m, dict) and m.get("id"))
    if not models:
        return ApiAnswer("HTTP 200 but no model listed", status=200)
    return ApiAnswer(f"HTTP 200, models {', '.join(models)}", status=200, models=models)


def _error_message(error: urllib.error.HTTPError) -> str:
    """OpenAI's error message of an error answer, else its reason phrase."""
    try:
        body = json.loads(error.read().decode("utf-8", "replace"))
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        if message:
            return clip(message, 200)
    except (ValueError, OSError, AttributeError):
        pass
    return str(error.reason)
