"""The ingress in front of an on-demand floor and spot replicas above it.

Ray Serve has no per-deployment floor on a capacity type (ray#58491): one deployment's
replicas land on whatever node has room, and a scale-down may stop the one on on-demand
capacity. So the model runs as two deployments: `LLMServer`, the floor, whose replicas
require the Ray resource only on-demand workers advertise, and `LLMServerSpot`, whose
replicas require the spot workers' resource (the serve config sets both, with the counts).
No spot interruption can take a floor replica: none can run on a spot node.

This router is the application's ingress. It sends each HTTP request, unchanged, to one of
the two, in proportion to their running replicas (from the Serve controller, refreshed every
few seconds; while the controller is away, as during a head restart, the last counts hold),
and streams the answer back as the model replica writes it. Its replicas are light (no
model): any worker holds one, and a draining node's router is replaced in seconds.

As the ingress it is the API's front door (`ray_serve_llm.guard`): keys and rate limits are
checked here, and the model replica is told the key's name (for its token count) without
checking again. When the chosen deployment is full (its replica's own queue,
`ray_serve_llm.admission`, or Serve's `max_queued_requests` in front of it) the other one is
tried; when both are, the client gets 429 with Retry-After, OpenAI's error body, never a 5xx.
"""

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from . import guard
from .admission import Full
from .args import AppArgs
from .guard import FORWARDED, KEY_NAME_STATE, authorization_headers, error_response, overloaded
from .protocol import OpenAIError

logger = logging.getLogger("ray.serve")

ROUTER_DEPLOYMENT_NAME = "Router"
# The response header that names the deployment (floor or spot) that answered.
SERVED_BY_HEADER = "x-served-by"
# How often the router asks the controller how many replicas of each deployment run.
REFRESH_S = 2.0
# A request body the router holds before it forwards it; the model replica applies the
# model's own, smaller limit (413) to what it receives.
MAX_FORWARDED_BODY_BYTES = 8 * 2**20
# What a model replica answers a forwarded request it sheds.
SHED_STATUS = 429
# Request headers that describe the hop, not the request.
_HOP_HEADERS = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade"}


def pick(running: Mapping[str, int], floor: str, draw: float) -> str:
    """The deployment for one request: each with probability in proportion to its running
    replicas (`draw` in [0, 1)); the floor when no count is known yet."""
    total = sum(count for count in running.values() if count > 0)
    if total == 0:
        return floor
    threshold = draw * total
    for name, count in running.items():
        if count <= 0:
            continue
        if threshold < count:
            return name
        threshold -= count
    return floor


def running_replicas(status: Any, app_name: str, names: list[str]) -> dict[str, int]:
    """RUNNING replicas per deployment, from `serve.status()`."""
    deployments = status.applications[app_name].deployments
    return {name: int(deployments[name].replica_states.get("RUNNING", 0)) if name in deployments else 0
            for name in names}


