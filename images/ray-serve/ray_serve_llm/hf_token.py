"""The Hugging Face token: read from the environment variable the args name, kept in a
`SecretStr` (its repr is masked), and scrubbed from any error raised while it is in use.

The token reaches the pod from a Kubernetes Secret (synced from Secrets Manager); it is
never an argument, a log line or part of an exception message.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pydantic import SecretStr

MASK = "***"


def read_token(env_name: str, environ: Mapping[str, str] | None = None) -> SecretStr | None:
    """The token in `env_name`, or None when it is unset or blank (public models)."""
    value = (os.environ if environ is None else environ).get(env_name, "").strip()
    return SecretStr(value) if value else None


def redact(text: str, token: SecretStr | None) -> str:
    if token is None or not token.get_secret_value():
        return text
    return text.replace(token.get_secret_value(), MASK)


class ModelLoadError(RuntimeError):
    """Loading the model failed; the message is safe to log (no token in it)."""


@contextmanager
def token_scrubbed(token: SecretStr | None, what: str) -> Iterator[None]:
    """Re-raises any error as `ModelLoadError` with the token masked. The original
    exception is dropped (not chained), because its text and its traceback's locals may
    carry the token; the type and the scrubbed message keep the diagnosis."""
    try:
        yield
    except Exception as error:
        message = redact(f"{what} failed: {type(error).__name__}: {error}", token)
        raise ModelLoadError(message) from None
