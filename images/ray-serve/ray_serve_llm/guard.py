"""The API's front door: a key on every `/v1/*` (and `/infer`) request, and per-key rate limits.

    Authorization: Bearer <key>

A missing, malformed, empty or unknown key is a 401 with OpenAI's error body; a key over its
limit this minute, a 429 with `Retry-After`. Health routes (`/healthz`, and Serve's own
`/-/healthz`, `/-/routes`, which never reach the app) stay open. The guard runs in the
application's ingress: the FastAPI app's middleware (`GuardMiddleware`) with one deployment,
the router with spot replicas (which then forwards the key's name, so the model replica
neither checks nor counts the request again).

Configured per replica process from the application args (`api_keys_file`,
`api_rate_limit_per_minute`, `api_token_limit_per_minute`); the rate limiter's Redis comes
from the environment (`API_LIMITS_REDIS_ADDRESS`, `API_LIMITS_REDIS_PASSWORD`), as the pods
get it for GCS fault tolerance.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from . import admission
from .api_keys import KeyRing
from .protocol import OpenAIError
from .rate_limit import RateLimiter, RedisConnection, Refusal

logger = logging.getLogger("ray.serve")

REDIS_ADDRESS_ENV = "API_LIMITS_REDIS_ADDRESS"
REDIS_PASSWORD_ENV = "API_LIMITS_REDIS_PASSWORD"
# The ASGI scope extension that marks a request the router forwards, already admitted.
FORWARDED = "ray_serve_llm.forwarded"
# Where a route finds the name of the key that admitted its request (`request.state`).
KEY_NAME_STATE = "api_key_name"
# How long a client should wait when a replica's queue is full (ray_serve_llm.admission, and
# Serve's max_queued_requests behind it): about one short answer's time.
SHED_RETRY_AFTER_S = 1
# The header of a 429 that sheds (a full queue), not a key's limit: the proxies' gates
# (ray_serve_llm.proxy_gate) read it to know that the replicas are full.
SHED_HEADER = "X-Shed-Reason"
SHED_REASON = "queue_full"


def guarded(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/") or path == "/infer"


def _unauthorized(message: str, code: str) -> OpenAIError:
    return OpenAIError(message, status_code=401, code=code, headers={"WWW-Authenticate": "Bearer"})


def presented_key(authorization: list[str]) -> str:
    """The key of the request's Authorization headers; OpenAIError(401) says what is wrong."""
    if not authorization:
        raise _unauthorized(
            "You didn't provide an API key. Send it in an Authorization header: 'Authorization: Bearer <key>'.",
            "missing_api_key",
        )
    if len(authorization) > 1:
        raise _unauthorized("More than one Authorization header: send exactly one, 'Bearer <key>'.", "invalid_api_key")
    if not authorization[0].strip():
        raise _unauthorized("The Authorization header is empty: send 'Bearer <key>'.", "invalid_api_key")
    scheme, _, key = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise _unauthorized(
            "Malformed Authorization header: expected 'Bearer <key>' (the Bearer scheme).", "invalid_api_key"
        )
    key = key.strip()
    if not key:
        raise _unauthorized("The API key in the Authorization header is empty.", "invalid_api_key")
    if any(char.isspace() for char in key):
        raise _unauthorized("Malformed Authorization header: the key must not contain spaces.", "invalid_api_key")
    return key


def refused(refusal: Refusal, name: str) -> OpenAIError:
    return OpenAIError(
        f"Rate limit reached for the key '{name}': {refusal.limit} {refusal.kind} per minute. "
        f"Retry after {refusal.retry_after_s} s.",
        status_code=429,
        type=refusal.kind,
        code="rate_limit_exceeded",
        headers={"Retry-After": str(refusal.retry_after_s)},
    )


def overloaded() -> OpenAIError:
    return OpenAIError(
        f"The server is at capacity and its queue is full. Retry after {SHED_RETRY_AFTER_S} s.",
        status_code=429,
        type="server_overloaded",
        code=SHED_REASON,
        headers={"Retry-After": str(SHED_RETRY_AFTER_S), SHED_HEADER: SHED_REASON},
    )


