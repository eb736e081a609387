"""The local serve Service stand-in sends requests only to ready proxies: a restarted worker's
proxy that listens before it has its routes (health 503, every route 404) gets nothing until
its health route says 200, as a Service sends only to Ready endpoints."""

from __future__ import annotations

import asyncio

from local.forwarder import Forwarder, proxy_ready


class FakeProxy:
    """A Serve proxy's HTTP surface: /-/healthz 200 or 503, other paths 200 with its name,
    or 404 while it has no route table."""

    def __init__(self, name: str, *, ready: bool):
        self.name = name
        self.ready = ready
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[:2]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = await reader.readline()
        while (await reader.readline()).strip():
            pass
        path = request_line.split()[1].decode()
        if path == "/-/healthz":
            status = "200 OK" if self.ready else "503 Service Unavailable"
        else:
            self.requests += 1
            status = "200 OK" if self.ready else "404 Not Found"
        body = self.name.encode()
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()


async def _get(port: int, path: str = "/v1/models") -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    return response.split(b" ", 2)[1].decode()


async def _scenario() -> dict[str, object]:
    serving, starting = FakeProxy("serving", ready=True), FakeProxy("starting", ready=False)
    backends = [await serving.start(), await starting.start()]
    forwarder = Forwarder(backends)
    server = await asyncio.start_server(forwarder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probes = asyncio.create_task(forwarder.probe_forever(period_s=0.05))
    await asyncio.sleep(0.3)
    while_starting = [await _get(port) for _ in range(20)]
    starting_requests = starting.requests
    starting.ready = True
    await asyncio.sleep(0.3)
    once_ready = [await _get(port) for _ in range(20)]
    serving.ready = starting.ready = False
    await asyncio.sleep(0.3)
    none_ready = [await _get(port) for _ in range(4)]
    probes.cancel()
    server.close()
    return {
        "while_starting": while_starting, "starting_requests": starting_requests, "once_ready": once_ready,
        "starting_after": starting.requests, "none_ready": none_ready,
        "probe": (await proxy_ready(*backends[0]), await proxy_ready("127.0.0.1", 9)),
    }


def test_requests_reach_only_proxies_whose_health_route_says_ready():
    result = asyncio.run(_scenario())
    # Starting: every request went to the ready proxy; the starting one got none (no 404).
    assert result["while_starting"] == ["200"] * 20
    assert result["starting_requests"] == 0
    # Ready: it takes its share again.
    assert result["once_ready"] == ["200"] * 20
    assert result["starting_after"] >= 5
    # No proxy ready: every backend is still tried (the client's retry decides), none refused.
    assert result["none_ready"] == ["404"] * 4
    # Not ready (503) and nothing listening both read as not ready.
    assert result["probe"] == (False, False)