@serve.deployment(name=ROUTER_DEPLOYMENT_NAME)
class Router:
    """Forwards every request to the floor or the spot deployment of the model. A plain
    deployment (Serve hands `__call__` the HTTP request): an application may hold only one
    FastAPI deployment, and the model's is."""

    def __init__(
        self,
        floor: DeploymentHandle,
        spot: DeploymentHandle,
        floor_name: str,
        spot_name: str,
        args: dict[str, Any] | None = None,
    ) -> None:
        if args is not None:  # the keys and limits of this process (guard.GUARD)
            guard.configure(AppArgs.parse(args))
        self.handles = {floor_name: floor, spot_name: spot}
        self.floor = floor_name
        # Until the first answer from the controller: everything to the floor.
        self.running: dict[str, int] = {floor_name: 1, spot_name: 0}
        self.app_name = serve.get_replica_context().app_name
        self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            try:
                status = await asyncio.to_thread(serve.status)
                self.running = running_replicas(status, self.app_name, list(self.handles))
            except Exception as error:  # the controller restarts with the head: keep the last counts
                logger.info("router keeps its replica counts %s: %s", self.running, error)
            await asyncio.sleep(REFRESH_S)

    async def check_health(self) -> None:
        if self.watcher.done():
            raise RuntimeError("the replica-count watcher stopped")

    async def __call__(self, request: Request) -> Response:
        key_name, refusal = await guard.GUARD.respond_or_admit(
            request.url.path, authorization_headers(request.headers.raw)
        )
        if refusal is not None:
            return refusal
        try:
            body = await _read_capped(request)
        except OpenAIError as error:
            return error_response(error)
        message = {
            "method": request.method,
            "path": request.url.path,
            "query_string": request.url.query.encode(),
            "headers": [(k, v) for k, v in request.headers.raw if k.lower() not in _HOP_HEADERS],
            "body": body,
            # The proxy it came through (its node's IP) and the client: the model replica's
            # routes run behind the draining middleware, which reads the proxy from the scope.
            "server": request.scope.get("server"),
            "client": request.scope.get("client"),
            KEY_NAME_STATE: key_name,
        }
        chosen = pick(self.running, self.floor, random.random())
        try:
            return await self._respond(chosen, message)
        except (BackPressureError, Full):
            other = next(name for name in self.handles if name != chosen)
            return await self._respond_or_shed(other, message)
        except Exception:
            if chosen == self.floor:
                raise
            # Nothing was sent to the client yet: the floor answers instead.
            logger.warning("deployment %s failed before answering; the floor answers", chosen, exc_info=True)
            return await self._respond(self.floor, message)

    async def _respond_or_shed(self, deployment: str, message: dict[str, Any]) -> Response:
        """The other deployment's answer when the chosen one is full; 429 when both are."""
        try:
            return await self._respond(deployment, message)
        except (BackPressureError, Full):
            return error_response(overloaded())

    async def _respond(self, deployment: str, message: dict[str, Any]) -> StreamingResponse:
        """The deployment's answer; raises Full when its replica shed the request (a forwarded
        request gets a 429 for nothing else: its key's limits were counted here)."""
        messages = self.handles[deployment].options(stream=True).forward.remote(message)
        start = await messages.__anext__()
        if start["status"] == SHED_STATUS:
            messages.cancel()
            raise Full()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", [])
                   if k.lower() != b"content-length"}
        headers[SERVED_BY_HEADER] = deployment
        return StreamingResponse(_bodies(messages), status_code=start["status"], headers=headers)


async def _bodies(messages: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for message in messages:
        if message["type"] == "http.response.body" and message.get("body"):
            yield message["body"]


async def _read_capped(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORWARDED_BODY_BYTES:
            raise OpenAIError("Request body too large.", status_code=413, code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def run_asgi(app: Any, message: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Runs one forwarded request through an ASGI app in this process; yields the response's
    ASGI messages as the app sends them (a stream chunk by chunk)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": message["method"],
        "scheme": "http",
        "path": message["path"],
        "raw_path": message["path"].encode(),
        "root_path": "",
        "query_string": message["query_string"],
        "headers": list(message["headers"]),
        "client": message.get("client"),
        "server": message.get("server"),
        # Admitted by the router's guard: the app's guard middleware lets it through.
        "extensions": {FORWARDED: {KEY_NAME_STATE: message.get(KEY_NAME_STATE)}},
    }
    body_given = False
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": message["body"], "more_body": False}
        await finished.wait()  # the client stays until the response ends
        return {"type": "http.disconnect"}

    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def send(sent: dict[str, Any]) -> None:
        await queue.put(sent)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await queue.put(None)

    task = asyncio.get_running_loop().create_task(run())
    try:
        while (sent := await queue.get()) is not None:
            yield sent
        await task  # raises what the app raised
    finally:
        finished.set()
        if not task.done():  # the router's client went away: stop generating
            task.cancel()
