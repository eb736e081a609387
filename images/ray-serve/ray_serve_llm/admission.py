"""Each replica's own bounded queue: what it generates at once, what waits, what is shed.

A model replica generates at most `max_ongoing_requests` answers at once and holds at most
`max_queued_requests` more, waiting in arrival order (first in, first out) for one of those
slots. A request beyond that is answered at once with 429, `Retry-After` and OpenAI's error
body (`code` `queue_full`), before any work is spent on it. The routes that generate
(`POST /v1/chat/completions`, `GET /infer`) are bounded; the others (`/v1/models`,
`/healthz`) are not.

Why here and not only in Serve's router: Serve's `max_queued_requests` is counted per caller
(each node's proxy), and a request its router admits waits for a replica slot against every
other proxy's requests with no order between them (the replicas refuse what is over their
`max_ongoing_requests`, and the router tries again). Measured on the local stack at three
times its capacity (docs/measurements.md), an admitted request waited there for up to four
answers' time with one slot per replica and one queued request per proxy. Here the wait is
bounded by the replica itself: at most `max_ongoing_requests + max_queued_requests - 1`
requests ahead of it, served in order, and for at most `max_queue_wait_s` (then it is shed
after all): a replica that is drained (scale-down, upgrade, node drain) gets no new requests
but still serves its queue, and every answer must end within its graceful shutdown.

Serve's own bounds are set around this one (the serve config): its `max_ongoing_requests` is
this replica's slots plus queue plus SHED_HEADROOM (the requests it is refusing at that
moment), so that Serve's router hands the replica what it then admits or sheds, and Serve's
`max_queued_requests` stays as the backstop of a flood faster than the replicas' refusals.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

# Requests beyond a replica's slots and queue that Serve may hand it at once, for it to
# refuse (a refusal takes milliseconds) or to serve the routes that are not bounded.
SHED_HEADROOM = 4
# The defaults of the application args (ray_serve_llm.args): vLLM and Neuron batch 16
# requests continuously; as many again wait about one answer's time.
DEFAULT_MAX_ONGOING_REQUESTS = 16
DEFAULT_MAX_QUEUED_REQUESTS = 16
# The routes that generate, (method, path): what the bound applies to.
GENERATING = {("POST", "/v1/chat/completions"), ("GET", "/infer")}


def generates(method: str, path: str) -> bool:
    return (method, path) in GENERATING


def serve_max_ongoing_requests(max_ongoing: int, max_queued: int) -> int:
    """Serve's `max_ongoing_requests` for a replica that bounds itself with these."""
    return max_ongoing + max_queued + SHED_HEADROOM


class Full(Exception):
    """The replica's slots and queue are taken: shed the request."""


@dataclass
class Admission:
    """One replica's slots and FIFO queue. Runs on the replica's event loop only."""

    max_ongoing: int = DEFAULT_MAX_ONGOING_REQUESTS
    max_queued: int = DEFAULT_MAX_QUEUED_REQUESTS
    # The longest a request waits for a slot before it is shed after all; None: no bound.
    max_wait_s: float | None = None
    running: int = 0
    # Each waiter's future; it is resolved when a finished request hands it its slot.
    _waiting: deque[asyncio.Future[None]] = field(default_factory=deque)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds one of the replica's slots for the body of the `async with`; raises Full at
        once when every slot is taken and the queue holds max_queued requests already."""
        await self._enter()
        try:
            yield
        finally:
            self._leave()

    async def _enter(self) -> None:
        if self.running < self.max_ongoing and not self._waiting:
            self.running += 1
            return
        if len(self._waiting) >= self.max_queued:
            raise Full()
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(ticket)
        try:
            # _leave hands over its slot: `running` stays as it is.
            await asyncio.wait_for(ticket, self.max_wait_s)
        except TimeoutError:
            self._give_up(ticket)
            raise Full() from None
        except asyncio.CancelledError:
            # The client went away while it waited (Serve cancels the request).
            self._give_up(ticket)
            raise

    def _give_up(self, ticket: asyncio.Future[None]) -> None:
        if ticket.done() and not ticket.cancelled():
            self._leave()  # a slot was handed to it just before: pass it on
        elif ticket in self._waiting:
            self._waiting.remove(ticket)

    def _leave(self) -> None:
        while self._waiting:
            ticket = self._waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self.running -= 1


# How often a replica publishes its queue length. Ray drops a gauge's series that is not set
# again within two of its export intervals (at least 1 s each), so a value set only when it
# changes would vanish while the queue holds still.
QUEUE_METRIC_PERIOD_S = 1.0


async def publish_waiting(gate: Admission, gauge: Callable[..., Any]) -> None:
    """Publishes the gate's queue length, for ever, with `gauge` (ray.serve.metrics.Gauge):
    exported as ray_serve_llm_queued_requests (Serve's queued-requests series shows only the
    queue in front of the replica)."""
    queued = gauge("serve_llm_queued_requests", description="Requests waiting in the replica's queue.")
    while True:
        queued.set(gate.waiting)
        await asyncio.sleep(QUEUE_METRIC_PERIOD_S)


# The admission of this process (a replica is one process): set by the deployment's constructor.
ADMISSION = Admission()


def configure(max_ongoing: int, max_queued: int, max_wait_s: float | None = None) -> Admission:
    global ADMISSION
    ADMISSION = Admission(max_ongoing, max_queued, max_wait_s)
    return ADMISSION
