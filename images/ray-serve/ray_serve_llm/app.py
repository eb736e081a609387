"""The Ray Serve application: one deployment, `LLMServer`, with an OpenAI-compatible API.

    import_path: ray_serve_llm.app:build_app
    args: {model_id, engine, ...}          (see `ray_serve_llm.args.AppArgs`)

Routes (FastAPI ingress):
    POST /v1/chat/completions   OpenAI chat completions, plain or streamed (SSE, `data: [DONE]`)
    GET  /v1/models             the one served model
    GET  /v1/models/{id}        the same model by its id (the openai client's models.retrieve)
    GET  /infer?sentence=...    the 2024 blueprint's route: the answer as plain text
    GET  /healthz               cheap liveness of the replica and its engine

`/v1/*` and `/infer` need `Authorization: Bearer <key>` and are rate limited per key when the
args name a key file (`ray_serve_llm.guard`); /healthz stays open. Each replica generates at
most `max_ongoing_requests` answers at once, queues `max_queued_requests` more in order and
sheds the rest with 429 (`ray_serve_llm.admission`).

With `spot_replicas: true` the same deployment runs twice, as the on-demand floor
(`LLMServer`) and the spot replicas above it (`LLMServerSpot`), behind a router
(`ray_serve_llm.router`) that forwards each request to one of them (`LLMServer.forward`).

Every client mistake is a 4xx with OpenAI's error body; it is detected before generation
starts, so a stream never begins only to break. A body too large to fit the context is
refused with 413 before it is read, a prompt too long by its character count before it is
tokenized (`protocol.RequestLimits`). Anything else that fails is a JSON 500, never text.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures'
# annotations (e.g. `request: Request`) at runtime, through Serve's ingress wrapper.

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from ray import serve
from ray.serve.metrics import Counter, Gauge
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import admission, guard
from .args import AppArgs
from .draining import DRAINING_NODES, CloseConnectionsThroughDrainingNodes
from .engines import ChatTemplateError, Engine, Prompt, SamplingParams, load_engine
from .guard import KEY_NAME_STATE, GuardMiddleware
from .protocol import (
    SSE_DONE,
    OpenAIError,
    RequestLimits,
    chunk_body,
    completion_body,
    completion_id,
    now,
    parse_chat_request,
    parse_json_body,
    sse,
    usage,
)
from .router import Router, run_asgi

logger = logging.getLogger("ray.serve")

DEPLOYMENT_NAME = "LLMServer"
# With spot replicas: the deployment of the replicas above the on-demand floor.
SPOT_DEPLOYMENT_NAME = "LLMServerSpot"
# The /infer route's default answer length (the blueprint's), capped by max_tokens_limit.
INFER_DEFAULT_MAX_TOKENS = 256

# --- Health checks and shutdown, chosen for a Ray head restart --------------------------
# The Serve controller runs on the head. While the head restarts (GCS fault tolerance on
# Redis), the replicas on the workers keep serving through the workers' proxies; when the
# controller is back it health-checks every replica again. A replica busy with long
# generations must not be declared dead for answering slowly (replacing it reloads the
# model, and on Neuron without cached artifacts recompiles it for minutes), so the timeout
# is generous and the check itself is cheap (no generation).
HEALTH_CHECK_PERIOD_S = 10
HEALTH_CHECK_TIMEOUT_S = 60
# A replica being drained (scale-down, upgrade, node drain) stops getting new requests and
# gets this long to finish the streams it serves: a long answer at ~20 tokens/s on
# Inferentia2 takes about a minute. Kubernetes' terminationGracePeriodSeconds on the
# worker pods must be longer than this.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 60
GRACEFUL_SHUTDOWN_WAIT_LOOP_S = 2

api = FastAPI(
    title="Ray Serve LLM",
    description="OpenAI-compatible chat completions on Ray Serve",
    docs_url=None,
    redoc_url=None,
)
# Clients that reach us through a draining node's proxy are told to reconnect (draining.py).
api.add_middleware(CloseConnectionsThroughDrainingNodes, draining=DRAINING_NODES)
# Keys and rate limits (added last: it runs first, before any other work on a request).
api.add_middleware(GuardMiddleware)


@api.exception_handler(OpenAIError)
async def _openai_error(_: Request, error: OpenAIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    param = ".".join(str(part) for part in first["loc"] if part not in ("query", "body"))
    if first["type"] == "missing":
        message, code = f"Missing required parameter: '{param}'.", "missing_required_parameter"
    else:
        message, code = f"Invalid value for '{param}': {first['msg']}.", "invalid_value"
    return await _openai_error(_, OpenAIError(message, param=param or None, code=code))


@api.exception_handler(Exception)
async def _server_error(_: Request, error: Exception) -> JSONResponse:
    # A bug, not a client mistake: Starlette still logs the traceback; the client gets
    # OpenAI's shape instead of a plain-text "Internal Server Error".
    failure = OpenAIError(
        "The server had an error while processing your request.", status_code=500, type="server_error"
    )
    return await _openai_error(_, failure)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    kind = "invalid_request_error" if error.status_code < 500 else "server_error"
    return await _openai_error(_, OpenAIError(str(error.detail), status_code=error.status_code, type=kind))


class ModelServer:
    """Serves one model with the engine the args choose: the routes below, on `api`."""

    async def __init__(self, args: dict[str, Any]) -> None:
        self.args = AppArgs.parse(args)
        self.model_name = self.args.model_name
        DRAINING_NODES.start()
        self.guard = guard.configure(self.args)
        gate = admission.configure(
            self.args.max_ongoing_requests, self.args.max_queued_requests, self.args.max_queue_wait_s
        )
        self.queue_metric = asyncio.create_task(admission.publish_waiting(gate, Gauge))
        self.created = now()
        # Loading blocks for seconds (CPU) to minutes (Neuron compile): off the event loop.
        self.engine: Engine = await asyncio.to_thread(load_engine, self.args)
        # Prompt plus completion, in tokens: what the args ask for, within what the model takes.
        self.max_model_len = min(self.args.max_model_len, self.engine.max_context or self.args.max_model_len)
        self.limits = RequestLimits(self.max_model_len, self.engine.max_chars_per_token)
        # Exported as ray_serve_llm_generated_tokens_total (Serve adds deployment, replica and
        # application labels): tokens per second on the dashboards, whatever the engine.
        self.generated_tokens = Counter("serve_llm_generated_tokens", description="Tokens the model generated.")
        logger.info(
            "LLMServer ready: model %r served as %r by engine %r; bodies up to %d bytes, prompts up to %d characters",
            self.args.model_id,
            self.model_name,
            self.args.engine,
            self.limits.max_body_bytes,
            self.limits.max_prompt_chars,
        )

    # --- Serve hooks -------------------------------------------------------------------

    async def check_health(self) -> None:
        """Called by the Serve controller every HEALTH_CHECK_PERIOD_S; raising marks the
        replica unhealthy and Serve replaces it."""
        await self.engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()

    async def forward(self, message: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A request the router forwards (spot_replicas), through this replica's own routes:
        the response's ASGI messages, streamed as they are written."""
        # The routes resolve `self` to this replica's instance (Serve's class-based view).
        async for sent in run_asgi(api, message):
            yield sent

    # --- Routes ------------------------------------------------------------------------

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        try:
            await self.engine.check_health()
        except Exception as error:
            raise OpenAIError(f"engine unhealthy: {error}", status_code=503, type="server_error") from None
        return JSONResponse({"status": "ok", "model": self.model_name, "engine": self.args.engine})

    @api.get("/v1/models")
    async def models(self) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    # `:path`: a model id may hold a slash (mistralai/Mistral-7B-Instruct-v0.2), which the
    # openai client sends as %2F.
    @api.get("/v1/models/{model_id:path}")
    async def model(self, model_id: str) -> JSONResponse:
        if model_id != self.model_name:
            raise self._no_such_model(model_id, param=None)
        return JSONResponse(self._model_card())

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        body = parse_json_body(await self._read_body(request))
        chat = parse_chat_request(body, max_tokens_limit=self.args.max_tokens_limit)
        if chat.model is not None and chat.model != self.model_name:
            raise self._no_such_model(chat.model, param="model")
        prompt = self._render([message.as_template_message() for message in chat.messages])
        params = SamplingParams(
            max_tokens=self._max_tokens(prompt, chat.requested_max_tokens),
            temperature=1.0 if chat.temperature is None else chat.temperature,
            top_p=1.0 if chat.top_p is None else chat.top_p,
            seed=chat.seed,
        )
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        key_name = getattr(request.state, KEY_NAME_STATE, None)
        if chat.stream:
            return StreamingResponse(
                self._stream(prompt, params, include_usage=include_usage, key_name=key_name),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        text, finish_reason, completion_tokens = await self._complete(prompt, params)
        await self.guard.charge_tokens(key_name, prompt.num_tokens + completion_tokens)
        return JSONResponse(
            completion_body(
                chat_id=completion_id(),
                model=self.model_name,
                created=now(),
                text=text,
                finish_reason=finish_reason,
                prompt_tokens=prompt.num_tokens,
                completion_tokens=completion_tokens,
            )
        )

    @api.get("/infer", response_class=PlainTextResponse)
    async def infer(self, request: Request, sentence: str, max_tokens: int | None = None) -> PlainTextResponse:
        if not sentence.strip():
            raise OpenAIError("'sentence' must not be empty.", param="sentence", code="invalid_value")
        if max_tokens is not None and not 1 <= max_tokens <= self.args.max_tokens_limit:
            raise OpenAIError(
                f"Invalid 'max_tokens': {max_tokens}. It must be between 1 and {self.args.max_tokens_limit}.",
                param="max_tokens",
                code="invalid_value",
            )
        prompt = self._render([{"role": "user", "content": sentence}], param="sentence")
        wanted = max_tokens or min(INFER_DEFAULT_MAX_TOKENS, self.args.max_tokens_limit)
        text, _, tokens = await self._complete(prompt, SamplingParams(max_tokens=self._max_tokens(prompt, wanted)))
        await self.guard.charge_tokens(getattr(request.state, KEY_NAME_STATE, None), prompt.num_tokens + tokens)
        return PlainTextResponse(text)

    # --- Helpers -----------------------------------------------------------------------

    def _model_card(self) -> dict[str, Any]:
        return {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "ray-serve-llm",
            "root": self.args.model_id,
            "max_model_len": self.max_model_len,
        }

    def _no_such_model(self, model: str, *, param: str | None) -> OpenAIError:
        return OpenAIError(
            f"The model '{model}' does not exist. This server serves '{self.model_name}'.",
            status_code=404,
            param=param,
            code="model_not_found",
        )

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused with 413 once it is larger than any that fits the context: by
        its Content-Length before a byte is read, or (chunked) as soon as it grows past."""
        limit = self.limits.max_body_bytes
        # (The HTTP server in front has already refused a malformed Content-Length.)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self.limits.body_too_large(int(declared))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise self.limits.body_too_large(None)
            chunks.append(chunk)
        return b"".join(chunks)

    def _render(self, messages: list[dict[str, str]], *, param: str = "messages") -> Prompt:
        """The prompt; `param` names the request's text in errors."""
        self.limits.check_prompt_chars(sum(len(message["content"]) for message in messages), param=param)
        try:
            prompt = self.engine.render(messages)
        except ChatTemplateError as error:
            raise OpenAIError(f"Invalid '{param}': {error}", param=param, code="invalid_value") from None
        if prompt.num_tokens >= self.max_model_len:
            raise OpenAIError(
                f"This model's maximum context length is {self.max_model_len} tokens; "
                f"the prompt from '{param}' takes {prompt.num_tokens}.",
                param=param,
                code="context_length_exceeded",
            )
        return prompt

    def _max_tokens(self, prompt: Prompt, requested: int | None) -> int:
        room = self.max_model_len - prompt.num_tokens
        if requested is None:
            return min(self.args.max_tokens_limit, room)
        if requested > room:
            raise OpenAIError(
                f"This model's maximum context length is {self.max_model_len} tokens; the messages "
                f"take {prompt.num_tokens} and max_tokens asks for {requested} more.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return requested

    async def _complete(self, prompt: Prompt, params: SamplingParams) -> tuple[str, str, int]:
        pieces: list[str] = []
        finish_reason, completion_tokens = "stop", 0
        async for chunk in self.engine.generate(prompt, params):
            pieces.append(chunk.text)
            completion_tokens = chunk.completion_tokens or completion_tokens
            finish_reason = chunk.finish_reason or finish_reason
        self._count(completion_tokens)
        return "".join(pieces), finish_reason, completion_tokens

    def _count(self, tokens: int) -> None:
        if tokens > 0:
            self.generated_tokens.inc(tokens)

    async def _stream(
        self, prompt: Prompt, params: SamplingParams, *, include_usage: bool, key_name: str | None
    ) -> AsyncIterator[str]:
        meta = {"chat_id": completion_id(), "model": self.model_name, "created": now()}
        yield sse(chunk_body(**meta, delta={"role": "assistant", "content": ""}))
        finish_reason, completion_tokens = "stop", 0
        try:
            async for chunk in self.engine.generate(prompt, params):
                if chunk.text:
                    yield sse(chunk_body(**meta, delta={"content": chunk.text}))
                completion_tokens = chunk.completion_tokens or completion_tokens
                finish_reason = chunk.finish_reason or finish_reason
        except Exception:
            logger.exception("generation failed mid-stream")
            failure = OpenAIError("generation failed; please retry", status_code=500, type="server_error")
            yield sse(failure.body())
            yield SSE_DONE
            return
        self._count(completion_tokens)
        yield sse(chunk_body(**meta, delta={}, finish_reason=finish_reason))
        await self.guard.charge_tokens(key_name, prompt.num_tokens + completion_tokens)
        if include_usage:
            yield sse(
                {**chunk_body(**meta, delta={}), "choices": [], "usage": usage(prompt.num_tokens, completion_tokens)}
            )
        yield SSE_DONE


_DEPLOYMENT_OPTIONS: dict[str, Any] = {
    # What the args' default bounds need (the serve config sets its own for its bounds).
    "max_ongoing_requests": admission.serve_max_ongoing_requests(
        admission.DEFAULT_MAX_ONGOING_REQUESTS, admission.DEFAULT_MAX_QUEUED_REQUESTS
    ),
    "health_check_period_s": HEALTH_CHECK_PERIOD_S,
    "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
    "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_TIMEOUT_S,
    "graceful_shutdown_wait_loop_s": GRACEFUL_SHUTDOWN_WAIT_LOOP_S,
}
# The application's ingress: Serve's proxies hand it every HTTP request.
LLMServer = serve.deployment(name=DEPLOYMENT_NAME, **_DEPLOYMENT_OPTIONS)(serve.ingress(api)(ModelServer))
# With spot replicas, the same model behind the router: a plain deployment (an application
# holds one FastAPI deployment at most), whose `forward` runs the routes above.
ModelReplicas = serve.deployment(name=DEPLOYMENT_NAME, **_DEPLOYMENT_OPTIONS)(ModelServer)


def build_app(args: dict[str, Any]) -> serve.Application:
    """The application builder named by the serve config's `import_path`. Validates the
    args here, on the driver, so a bad config fails `serve deploy` with every problem
    named, instead of failing in each replica."""
    app_args = AppArgs.parse(args)
    if not app_args.spot_replicas:
        return LLMServer.bind(app_args.model_dump())
    floor = ModelReplicas.options(name=DEPLOYMENT_NAME).bind(app_args.model_dump())
    spot = ModelReplicas.options(name=SPOT_DEPLOYMENT_NAME).bind(app_args.model_dump())
    return Router.bind(floor, spot, DEPLOYMENT_NAME, SPOT_DEPLOYMENT_NAME, app_args.model_dump())
