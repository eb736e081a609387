"""The Ray Serve config of the LLM application: one source of truth for the RayService
(`serveConfigV2`) and for the local stack, which deploys the same dict with `serve deploy`.

Nothing here knows about Kubernetes: it describes the Serve application, its replicas and
the Ray resources each replica needs. Only the standard library and PyYAML (a dependency of
Ray itself) are imported, so the local runner can use it without cdk8s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import yaml

from ray_serve_ha.charts.accelerators import RayDevice

# The engines of images/ray-serve (ray_serve_llm/args.py); each accelerator of
# ray_serve_ha/charts/accelerators.py names the one it runs, and CPU-only workers run CPU_ENGINE.
Engine = Literal["neuron", "vllm", "transformers"]
ENGINES: tuple[str, ...] = get_args(Engine)
CPU_ENGINE: Engine = "transformers"

# The contract with the application image (images/ray-serve): its builder, the application
# and deployment names it defines. Serve rejects a config whose deployment names do not
# exist in the application.
APP_IMPORT_PATH = "ray_serve_llm.app:build_app"
APP_NAME = "llm"
DEPLOYMENT_NAME = "LLMServer"
ROUTE_PREFIX = "/"
# With spot replicas above an on-demand floor (`LlmServing.on_demand_replicas`): the model's
# second deployment, on spot workers, and the router in front of both (the application's
# ingress, images/ray-serve/ray_serve_llm/router.py).
SPOT_DEPLOYMENT_NAME = "LLMServerSpot"
ROUTER_DEPLOYMENT_NAME = "Router"
# The Ray resource a worker advertises for its node's capacity type, one unit per worker: the
# floor's replicas require the on-demand one and the others the spot one, so Ray can place a
# floor replica on an on-demand worker only, whatever Serve's scheduler and autoscaler do.
CAPACITY_RESOURCES = {"on-demand": "on_demand_node", "spot": "spot_node"}
# A router replica holds no model: a fraction of a CPU on any worker (never the head, which
# offers no CPUs), two of them on two nodes.
ROUTER_CPUS = 0.25

# Engines that compile the model for the accelerator and can reuse the result
# (`neuron_compiled_artifacts` of images/ray-serve/ray_serve_llm/args.py).
COMPILED_ARTIFACT_ENGINES: tuple[str, ...] = ("neuron",)

# Fewer than two replicas means the one replica's node is a single point of failure.
MIN_REPLICAS = 2

# Health checks come from the Serve controller, which runs on the head. After a head
# restart the recovered controller checks every replica again; a replica busy with long
# generations must not be declared dead for a slow answer, because replacing it reloads
# (on Neuron: recompiles) the model for minutes.
HEALTH_CHECK_PERIOD_S = 10
HEALTH_CHECK_TIMEOUT_S = 60
# A replica that is drained (scale-down, cluster upgrade) gets this long to finish the
# streams it serves: a long completion at Inferentia2's ~20 tokens/s takes about a minute.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 60
GRACEFUL_SHUTDOWN_WAIT_LOOP_S = 2
# The slowest single stream here, tokens/s: Llama-3.1-8B on one Inferentia2 chip at tensor
# parallel 2 (published; the field notes' anchor). The longest stream, LlmServing.max_tokens at
# this rate, must finish within GRACEFUL_SHUTDOWN_TIMEOUT_S (tests/test_spot_replicas.py).
SLOWEST_STREAM_TOKENS_PER_S = 18

# --- The API's guard (images/ray-serve/ray_serve_llm/guard.py) ------------------------------
# The environment the app's rate limiter reads its Redis from (the GCS store).
API_LIMITS_REDIS_ADDRESS_ENV = "API_LIMITS_REDIS_ADDRESS"
API_LIMITS_REDIS_PASSWORD_ENV = "API_LIMITS_REDIS_PASSWORD"
# Requests one key may make per minute, across every replica and proxy (counted in the GCS
# Redis): far above what one person or the project's own clients send (the drill's loop,
# sequential, makes about 20 a second on the tiny model), low enough to stop one runaway
# client from taking every replica.
DEFAULT_API_RATE_LIMIT_PER_MINUTE = 6000
# Requests one model replica holds, in order, waiting for one of its max_ongoing_requests
# slots; more are refused at once with 429 and Retry-After instead of waiting without bound
# (images/ray-serve/ray_serve_llm/admission.py, whose defaults are these).
DEFAULT_MAX_ONGOING_REQUESTS = 16
DEFAULT_MAX_QUEUED_REQUESTS = 16
# Requests beyond a replica's slots and queue that Serve may hand it at once, to refuse in
# milliseconds (admission.py SHED_HEADROOM, the same): Serve's max_ongoing_requests is the
# three together, so that its router hands requests to the replica instead of queueing them
# itself, where they wait without order between proxies (docs/measurements.md).
SHED_HEADROOM = 4
SHED_STATUS_CODE = 429
# The Retry-After of a shed request: about one short answer's time (the app's own 429s,
# images/ray-serve/ray_serve_llm/guard.py SHED_RETRY_AFTER_S, say the same).
SHED_RETRY_AFTER_S = 1


@dataclass(frozen=True)
class LlmServing:
    """What is served, by which engine, and how many replicas."""

    model_id: str
    engine: Engine
    # The OpenAI `model` name clients send; None: the model id.
    served_model_name: str | None = None
    # How Ray counts the accelerator the replicas run on (ray_serve_ha/charts/accelerators.py); None:
    # CPU replicas (CPU_ENGINE), which ask for `cpus_per_replica` CPUs.
    ray_device: RayDevice | None = None
    # Devices' Ray units (NeuronCores, GPUs) one replica shards the model over.
    tensor_parallel_degree: int = 1
    # Most tokens a request may generate (and what it gets when it asks for no limit).
    max_tokens: int = 1024
    # Prompt plus completion, tokens (the models table's); None: the application's default.
    max_model_len: int | None = None
    min_replicas: int = MIN_REPLICAS
    max_replicas: int = MIN_REPLICAS
    # Answers one replica generates at once: the engine batches them continuously.
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS
    # CPUs one replica of the `transformers` engine computes on.
    cpus_per_replica: int = 1
    # Where compiled artifacts are cached (s3://bucket/prefix or an absolute path): the
    # engine adds a folder per model, SDK, tensor parallel degree and sequence settings.
    compiled_artifacts: str | None = None
    # None: one deployment whose replicas run on any worker. A number: that many replicas
    # (the floor) on on-demand workers, the others (min_replicas - floor up to max_replicas -
    # floor) on spot workers, behind a router.
    on_demand_replicas: int | None = None
    # The JSON file of API keys ({name: key}) in the replicas' pods; None: the API is open.
    api_keys_file: str | None = None
    # Per key and minute, across replicas; None: no limit. Only with api_keys_file.
    api_rate_limit_per_minute: int | None = DEFAULT_API_RATE_LIMIT_PER_MINUTE
    api_token_limit_per_minute: int | None = None
    # Requests one replica holds waiting for one of its max_ongoing_requests slots; 0: none.
    max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r} is not one of: {', '.join(ENGINES)}")
        if (self.engine == CPU_ENGINE) != (self.ray_device is None):
            raise ValueError(
                f"engine {self.engine!r} with ray_device={self.ray_device}: the {CPU_ENGINE} engine runs on "
                "CPUs (no ray_device); the accelerator engines need the accelerator's ray_device"
            )
        if self.min_replicas < MIN_REPLICAS:
            raise ValueError(
                f"min_replicas={self.min_replicas}: at least {MIN_REPLICAS} Serve replicas are "
                "needed, one per worker node, so that losing a node (or the head) never stops serving"
            )
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas={self.max_replicas} is below min_replicas={self.min_replicas}")
        if self.compiled_artifacts is not None and self.engine not in COMPILED_ARTIFACT_ENGINES:
            raise ValueError(
                f"compiled_artifacts is only used by engine {', '.join(COMPILED_ARTIFACT_ENGINES)} "
                f"(engine is {self.engine!r})"
            )
        if self.on_demand_replicas is not None and not 1 <= self.on_demand_replicas < self.min_replicas:
            raise ValueError(
                f"on_demand_replicas={self.on_demand_replicas}: the on-demand floor must be from 1 to "
                f"min_replicas - 1 ({self.min_replicas - 1}): at least one replica runs on spot, or the spot "
                "deployment would never get the traffic that scales it up"
            )
        if self.max_model_len is not None and self.max_tokens >= self.max_model_len:
            raise ValueError(
                f"max_tokens={self.max_tokens} must be below max_model_len={self.max_model_len}: the prompt "
                "needs room in the context too"
            )
        for field in (
            "tensor_parallel_degree", "max_tokens", "max_ongoing_requests", "cpus_per_replica",
            "api_rate_limit_per_minute", "api_token_limit_per_minute",
        ):
            if getattr(self, field) is not None and getattr(self, field) < 1:
                raise ValueError(f"{field}={getattr(self, field)} must be at least 1")
        if self.max_queued_requests < 0:
            raise ValueError(f"max_queued_requests={self.max_queued_requests} must be 0 or more")

    @property
    def max_queue_wait_s(self) -> float:
        """The longest a request waits in a replica's queue: what the graceful shutdown leaves
        after the longest answer at the slowest rate, so that a replica drained with requests
        queued still ends every answer it took (0 when nothing is left: no waiting)."""
        longest_answer_s = self.max_tokens / SLOWEST_STREAM_TOKENS_PER_S
        return max(0.0, math.floor(10 * (GRACEFUL_SHUTDOWN_TIMEOUT_S - longest_answer_s)) / 10)

    @property
    def serve_max_ongoing_requests(self) -> int:
        """Serve's max_ongoing_requests of a model replica: its slots, its queue and the
        requests it is refusing (SHED_HEADROOM)."""
        return self.max_ongoing_requests + self.max_queued_requests + SHED_HEADROOM


# The tiny model (random weights, ~135k parameters, images/ray-serve/ray_serve_llm/tiny_model.py)
# that the kind profile and the local stack serve: no download, no token.
TINY_MODEL_ID = "tiny-mistral"
# Its context is short; a longer answer only repeats random tokens.
TINY_MODEL_MAX_TOKENS = 64


def tiny_model_serving(model_path: str) -> LlmServing:
    """How the tiny model is served (CPU engine), wherever its folder is."""
    return LlmServing(
        model_id=model_path, served_model_name=TINY_MODEL_ID, engine="transformers", max_tokens=TINY_MODEL_MAX_TOKENS
    )


def replica_actor_options(serving: LlmServing, capacity_type: str | None = None) -> dict[str, Any]:
    """The Ray resources of one replica: what makes Ray place it on an accelerator node (and,
    with `capacity_type`, only on a worker of that capacity type)."""
    if serving.ray_device is None:
        options: dict[str, Any] = {"num_cpus": serving.cpus_per_replica}
    else:
        options = serving.ray_device.actor_options(serving.tensor_parallel_degree)
    if capacity_type is not None:
        options["resources"] = {**options.get("resources", {}), CAPACITY_RESOURCES[capacity_type]: 1}
    return options


def serve_config(serving: LlmServing) -> dict[str, Any]:
    """The Serve config (the schema of `serve deploy` and KubeRay's `serveConfigV2`)."""
    return {
        # A proxy on every node: requests keep flowing through the workers' proxies while
        # the head (and the proxy on it) restarts.
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": ROUTE_PREFIX,
                "import_path": APP_IMPORT_PATH,
                "args": _app_args(serving),
                "deployments": _deployments(serving),
            }
        ],
    }


