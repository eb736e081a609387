"""A response leaving through a draining node's Serve proxy tells its client to reconnect
(images/ray-serve/ray_serve_llm/draining.py): the ASGI middleware on its own, with a plain
and a streamed response, and the background refresher of the draining nodes. The drain
itself, on real Ray nodes, is in tests/test_local_stack.py."""

from __future__ import annotations

import asyncio
import sys
import threading

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "images" / "ray-serve"))

from ray_serve_llm.draining import CloseConnectionsThroughDrainingNodes, DrainingNodes


async def _app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"connection", b"keep-alive")]})
    for chunk in (b"data: 1\n\n", b"data: [DONE]\n\n"):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _call(server_ip: str, draining: set[str]) -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "server": (server_ip, 8000), "client": ("10.213.7.1", 50000)}
    asyncio.run(CloseConnectionsThroughDrainingNodes(_app, draining)(scope, receive, send))
    return sent


def test_a_response_through_a_draining_node_closes_its_connection_and_streams_whole():
    sent = _call("10.213.7.12", {"10.213.7.12"})
    start, *body = sent
    assert start["headers"] == [(b"content-type", b"text/event-stream"), (b"connection", b"close")]
    assert b"".join(m["body"] for m in body) == b"data: 1\n\ndata: [DONE]\n\n"


def test_other_responses_are_left_alone():
    sent = _call("10.213.7.11", {"10.213.7.12"})
    assert sent[0]["headers"] == [(b"content-type", b"text/event-stream"), (b"connection", b"keep-alive")]


def test_the_draining_set_follows_the_gcs_and_survives_its_outage():
    answers = [{"10.213.7.12"}, RuntimeError("GCS unavailable"), set()]
    # What the set says as each fetch begins, i.e. after the answer before it: no waiting on
    # the refresher's timing.
    seen: list[bool] = []
    four = threading.Event()

    def fetch() -> set[str]:
        seen.append("10.213.7.12" in draining)
        if len(seen) == 4:
            four.set()
        answer = answers[0] if len(answers) == 1 else answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    draining = DrainingNodes(fetch, period_s=0.01)
    draining.start()
    draining.start()  # once per process
    assert four.wait(10)
    # Nothing known yet, draining, still draining while the GCS did not answer, then not any more.
    assert seen[:4] == [False, True, True, False]


def test_through_the_spot_router_the_model_replica_sees_the_draining_proxy():
    """With spot replicas the router is the ingress: it passes the proxy's address on with the
    request it forwards, so the model replica's routes still close a draining node's connection."""
    from starlette.requests import Request

    from ray_serve_llm.router import SERVED_BY_HEADER, Router, run_asgi

    class Handle:  # a model deployment's handle: `forward` runs its app in this process
        def options(self, stream):
            return self

        @property
        def forward(self):
            return self

        def remote(self, message):
            return run_asgi(CloseConnectionsThroughDrainingNodes(_app, {"10.213.7.12"}), message)

    router = object.__new__(Router.func_or_class)  # its __init__ needs a Serve replica
    router.handles, router.floor, router.running = {"LLMServer": Handle()}, "LLMServer", {"LLMServer": 1}

    async def call(server_ip: str) -> tuple[dict[str, str], bytes]:
        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
                 "headers": [], "server": (server_ip, 8000), "client": ("10.213.7.1", 50000)}
        response = await router(Request(scope, receive))
        return dict(response.headers), b"".join([chunk async for chunk in response.body_iterator])

    headers, body = asyncio.run(call("10.213.7.12"))
    assert headers["connection"] == "close" and headers[SERVED_BY_HEADER] == "LLMServer"
    assert body == b"data: 1\n\ndata: [DONE]\n\n"
    assert asyncio.run(call("10.213.7.11"))[0]["connection"] == "keep-alive"