def error_response(error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


@dataclass
class ApiGuard:
    """Keys and limits of one replica process. No key ring: the API is open (tests, kind)."""

    keys: KeyRing | None = None
    limiter: RateLimiter | None = None

    @classmethod
    def from_args(cls, args: Any, environ: dict[str, str] | None = None) -> ApiGuard:
        environ = dict(os.environ) if environ is None else environ
        if args.api_keys_file is None:
            logger.warning("API keys: no api_keys_file in the application args; the API is open to anyone")
            return cls()
        keys = KeyRing(args.api_keys_file)
        limiter = None
        if args.api_rate_limit_per_minute is not None or args.api_token_limit_per_minute is not None:
            address = environ.get(REDIS_ADDRESS_ENV)
            if not address:
                logger.warning("API rate limits: %s is not set; requests are not limited", REDIS_ADDRESS_ENV)
            else:
                limiter = RateLimiter(
                    RedisConnection(address, environ.get(REDIS_PASSWORD_ENV) or None),
                    requests_per_minute=args.api_rate_limit_per_minute,
                    tokens_per_minute=args.api_token_limit_per_minute,
                )
        return cls(keys, limiter)

    async def admit(self, path: str, authorization: list[str]) -> str | None:
        """The key's name (None for an open route or an open API); raises OpenAIError
        (401, 429) for a request to refuse, with `retry_after_s` set on a 429."""
        name = self.identify(path, authorization)
        await self.limit(name)
        return name

    def identify(self, path: str, authorization: list[str]) -> str | None:
        """The key's name (None for an open route or an open API); raises OpenAIError(401)."""
        if self.keys is None or not guarded(path):
            return None
        name = self.keys.name_of(presented_key(authorization))
        if name is None:
            raise _unauthorized("Incorrect API key provided.", "invalid_api_key")
        return name

    async def limit(self, name: str | None) -> None:
        """Counts a request against its key's limits; raises OpenAIError(429) over them."""
        if self.limiter is not None and name is not None:
            refusal = await self.limiter.admit(name)
            if refusal is not None:
                raise refused(refusal, name)

    async def charge_tokens(self, name: str | None, tokens: int) -> None:
        if self.limiter is not None and name is not None:
            await self.limiter.charge_tokens(name, tokens)

    async def respond_or_admit(self, path: str, authorization: list[str]) -> tuple[str | None, JSONResponse | None]:
        """(the key's name, None) to go on, or (None, the refusal to send)."""
        try:
            return await self.admit(path, authorization), None
        except OpenAIError as error:
            return None, error_response(error)


# The guard of this process (a replica is one process): set by the deployment's constructor.
GUARD = ApiGuard()


def configure(args: Any) -> ApiGuard:
    global GUARD
    GUARD = ApiGuard.from_args(args)
    return GUARD


def authorization_headers(raw: list[tuple[bytes, bytes]]) -> list[str]:
    return [value.decode("latin-1") for name, value in raw if name.lower() == b"authorization"]


class GuardMiddleware:
    """ASGI middleware, the replica's front door: the key (401), then a place in the replica's
    own bounded queue for the routes that generate (429 `queue_full`, ray_serve_llm.admission),
    then the key's limits (429 `rate_limit_exceeded`); tells the routes the key's name.

    In that order, a request with no valid key is refused as such whatever the load, and a
    shed request costs no Redis round trip and is not counted against its key."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        forwarded = scope.get("extensions", {}).get(FORWARDED)
        try:
            if forwarded is not None:  # the router checked the key and counted the request
                name = forwarded.get(KEY_NAME_STATE)
            else:
                name = GUARD.identify(scope["path"], authorization_headers(scope["headers"]))
        except OpenAIError as error:
            await error_response(error)(scope, receive, send)
            return
        scope.setdefault("state", {})[KEY_NAME_STATE] = name
        if not admission.generates(scope["method"], scope["path"]):
            await self._limited(scope, receive, send, name, forwarded is None)
            return
        try:
            async with admission.ADMISSION.slot():
                await self._limited(scope, receive, send, name, forwarded is None)
        except admission.Full:
            await error_response(overloaded())(scope, receive, send)

    async def _limited(self, scope: dict[str, Any], receive: Any, send: Any, name: str | None, count: bool) -> None:
        if count:
            try:
                await GUARD.limit(name)
            except OpenAIError as error:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
