"""A TCP forwarder on loopback to the workers' Serve proxies: the local stand-in for the
serve Service with `excludeHeadPodFromServeSvc`. Each connection goes to the next backend;
a backend that refuses is skipped, as a Service skips a not-ready endpoint, and so is a node
the drill holds down (a deleted pod, terminating or not yet replaced, is no endpoint of its
Service). Connections already open stay where they are, as they do through kube-proxy.

    python -m local.forwarder --listen 127.0.0.1:8000 --backend 10.213.7.11:8000 ...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

from local.state import held
from local.topology import NODES


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


class Forwarder:
    def __init__(self, backends: list[tuple[str, int]]):
        self.backends = backends
        self._next = itertools.cycle(range(len(backends)))
        self._node_of = {node.ip: node.name for node in NODES}

    def _terminating(self, host: str) -> bool:
        name = self._node_of.get(host)
        return name is not None and held(name)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        start = next(self._next)
        last: OSError | None = None
        candidates = [self.backends[(start + offset) % len(self.backends)] for offset in range(len(self.backends))]
        # Every endpoint terminating: try them anyway (a Service with no ready endpoint
        # refuses; here the client's retry decides).
        ready = [b for b in candidates if not self._terminating(b[0])] or candidates
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
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="TCP forwarder to the workers' Serve proxies")
    parser.add_argument("--listen", type=_address, required=True)
    parser.add_argument("--backend", type=_address, action="append", required=True)
    args = parser.parse_args()
    asyncio.run(main(args.listen, args.backend))
