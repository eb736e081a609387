"""The arguments of the Serve application (`args:` of the serve config), typed and validated.

`build_app` validates them on the driver (so `serve deploy` / KubeRay report a bad config
at once, with every problem named) and each replica validates them again before it loads
the model. The Hugging Face token never travels in the args: only the *name* of the
environment variable that holds it does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .admission import DEFAULT_MAX_ONGOING_REQUESTS, DEFAULT_MAX_QUEUED_REQUESTS

Engine = Literal["neuron", "vllm", "transformers"]
ENGINES: tuple[str, ...] = get_args(Engine)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What a Hugging Face access token looks like; such a value is never echoed in an error.
_LOOKS_LIKE_TOKEN = re.compile(r"hf_[A-Za-z0-9]{16,}")
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")

# Arguments an earlier draft of the serve config used, and what they are called now.
_RENAMED = {"max_tokens": "max_tokens_limit", "hf_token": "hf_token_env"}


class ArgsError(ValueError):
    """Invalid application args. The message names every bad key, its value and what is
    allowed; it never contains a token."""


class AppArgs(BaseModel):
    """What `ray_serve_llm.app:build_app` accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    model_id: str = Field(min_length=1, description="Hugging Face model id, or a local model folder.")
    served_model_name: str | None = Field(
        default=None, min_length=1, description="The OpenAI `model` name clients send (default: model_id)."
    )
    engine: Engine = Field(description="neuron (Inferentia2/Trainium), vllm (NVIDIA GPU) or transformers (CPU).")
    tensor_parallel_degree: int = Field(default=1, ge=1, le=128)
    max_model_len: int = Field(default=4096, ge=16, description="Prompt plus completion, in tokens.")
    max_tokens_limit: int = Field(default=1024, ge=1, description="Upper bound of a request's max_tokens.")
    neuron_compiled_artifacts: str | None = Field(
        default=None,
        description="S3 URI or absolute path where NxD Inference compiled artifacts are cached and reused.",
    )
    hf_token_env: str = Field(default="HF_TOKEN", description="Name of the env var that holds the HF token.")
    api_keys_file: str | None = Field(
        default=None,
        description="Absolute path of the JSON file of API keys, {name: key}; None: the API is open.",
    )
    api_rate_limit_per_minute: int | None = Field(
        default=None, ge=1, description="Requests per key and minute, across all replicas; None: no limit."
    )
    api_token_limit_per_minute: int | None = Field(
        default=None, ge=1, description="Prompt plus completion tokens per key and minute; None: no limit."
    )
    max_ongoing_requests: int = Field(
        default=DEFAULT_MAX_ONGOING_REQUESTS, ge=1,
        description="Answers one replica generates at once (the engine batches them).",
    )
    max_queued_requests: int = Field(
        default=DEFAULT_MAX_QUEUED_REQUESTS, ge=0,
        description="Requests one replica holds, in order, waiting for one of those; more get 429.",
    )
    max_queue_wait_s: float | None = Field(
        default=None, ge=0,
        description="The longest a request waits in that queue before it gets 429 after all; None: no bound.",
    )
    spot_replicas: bool = Field(
        default=False,
        description="True: a router in front of two deployments of the model, the on-demand floor "
        "(LLMServer) and the spot replicas above it (LLMServerSpot).",
    )

    @property
    def model_name(self) -> str:
        """The name clients use in `model`."""
        return self.served_model_name or self.model_id

    @field_validator("hf_token_env")
    @classmethod
    def _env_var_name(cls, value: str) -> str:
        if _LOOKS_LIKE_TOKEN.search(value):
            raise ValueError(
                "looks like a token, not the name of an environment variable (value not shown); "
                "put the token in a Secret and name its variable here, e.g. HF_TOKEN"
            )
        if not _ENV_NAME.match(value):
            raise ValueError("must be the name of an environment variable (letters, digits, underscore), e.g. HF_TOKEN")
        return value

    @field_validator("neuron_compiled_artifacts")
    @classmethod
    def _artifacts_location(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("s3://"):
            match = _S3_URI.match(value)
            if not match or not (match.group("prefix") or "").strip("/"):
                raise ValueError("must be s3://BUCKET/PREFIX (with a prefix) or an absolute path")
            return value.rstrip("/")
        if not value.startswith("/"):
            raise ValueError("must be s3://BUCKET/PREFIX or an absolute path")
        return value.rstrip("/") or "/"

    @model_validator(mode="after")
    def _consistent(self) -> AppArgs:
        if self.max_tokens_limit >= self.max_model_len:
            raise ValueError(
                f"max_tokens_limit={self.max_tokens_limit} must be below max_model_len={self.max_model_len} "
                "(the prompt needs room too)"
            )
        if self.engine == "transformers" and self.tensor_parallel_degree != 1:
            raise ValueError(
                f"tensor_parallel_degree={self.tensor_parallel_degree}: the transformers engine runs on one "
                "CPU process; only 1 is allowed"
            )
        if self.api_keys_file is not None and not self.api_keys_file.startswith("/"):
            raise ValueError(f"api_keys_file={self.api_keys_file!r} must be an absolute path")
        limited = self.api_rate_limit_per_minute is not None or self.api_token_limit_per_minute is not None
        if limited and self.api_keys_file is None:
            raise ValueError(
                "api_rate_limit_per_minute and api_token_limit_per_minute count per key: set api_keys_file"
            )
        if self.neuron_compiled_artifacts is not None and self.engine != "neuron":
            raise ValueError(
                f"neuron_compiled_artifacts is only used by engine 'neuron' (engine is {self.engine!r}); remove it"
            )
        return self

    @classmethod
    def parse(cls, args: Mapping[str, Any] | AppArgs | None) -> AppArgs:
        """Validates the args of a serve config; raises `ArgsError` listing every problem."""
        if isinstance(args, AppArgs):
            return args
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            raise ArgsError(f"application args must be a mapping, got {type(args).__name__}")
        problems = [
            f"unknown argument {key!r}: did you mean {new!r}?" for key, new in _RENAMED.items() if key in args
        ]
        try:
            parsed = cls.model_validate({k: v for k, v in args.items() if k not in _RENAMED})
        except ValidationError as error:
            problems.extend(_describe(error, args))
        if problems:
            allowed = ", ".join(cls.model_fields)
            raise ArgsError(
                "invalid args for ray_serve_llm.app:build_app:\n  - "
                + "\n  - ".join(problems)
                + f"\n(allowed arguments: {allowed})"
            )
        return parsed


def _shown(value: Any) -> str:
    if isinstance(value, str) and _LOOKS_LIKE_TOKEN.search(value):
        return "<value not shown: it looks like a token>"
    return repr(value)


def _describe(error: ValidationError, args: Mapping[str, Any]) -> list[str]:
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        loc = [str(part) for part in item["loc"]]
        message = item["msg"].removeprefix("Value error, ")
        if not loc:  # a model-level check: its message already names the keys and values
            problems.append(message)
            continue
        key = loc[0]
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown argument {key!r}")
        elif item["type"] == "missing":
            problems.append(f"{key}: required")
        elif item["type"] == "literal_error" and key == "engine":
            problems.append(f"engine={_shown(args.get(key))}: must be one of {', '.join(ENGINES)}")
        elif key == "hf_token_env":
            problems.append(f"hf_token_env: {message}")
        else:
            problems.append(f"{key}={_shown(args.get(key))}: {message}")
    return problems
