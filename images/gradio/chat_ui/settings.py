"""The UI's settings, read from the environment in one place and validated.

| variable                | default                     | meaning                                         |
| ----------------------- | --------------------------- | ----------------------------------------------- |
| OPENAI_BASE_URL         | http://localhost:8000/v1    | the Serve app's OpenAI-compatible API           |
| MODEL_NAME              | (asked from /v1/models)     | the `model` sent with each request              |
| OPENAI_API_KEY          | (none: the API is open)     | sent as a bearer token if the API wants one     |
| GRADIO_SERVER_NAME      | 0.0.0.0                     | bind address (0.0.0.0 in a container)           |
| GRADIO_SERVER_PORT      | 7860                        | bind port                                       |
| CHAT_MAX_TOKENS         | (the server's limit)        | max_tokens of each answer, if set               |
| CHAT_TEMPERATURE        | 0.7                         | sampling temperature                            |
| REQUEST_TIMEOUT_S       | 120                         | read timeout of one request                     |
| RETRY_ATTEMPTS          | 6                           | tries of one message before giving up           |
| RETRY_INITIAL_DELAY_S   | 1                           | wait before the 2nd try; doubles each time ...  |
| RETRY_MAX_DELAY_S       | 8                           | ... up to this                                  |
| UI_TITLE                | <served model> on Ray Serve | page title                                      |
| UI_DEVICE               | (none)                      | what serves the model, added to the title       |

Unset, CHAT_MAX_TOKENS sends no `max_tokens`: the Serve app then answers up to its own
limit (the serve config's `max_tokens`), so the UI can never ask for more than is served.

With the defaults a message is retried for about 23 s (1+2+4+8+8): longer than a Serve
replica's or a proxy's restart, short enough that a real outage is reported promptly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlparse


class SettingsError(ValueError):
    """A bad environment variable: the message names it, its value and what is allowed."""


@dataclass(frozen=True)
class Settings:
    openai_base_url: str = "http://localhost:8000/v1"
    model_name: str | None = None
    openai_api_key: str | None = None
    server_name: str = "0.0.0.0"
    server_port: int = 7860
    max_tokens: int | None = None
    temperature: float = 0.7
    request_timeout_s: float = 120.0
    retry_attempts: int = 6
    retry_initial_delay_s: float = 1.0
    retry_max_delay_s: float = 8.0
    title: str | None = None
    # The accelerator's word for its device (ray_serve_ha/charts/accelerators.py: "Inferentia2", "GPU").
    device: str | None = None

    def __post_init__(self) -> None:
        url = urlparse(self.openai_base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise SettingsError(f"OPENAI_BASE_URL={self.openai_base_url!r}: must be an http(s) URL, e.g. http://host:8000/v1")
        checks = [
            ("GRADIO_SERVER_PORT", self.server_port, 1 <= self.server_port <= 65535, "1-65535"),
            ("CHAT_MAX_TOKENS", self.max_tokens, self.max_tokens is None or self.max_tokens >= 1, "at least 1"),
            ("CHAT_TEMPERATURE", self.temperature, 0 <= self.temperature <= 2, "0-2"),
            ("REQUEST_TIMEOUT_S", self.request_timeout_s, self.request_timeout_s > 0, "above 0"),
            ("RETRY_ATTEMPTS", self.retry_attempts, 1 <= self.retry_attempts <= 100, "1-100"),
            ("RETRY_INITIAL_DELAY_S", self.retry_initial_delay_s, self.retry_initial_delay_s >= 0, "0 or more"),
            ("RETRY_MAX_DELAY_S", self.retry_max_delay_s, self.retry_max_delay_s >= self.retry_initial_delay_s,
             "at least RETRY_INITIAL_DELAY_S"),
        ]
        for name, value, ok, allowed in checks:
            if not ok:
                raise SettingsError(f"{name}={value!r}: must be {allowed}")

    def retry_delay_s(self, attempt: int) -> float:
        """The wait after failed try number `attempt` (1-based): exponential, capped."""
        return min(self.retry_initial_delay_s * 2 ** (attempt - 1), self.retry_max_delay_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        names = {
            "openai_base_url": "OPENAI_BASE_URL",
            "model_name": "MODEL_NAME",
            "openai_api_key": "OPENAI_API_KEY",
            "server_name": "GRADIO_SERVER_NAME",
            "server_port": "GRADIO_SERVER_PORT",
            "max_tokens": "CHAT_MAX_TOKENS",
            "temperature": "CHAT_TEMPERATURE",
            "request_timeout_s": "REQUEST_TIMEOUT_S",
            "retry_attempts": "RETRY_ATTEMPTS",
            "retry_initial_delay_s": "RETRY_INITIAL_DELAY_S",
            "retry_max_delay_s": "RETRY_MAX_DELAY_S",
            "title": "UI_TITLE",
            "device": "UI_DEVICE",
        }
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for field, env in names.items():
            raw = environ.get(env, "").strip()
            if not raw:
                continue
            kind = types[field]
            try:
                values[field] = int(raw) if kind.startswith("int") else float(raw) if kind == "float" else raw
            except ValueError:
                # Never echo a key, whatever variable it was put in by mistake.
                shown = "<not shown>" if field == "openai_api_key" else repr(raw)
                raise SettingsError(f"{env}={shown}: must be a {kind.split(' ')[0]}") from None
        return cls(**values)  # type: ignore[arg-type]

    def __repr__(self) -> str:  # the API key stays out of logs
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        if shown["openai_api_key"]:
            shown["openai_api_key"] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"
