"""The UI's settings, read from the environment in one place and validated.

| variable                | default                     | meaning                                         |
| ----------------------- | --------------------------- | ----------------------------------------------- |
| OPENAI_BASE_URL         | http://localhost:8000/v1    | the Serve app's OpenAI-compatible API           |
| MODEL_NAME              | (asked from /v1/models)     | the `model` sent with each request              |
| OPENAI_API_KEY_FILE     | (none: the API is open)     | a file holding the key sent as a bearer token,  |
|                         |                             | read at each request (a rotated key is used at  |
|                         |                             | once: no restart)                               |
| OPENAI_API_KEY_NAME     | (none: the file is the key) | the key's name when the file is a JSON object   |
|                         |                             | {name: key} (the local stack's api-keys.json)   |
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

OPENAI_API_KEY is refused (and ignored beside OPENAI_API_KEY_FILE, as a shell may export it
for other clients): a key in the environment stays the same until the process restarts, so a
rotated key would break the chat. Put the key in a file (on Kubernetes, mount its Secret as a
volume) and name the file in OPENAI_API_KEY_FILE.

Unset, CHAT_MAX_TOKENS sends no `max_tokens`: the Serve app then answers up to its own
limit (the serve config's `max_tokens`), so the UI can never ask for more than is served.

With the defaults a message is retried for about 23 s (1+2+4+8+8): longer than a Serve
replica's or a proxy's restart, short enough that a real outage is reported promptly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from urllib.parse import urlparse

from .api_key import ApiKeyFile

# The OpenAI SDK's variable for a key: refused here (see above).
KEY_IN_ENVIRONMENT = "OPENAI_API_KEY"


class SettingsError(ValueError):
    """A bad environment variable: the message names it, its value and what is allowed."""


@dataclass(frozen=True)
class Settings:
    openai_base_url: str = "http://localhost:8000/v1"
    model_name: str | None = None
    api_key_file: str | None = None
    api_key_name: str | None = None
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
        if self.api_key_name is not None and self.api_key_file is None:
            raise SettingsError(
                f"OPENAI_API_KEY_NAME={self.api_key_name!r}: names a key in OPENAI_API_KEY_FILE, which is not set"
            )

    def api_key(self) -> ApiKeyFile | None:
        """Where the key is read from at each request; None: no key (an open API)."""
        return None if self.api_key_file is None else ApiKeyFile(self.api_key_file, self.api_key_name)

    def retry_delay_s(self, attempt: int) -> float:
        """The wait after failed try number `attempt` (1-based): exponential, capped."""
        return min(self.retry_initial_delay_s * 2 ** (attempt - 1), self.retry_max_delay_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        if environ.get(KEY_IN_ENVIRONMENT, "").strip() and not environ.get("OPENAI_API_KEY_FILE", "").strip():
            # Never echo the key.
            raise SettingsError(
                f"{KEY_IN_ENVIRONMENT}=<not shown>: the UI reads its key from a file, at each request, "
                "so that a rotated key is used without a restart: write the key to a file (on Kubernetes, "
                f"mount its Secret as a volume), set OPENAI_API_KEY_FILE to its path and unset {KEY_IN_ENVIRONMENT}"
            )
        names = {
            "openai_base_url": "OPENAI_BASE_URL",
            "model_name": "MODEL_NAME",
            "api_key_file": "OPENAI_API_KEY_FILE",
            "api_key_name": "OPENAI_API_KEY_NAME",
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
                raise SettingsError(f"{env}={raw!r}: must be a {kind.split(' ')[0]}") from None
        return cls(**values)  # type: ignore[arg-type]
