"""The few Kubernetes API reads the gate makes, over HTTPS that trusts only the cluster's
own CA, with the standard library (urllib)."""

from __future__ import annotations

import base64
import ipaddress
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from gate_errors import GateError, KubeApiError

# One Kubernetes API call must finish well inside the Lambda timeout (60 s in the stack).
HTTP_TIMEOUT_S = 10.0


class NoRedirect(urllib.request.HTTPRedirectHandler):
    # Neither the API server nor the serve load balancer redirects these reads; following
    # one would send the bearer token (or the API key) to wherever it points.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
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
    """HTTPS with the cluster CA; plain HTTP only to a loopback address (tests), so a
    bearer token never crosses a network in the clear."""

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
            NoRedirect(),
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
            raise KubeApiError(
                f"GET {path}: HTTP {error.code} {detail}", status=error.code, transient=transient
            ) from None
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


def rayclusters_path(namespace: str) -> str:
    return f"/apis/ray.io/v1/namespaces/{_quote(namespace)}/rayclusters"


def services_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{_quote(namespace)}/services"


def service_path(namespace: str, name: str) -> str:
    return f"{services_path(namespace)}/{_quote(name)}"


def events_path(namespace: str, name: str) -> str:
    selector = f"involvedObject.name={name},involvedObject.kind=RayService"
    return f"/api/v1/namespaces/{_quote(namespace)}/events?" + urllib.parse.urlencode({"fieldSelector": selector})


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
