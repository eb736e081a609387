"""A TCP forwarder on loopback to the workers' Serve proxies: the local stand-in for the
serve Service with `excludeHeadPodFromServeSvc`. Each connection goes to the next ready
backend, as a Service sends only to its ready endpoints:

- a backend is ready while its Serve proxy's health route answers 200, asked every second
  (the stand-in for the worker's readiness probe). A restarted worker's proxy listens before
  it has its route table, and answers every application route with 404 meanwhile; its health
  route says 503 until the routes and a running replica are there, so it gets no request
  before it can serve one;
- a node the drill holds down is skipped at once (a deleted pod, terminating or not yet
  replaced, is no endpoint of its Service);
- a backend that refuses the connection is skipped (it died since its last probe).

With no ready backend every backend is tried (the client's retry decides). Connections
already open stay where they are, as they do through kube-proxy.

    python -m local.forwarder --listen 127.0.0.1:8000 --backend 10.213.7.11:8000 ...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

from local.state import held
from local.topology import NODES
from ray_serve_ha.charts.constants import SERVE_PROXY_HEALTH_PATH
from ray_serve_ha.charts.worker_readiness import HTTP_TIMEOUT_SECONDS

# How often each backend's proxy is asked; the readiness probe on EKS asks every 5 s, but a
# worker starts NotReady there, and a local restart must not get a request before a probe.
READINESS_PERIOD_S = 1.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def proxy_ready(host: str, port: int, timeout: float = HTTP_TIMEOUT_SECONDS) -> bool:
    """The proxy's health route answers 200 (a plain HTTP/1.1 GET on the event loop)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"GET {SERVE_PROXY_HEALTH_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
    return status_line.split()[1:2] == [b"200"]


class Forwarder:
    def __init__(self, backends: list[tuple[str, int]]):
        self.backends = backends
        self._next = itertools.cycle(range(len(backends)))
        self._node_of = {node.ip: node.name for node in NODES}
        # Ready until a probe says otherwise: `up` starts the forwarder once Serve is healthy.
        self.ready = {backend: True for backend in backends}

    async def probe_forever(self, period_s: float = READINESS_PERIOD_S) -> None:
        while True:
            results = await asyncio.gather(*(proxy_ready(*backend) for backend in self.backends))
            self.ready = dict(zip(self.backends, results, strict=True))
            await asyncio.sleep(period_s)

    def _terminating(self, host: str) -> bool:
        name = self._node_of.get(host)
        return name is not None and held(name)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        start = next(self._next)
        last: OSError | None = None
        candidates = [self.backends[(start + offset) % len(self.backends)] for offset in range(len(self.backends))]
        # Every endpoint terminating: try them anyway (a Service with no ready endpoint
        # refuses; here the client's retry decides).
        ready = [b for b in candidates if not self._terminating(b[0]) and self.ready.get(b, True)] or candidates
        for host, port in ready:
            try:
                return await asyncio.wait_for(asyncio.open_connection(host, port), timeout=2)
            except (TimeoutError, OSError) as error:
                last = error if isinstance(error, OSError) else OSError(str(error))
        raise last or OSError("no backend")

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            backend_reader, backend_writer = await self._connect()
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, backend_writer), _pipe(backend_reader, client_writer))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main(listen: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    forwarder = Forwarder(backends)
    server = await asyncio.start_server(forwarder.handle, *listen)
    probes = asyncio.create_task(forwarder.probe_forever())
    async with server:
        await server.serve_forever()
    probes.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="TCP forwarder to the workers' Serve proxies")
    parser.add_argument("--listen", type=_address, required=True)
    parser.add_argument("--backend", type=_address, action="append", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.listen, args.backend))
