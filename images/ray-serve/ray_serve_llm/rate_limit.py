"""Per-key rate limits that hold across every replica and proxy: counters in a shared Redis.

The Redis is the one the Ray GCS already writes to for fault tolerance (ElastiCache on EKS,
the local stack's own Redis); the counters live under their own key prefix,
`ray-serve-ha:api-limit:`, away from Ray's tables, and expire on their own.

Fixed windows of one minute: a request is admitted while its key's count of requests in the
current minute is within the limit (one Lua script: INCR, and EXPIRE on the first, so a
window's counter never outlives it); tokens are counted as requests finish (INCRBY) and a
key already over its token limit this minute is refused. A refusal says when the window
ends (Retry-After).

When Redis cannot be reached the limiter fails open: requests are admitted, one line is
logged per outage, and the next check after RETRY_CONNECT_S tries again. An unreachable
counter must not take the API down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

logger = logging.getLogger("ray.serve")

KEY_PREFIX = "ray-serve-ha:api-limit:"
WINDOW_S = 60
# A command that takes longer than this counts as Redis unreachable (fail open).
COMMAND_TIMEOUT_S = 0.5
# After a failure, checks skip Redis (admit) this long before connecting again.
RETRY_CONNECT_S = 5.0

# KEYS[1]: the counter; ARGV[1]: the increment; ARGV[2]: the window's length. Returns the
# new count. The expiry is set when the counter is created, so it lives one window at most.
_COUNT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return count
"""


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: which limit, and when the window ends."""

    kind: str  # "requests" or "tokens"
    limit: int
    retry_after_s: int


class RedisConnection:
    """One RESP2 connection (AUTH, TLS for `rediss://`), opened on first use."""

    def __init__(self, address: str, password: str | None) -> None:
        url = urlparse(address if "://" in address else f"redis://{address}")
        self.host, self.port = url.hostname or "localhost", url.port or 6379
        self.tls = url.scheme == "rediss"
        self.password = password
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    async def command(self, *args: str | int) -> object:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # streams and locks belong to the loop they were made on
            self._streams, self._loop, self._lock = None, loop, asyncio.Lock()
        async with self._lock:  # one request in flight on the connection at a time
            try:
                return await asyncio.wait_for(self._command(args), COMMAND_TIMEOUT_S)
            except BaseException:
                self.close()  # a half-read reply would desynchronise the next command
                raise

    async def _command(self, args: tuple[str | int, ...]) -> object:
        if self._streams is None:
            context = ssl.create_default_context() if self.tls else None
            self._streams = await asyncio.open_connection(self.host, self.port, ssl=context)
            if self.password:
                await self._send(("AUTH", self.password))
        return await self._send(args)

    async def _send(self, args: tuple[str | int, ...]) -> object:
        assert self._streams is not None
        reader, writer = self._streams
        payload = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = str(arg).encode()
            payload.append(b"$%d\r\n%s\r\n" % (len(data), data))
        writer.write(b"".join(payload))
        await writer.drain()
        line = await reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"-":
            raise ConnectionError(f"Redis error: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
        return rest  # simple string (+OK)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class RateLimiter:
    """Requests (and tokens, when a token limit is set) per key name and minute."""

    def __init__(
        self,
        connection: RedisConnection,
        *,
        requests_per_minute: int | None,
        tokens_per_minute: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._down_until = 0.0

    def _window(self) -> tuple[int, int]:
        """(the current window's number, seconds until it ends, at least 1)."""
        now = self._clock()
        window = int(now // WINDOW_S)
        return window, max(1, math.ceil((window + 1) * WINDOW_S - now))

    async def admit(self, name: str) -> Refusal | None:
        """Counts one request of `name`; a Refusal when it is over a limit, else None."""
        window, left = self._window()
        if self.requests_per_minute is not None:
            requests = await self._count(f"{KEY_PREFIX}requests:{name}:{window}", 1)
            if requests is not None and requests > self.requests_per_minute:
                return Refusal("requests", self.requests_per_minute, left)
        if self.tokens_per_minute is not None:
            tokens = await self._count(f"{KEY_PREFIX}tokens:{name}:{window}", 0)
            if tokens is not None and tokens >= self.tokens_per_minute:
                return Refusal("tokens", self.tokens_per_minute, left)
        return None

    async def charge_tokens(self, name: str, tokens: int) -> None:
        """Adds a finished request's prompt and completion tokens to `name`'s minute."""
        if self.tokens_per_minute is not None and tokens > 0:
            window, _ = self._window()
            await self._count(f"{KEY_PREFIX}tokens:{name}:{window}", tokens)

    async def _count(self, key: str, increment: int) -> int | None:
        """The counter after adding `increment`; None (admit) while Redis is unreachable."""
        now = time.monotonic()
        if now < self._down_until:
            return None
        try:
            reply = await self.connection.command("EVAL", _COUNT, 1, key, increment, WINDOW_S + 1)
        except Exception as error:  # unreachable, refused, timed out, AUTH failed: fail open
            if not self._down_until:
                logger.warning(
                    "API rate limits: Redis at %s:%s unreachable (%s); admitting requests unlimited until it is back",
                    self.connection.host, self.connection.port, error or type(error).__name__,
                )
            self._down_until = now + RETRY_CONNECT_S
            return None
        if self._down_until:
            logger.info("API rate limits: Redis at %s:%s is back", self.connection.host, self.connection.port)
            self._down_until = 0.0
        return int(reply)  # type: ignore[arg-type]
