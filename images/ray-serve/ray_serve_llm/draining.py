"""Clients of a draining node's Serve proxy are asked to reconnect elsewhere.

When a worker pod is deleted with a grace period (node expiry, consolidation, a spot
interruption), Ray 2.60's `ray start` marks its node draining; Serve then moves the node's
replica and marks its proxy draining. A draining proxy only fails its health check: it keeps
serving every request that arrives on a connection a client already holds open, and clients
(the OpenAI SDK, the chat UI) keep their connections alive and send request after request on
them. Kubernetes stops sending *new* connections to a terminating pod, but those open ones
stay, so the proxy never has a moment with no request in flight, never counts as drained,
and is killed with requests still running when Ray's drain time-out ends.

So every response that leaves through a draining node's proxy says `Connection: close`: the
client finishes that answer (streams included), opens its next connection, and the Service
sends it to a ready node. The proxy empties, Serve stops it, the node exits on its own well
before the time-out, and no request is cut off.

The replica learns which proxy a request came through from the ASGI scope (`server` is the
proxy's own address, the node's IP) and which nodes are draining from the GCS, asked every
second in the background (the same query Serve's controller makes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Container, MutableMapping
from typing import Any

logger = logging.getLogger("ray.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REFRESH_PERIOD_S = 1.0
GCS_TIMEOUT_S = 2.0


class DrainingNodes(Container[str]):
    """The IPs of the nodes the GCS says are draining, refreshed in a background thread.
    Until the first answer (and while the GCS does not answer) it keeps what it last knew."""

    def __init__(self, fetch: Callable[[], set[str]] | None = None, period_s: float = REFRESH_PERIOD_S):
        self._fetch = fetch
        self._period_s = period_s
        self._ips: frozenset[str] = frozenset()
        self._started = False
        self._lock = threading.Lock()

    def __contains__(self, ip: object) -> bool:
        return ip in self._ips

    def start(self) -> None:
        """Starts the refresher (once per process: every replica of the process shares it)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        if self._fetch is None:
            self._fetch = _gcs_draining_ips()
        threading.Thread(target=self._refresh, name="draining-nodes", daemon=True).start()

    def _refresh(self) -> None:
        assert self._fetch is not None
        event = threading.Event()
        while True:
            try:
                ips = frozenset(self._fetch())
            except Exception:  # the GCS restarting: keep what we knew
                ips = self._ips
            if ips != self._ips:
                logger.info("Draining nodes: %s", ", ".join(sorted(ips)) or "none")
                self._ips = ips
            event.wait(self._period_s)


def _gcs_draining_ips() -> Callable[[], set[str]]:
    import ray
    from ray._raylet import GcsClient

    client = GcsClient(address=ray.get_runtime_context().gcs_address)

    def fetch() -> set[str]:
        draining = client.get_draining_nodes(timeout=GCS_TIMEOUT_S)
        if not draining:
            return set()
        nodes = client.get_all_node_info(timeout=GCS_TIMEOUT_S)
        return {info.node_manager_address for node_id, info in nodes.items() if node_id.hex() in draining}

    return fetch


class CloseConnectionsThroughDrainingNodes:
    """ASGI middleware: a response to a request that came through a draining node's proxy
    carries `Connection: close` (the proxy's server, uvicorn, then closes the connection
    once the response, however long, is complete)."""

    def __init__(self, app: ASGIApp, draining: Container[str]):
        self.app = app
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server") if scope.get("type") == "http" else None
        if not server or server[0] not in self.draining:
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


# One per replica process.
DRAINING_NODES = DrainingNodes()