def _shedding(serving: LlmServing) -> dict[str, Any]:
    """Serve's own bounded queue in each caller, behind the replicas' (app args), and a 429 with
    Retry-After (not Serve's default 503) when it is full: the backstop of a flood faster than
    the replicas' refusals (Serve's smallest queue is 1)."""
    return {
        "max_queued_requests": max(1, serving.max_queued_requests),
        "backpressure_config": {"status_code": SHED_STATUS_CODE, "retry_after_s": SHED_RETRY_AFTER_S},
    }


def _model_deployment(
    serving: LlmServing, name: str, replicas: dict[str, Any], capacity_type: str | None
) -> dict[str, Any]:
    return {
        "name": name,
        **replicas,
        "max_ongoing_requests": serving.serve_max_ongoing_requests,
        **_shedding(serving),
        # One replica per node: a node failure takes out one replica, never two.
        "max_replicas_per_node": 1,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
        "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_TIMEOUT_S,
        "graceful_shutdown_wait_loop_s": GRACEFUL_SHUTDOWN_WAIT_LOOP_S,
        "ray_actor_options": replica_actor_options(serving, capacity_type),
    }


def _autoscaling(serving: LlmServing, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return {
        "autoscaling_config": {
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            # Add a replica when they run half full: continuous batching keeps
            # latency flat up to there, and a new replica takes minutes to load.
            "target_ongoing_requests": max(1, serving.max_ongoing_requests // 2),
        }
    }


def _deployments(serving: LlmServing) -> list[dict[str, Any]]:
    floor = serving.on_demand_replicas
    if floor is None:
        return [_model_deployment(
            serving, DEPLOYMENT_NAME, _autoscaling(serving, serving.min_replicas, serving.max_replicas), None
        )]
    return [
        {
            "name": ROUTER_DEPLOYMENT_NAME,
            "num_replicas": MIN_REPLICAS,
            # A router holds each request for as long as its answer streams: one router alone
            # (the other's node lost) must take what every model replica can (Serve's default
            # is 5).
            "max_ongoing_requests": serving.max_replicas * serving.serve_max_ongoing_requests,
            **_shedding(serving),
            # Two routers on two nodes: a node's loss leaves one.
            "max_replicas_per_node": 1,
            # A draining router's streams finish, as the model replicas' do.
            "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_TIMEOUT_S,
            "graceful_shutdown_wait_loop_s": GRACEFUL_SHUTDOWN_WAIT_LOOP_S,
            "ray_actor_options": {"num_cpus": ROUTER_CPUS},
        },
        # The floor does not scale: it is what a spot interruption can never take.
        _model_deployment(serving, DEPLOYMENT_NAME, {"num_replicas": floor}, "on-demand"),
        _model_deployment(
            serving,
            SPOT_DEPLOYMENT_NAME,
            _autoscaling(serving, serving.min_replicas - floor, serving.max_replicas - floor),
            "spot",
        ),
    ]


def _app_args(serving: LlmServing) -> dict[str, Any]:
    """The `args` of ray_serve_llm.app:build_app (images/ray-serve/ray_serve_llm/args.py)."""
    args: dict[str, Any] = {
        "model_id": serving.model_id,
        "engine": serving.engine,
        "tensor_parallel_degree": serving.tensor_parallel_degree,
        "max_tokens_limit": serving.max_tokens,
        "max_ongoing_requests": serving.max_ongoing_requests,
        "max_queued_requests": serving.max_queued_requests,
        "max_queue_wait_s": serving.max_queue_wait_s,
    }
    if serving.max_model_len is not None:
        args["max_model_len"] = serving.max_model_len
    if serving.served_model_name:
        args["served_model_name"] = serving.served_model_name
    if serving.compiled_artifacts:
        args["neuron_compiled_artifacts"] = serving.compiled_artifacts
    if serving.on_demand_replicas is not None:
        args["spot_replicas"] = True
    if serving.api_keys_file is not None:
        args["api_keys_file"] = serving.api_keys_file
        for name in ("api_rate_limit_per_minute", "api_token_limit_per_minute"):
            if getattr(serving, name) is not None:
                args[name] = getattr(serving, name)
    return args


def serve_config_yaml(serving: LlmServing) -> str:
    return yaml.safe_dump(serve_config(serving), sort_keys=False)
