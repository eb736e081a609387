"""The few Kubernetes API calls the drill makes (get a RayService, list pods by label,
delete a pod), authenticated from the user's kubeconfig: a bearer token, a client
certificate, or an exec plugin such as `aws eks get-token` (what `aws eks
update-kubeconfig` writes).

Why not a library: `kubernetes` pins python-dateutil, which cannot be installed next to
botocore; `kr8s` 0.20 (httpx-based) fits the dependencies but writes an embedded client key
to a temporary file it never deletes, and brings five more packages for three calls."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import yaml


class KubeError(RuntimeError):
    """A kubeconfig or API problem; the message names it."""


class KubeApiError(KubeError):
    def __init__(self, status: int, reason: str, path: str):
        super().__init__(f"{status} {reason} for {path}")
        self.status = status


@dataclass(frozen=True)
class KubeConfig:
    server: str
    verify: ssl.SSLContext | bool
    token: str | None = None
    exec_spec: dict[str, Any] | None = None
    client_cert: tuple[str, str] | None = None

    @staticmethod
    def load(path: str | None = None, context: str | None = None) -> KubeConfig:
        config_path = Path(path or os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]).expanduser()
        try:
            config = yaml.safe_load(config_path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise KubeError(f"cannot read kubeconfig {config_path}: {error}") from None
        try:
            context_name = context or config["current-context"]
            ctx = _named(config["contexts"], context_name)["context"]
            cluster = _named(config["clusters"], ctx["cluster"])["cluster"]
            user = _named(config.get("users", []), ctx["user"])["user"] if ctx.get("user") else {}
        except (KeyError, TypeError) as error:
            raise KubeError(f"kubeconfig {config_path} lacks {error}") from None
        return KubeConfig(
            server=cluster["server"].rstrip("/"),
            verify=_with_embedded_client_cert(_tls_context(cluster, config_path.parent), user),
            token=user.get("token"),
            exec_spec=user.get("exec"),
            client_cert=_client_cert(user, config_path.parent),
        )

    def bearer_token(self) -> str | None:
        if self.token:
            return self.token
        if not self.exec_spec:
            return None
        command = [self.exec_spec["command"], *self.exec_spec.get("args", [])]
        env = {**os.environ, **{e["name"]: e["value"] for e in self.exec_spec.get("env") or []}}
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError) as error:
            raise KubeError(f"kubeconfig exec plugin {command[0]!r} failed: {error}") from None
        token: str = json.loads(result.stdout)["status"]["token"]
        return token


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise KeyError(name)


def _tls_context(cluster: dict[str, Any], base: Path) -> ssl.SSLContext | bool:
    if cluster.get("insecure-skip-tls-verify"):
        return False
    if "certificate-authority-data" in cluster:
        return ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    if "certificate-authority" in cluster:
        return ssl.create_default_context(cafile=str(base / cluster["certificate-authority"]))
    return True


def _client_cert(user: dict[str, Any], base: Path) -> tuple[str, str] | None:
    if "client-certificate" in user:
        return str(base / user["client-certificate"]), str(base / user["client-key"])
    return None


def _with_embedded_client_cert(verify: ssl.SSLContext | bool, user: dict[str, Any]) -> ssl.SSLContext | bool:
    """Loads a kubeconfig's embedded client certificate and key into the TLS context.
    `ssl` reads them only from files: they are written to a private folder, loaded, and
    deleted at once, so no key is left on disk."""
    if "client-certificate-data" not in user:
        return verify
    context = verify if isinstance(verify, ssl.SSLContext) else ssl.create_default_context()
    if verify is False:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with tempfile.TemporaryDirectory(prefix="drill-kube-") as folder:  # 0700
        cert, key = Path(folder) / "client.crt", Path(folder) / "client.key"
        for path, field in ((cert, "client-certificate-data"), (key, "client-key-data")):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(base64.b64decode(user[field]))
        context.load_cert_chain(str(cert), str(key))
    return context


class KubeClient:
    def __init__(self, config: KubeConfig):
        self.config = config
        headers = {"Accept": "application/json"}
        token = config.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(
            base_url=config.server, headers=headers, verify=config.verify, cert=config.client_cert, timeout=30,
            # Never follow a redirect with the bearer token.
            follow_redirects=False, trust_env=False,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise KubeError(f"cannot reach the Kubernetes API at {self.config.server}: {error}") from None
        if response.status_code >= 400:
            try:
                reason = response.json().get("reason") or response.reason_phrase
            except ValueError:
                reason = response.reason_phrase
            raise KubeApiError(response.status_code, reason, path)
        body: dict[str, Any] = response.json()
        return body

    def get_rayservice(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call("GET", f"/apis/ray.io/v1/namespaces/{quote(namespace)}/rayservices/{quote(name)}")

    def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        query = urlencode({"labelSelector": label_selector})
        pods: list[dict[str, Any]] = self._call("GET", f"/api/v1/namespaces/{quote(namespace)}/pods?{query}")["items"]
        return pods

    def delete_pod(self, namespace: str, name: str, grace_period_seconds: int) -> None:
        self._call(
            "DELETE",
            f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}",
            json={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace_period_seconds},
        )
