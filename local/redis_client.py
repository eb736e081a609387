"""A minimal Redis client (RESP2 over one TCP connection): what the supervisor's liveness
probe of the local Redis needs (AUTH, PING) and what a test needs to read or write one hash
field of the GCS tables. Standard library only; no redis-py in the project."""

from __future__ import annotations

import socket
from types import TracebackType
from typing import TypeAlias

Reply: TypeAlias = "bytes | int | list[Reply] | None"


class RedisError(RuntimeError):
    """Redis answered with an error (the message is Redis's own)."""


class RedisClient:
    def __init__(self, host: str, port: int, *, password: str | None = None, timeout_s: float = 2.0):
        self._socket = socket.create_connection((host, port), timeout=timeout_s)
        self._reader = self._socket.makefile("rb")
        if password:
            self.command("AUTH", password)

    def command(self, *args: str | bytes) -> Reply:
        request = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else arg.encode()
            request.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._socket.sendall(b"".join(request))
        return self._read()

    def _read(self) -> Reply:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._reader.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")

    def hash(self, key: str) -> dict[bytes, bytes]:
        """HGETALL as a dict."""
        items = self.command("HGETALL", key)
        assert isinstance(items, list)
        return {k: v for k, v in zip(items[::2], items[1::2], strict=True)}  # type: ignore[misc]

    def close(self) -> None:
        self._reader.close()
        self._socket.close()

    def __enter__(self) -> RedisClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def ping(host: str, port: int, password: str, timeout_s: float) -> tuple[bool, str]:
    """One liveness check: a PING answered PONG within `timeout_s` (a frozen Redis accepts
    the connection, as the kernel does, but never answers)."""
    try:
        with RedisClient(host, port, password=password, timeout_s=timeout_s) as client:
            answer = client.command("PING")
    except (OSError, RedisError) as error:
        return False, f"PING: {type(error).__name__}"
    return (True, "PONG") if answer == b"PONG" else (False, f"PING: {answer!r}")
