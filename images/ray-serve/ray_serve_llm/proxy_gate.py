"""Shedding at the Serve proxies: a request the model replicas would shed is answered there.

Each model replica bounds itself (`ray_serve_llm.admission`): what it cannot start or queue it
answers with 429 `queue_full` at once. Under a flood that refusal is most of the traffic, and
each one costs a hop to the replica and a turn of the replica's event loop, the loop that also
streams the admitted answers. So each Serve proxy bounds the generating requests it has in
flight to its share of what the replicas hold:

    share = ceil(running model replicas x (max_ongoing_requests + max_queued_requests)
                 / proxies that take traffic)

and, while the replicas are shedding, answers a request beyond its share itself, in the same
words as a replica (429, `Retry-After`, OpenAI's body with `code` `queue_full`), after the
same key check (a request with no valid key is a 401 whatever the load).

"While the replicas are shedding": for SATURATED_S (the Retry-After it gives) after a replica
shed one of this proxy's requests. The share is an even split and the clients' connections
are not (a Service balances connections, not requests): a proxy that holds more than its
share while the replicas have room lets the next request through, and the replicas' own
bound stays the exact one. Under a flood each proxy lets about one request a second beyond
its share reach the replicas, which tells it whether they are still full. Other routes, and
everything while the share is not known yet, pass.

The proxies that take traffic are those on the workers: the serve Service leaves the head
out (`excludeHeadPodFromServeSvc`; locally the API port's forwarder does the same). The counts
and the application's args (its bounds, its keys file) come from the Serve controller, read
again every REFRESH_S; while the controller is away (a head restart) the last ones hold.

Serve's proxy metrics do not see an answer given here (its middlewares run in front of them):
each one is counted in `ray_serve_llm_proxy_shed_requests`, which the dashboards add to the
proxies' own request and 4xx counts (ray_serve_ha.charts.serve_metrics).

Installed in each worker's proxy by RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH (the chart's
worker environment, ray_serve_ha.charts.ray_env), which names `middlewares` below.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import admission
from .api_keys import KeyRing
from .args import AppArgs
from .guard import (
    SHED_HEADER,
    SHED_REASON,
    SHED_RETRY_AFTER_S,
    ApiGuard,
    authorization_headers,
    error_response,
    overloaded,
)
from .protocol import OpenAIError
from .router import ROUTER_DEPLOYMENT_NAME

logger = logging.getLogger("ray.serve")

# How often each proxy reads the replica and proxy counts and the args from the controller.
REFRESH_S = 2.0
SHED_METRIC = "serve_llm_proxy_shed_requests"
# How long a replica's shed holds a proxy to its share: the Retry-After its clients get.
SATURATED_S = float(SHED_RETRY_AFTER_S)
_SHED_HEADER = SHED_HEADER.lower().encode("latin-1")


@dataclass(frozen=True)
class Share:
    """What one proxy lets through at once, and the keys file its 401s check against."""

    max_in_flight: int
    api_keys_file: str | None


def share_of(details: Mapping[str, Any]) -> Share | None:
    """This proxy's share, from the controller's `get_serve_instance_details()`; None while it
    is not known (no application with the model's args, no running replica)."""
    for app in details.get("applications", {}).values():
        config = app.get("deployed_app_config") or {}
        try:
            args = AppArgs.model_validate(config.get("args") or {})
        except ValueError:
            continue
        # The router (the ingress with spot replicas) forwards; the others generate.
        replicas = sum(
            1
            for name, deployment in app.get("deployments", {}).items()
            if name != ROUTER_DEPLOYMENT_NAME
            for replica in deployment.get("replicas", [])
            if replica.get("state") == "RUNNING"
        )
        if replicas == 0:
            return None
        head = (details.get("controller_info") or {}).get("node_id")
        healthy = [p for p in details.get("proxies", {}).values() if p.get("status") == "HEALTHY"]
        proxies = len([p for p in healthy if p.get("node_id") != head]) or 1
        held = replicas * (args.max_ongoing_requests + args.max_queued_requests)
        return Share(max(1, math.ceil(held / proxies)), args.api_keys_file)
    return None


def _sheds(start: Mapping[str, Any]) -> bool:
    """The response is a replica's shed (429, queue full), not a key's limit."""
    return start.get("status") == 429 and any(
        name.lower() == _SHED_HEADER and value.decode("latin-1") == SHED_REASON
        for name, value in start.get("headers", [])
    )


def _serve_details() -> dict[str, Any]:
    # What the dashboard's /api/serve/applications/ returns. `serve.status()` has neither the
    # application's args nor the proxies' nodes.
    from ray.serve.context import _get_global_client

    return _get_global_client().get_serve_details()


class ProxyGate:
    """ASGI middleware in a Serve proxy: at most its share of generating requests in flight."""

    def __init__(
        self,
        app: Any,
        details: Callable[[], Mapping[str, Any]] = _serve_details,
        shed_counter: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.in_flight = 0
        self.share: Share | None = None
        # Until when a replica's shed holds this proxy to its share.
        self.saturated_until = float("-inf")
        self._clock = clock
        self._details = details
        self._guard = ApiGuard()  # the key check of the share's keys file
        self._shed_counter = shed_counter
        self._watcher: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._watcher is None:  # the proxy's event loop runs by now
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        if scope["type"] != "http" or not admission.generates(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.share is not None and self.in_flight >= self.share.max_in_flight and self.saturated():
            await self._refuse(scope, receive, send)
            return

        async def watched(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and _sheds(message):
                self.saturated_until = self._clock() + SATURATED_S
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, receive, watched)
        finally:
            self.in_flight -= 1

    def saturated(self) -> bool:
        """A replica shed one of this proxy's requests within the last SATURATED_S."""
        return self._clock() < self.saturated_until

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:  # what the replica would answer first: 401 for a missing or unknown key
            self._guard.identify(scope["path"], authorization_headers(scope["headers"]))
        except OpenAIError as error:
            await error_response(error)(scope, receive, send)
            return
        if self._shed_counter is not None:
            self._shed_counter.inc()
        await error_response(overloaded())(scope, receive, send)

    async def refresh(self) -> None:
        try:
            details = await asyncio.to_thread(self._details)
        except Exception as error:  # the controller is away: the last share holds
            logger.info("proxy gate keeps its share %s: %s", self.share, error)
            return
        self.share = share = share_of(details)
        path = share.api_keys_file if share else None
        if path is None:
            self._guard = ApiGuard()
        elif self._guard.keys is None or self._guard.keys.path != path:
            self._guard = ApiGuard(KeyRing(path))

    async def _watch(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_S)


def _counter() -> Any:
    from ray.util.metrics import Counter

    return Counter(SHED_METRIC, description="Generating requests a Serve proxy shed (429 queue_full) itself.")


def middlewares() -> list[Any]:
    """For RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH: the proxy's gate."""
    from starlette.middleware import Middleware

    return [Middleware(ProxyGate, shed_counter=_counter())]
