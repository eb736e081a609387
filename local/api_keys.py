"""The local stack's API keys: the JSON file `{name: key}` the Serve app reads (as the pods read
the Secret External Secrets keeps), made by `up` in the state directory, root's alone (0600).

One key per consumer, as on EKS: the chat UI, the drill, and the user's own (`python -m local
api-key` prints it). Kept across `down` and `up`, so a key saved in a client keeps working;
edit the file to add or revoke keys (the replicas reread it within seconds).
"""

from __future__ import annotations

import json
import os
import secrets

from local.topology import STATE_DIR

API_KEYS_FILE = STATE_DIR / "api-keys.json"
CHAT_UI = "chat-ui"
HA_DRILL = "ha-drill"
USER = "user"
CONSUMERS = (CHAT_UI, HA_DRILL, USER)


class ApiKeyError(RuntimeError):
    """No usable key file; the message says what to do."""


def ensure_keys() -> dict[str, str]:
    """The keys, made for the consumers that have none (the file is written whole, 0600)."""
    keys = read_keys() if API_KEYS_FILE.exists() else {}
    missing = [name for name in CONSUMERS if name not in keys]
    if missing:
        keys.update({name: "sk-local-" + secrets.token_urlsafe(32) for name in missing})
        temporary = API_KEYS_FILE.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(keys, file, indent=2)
        os.replace(temporary, API_KEYS_FILE)  # the app never reads a half-written file
    API_KEYS_FILE.chmod(0o600)
    return keys


def read_keys() -> dict[str, str]:
    try:
        keys = json.loads(API_KEYS_FILE.read_text())
    except FileNotFoundError:
        raise ApiKeyError(f"no API keys yet ({API_KEYS_FILE}): start the stack with `make demo`") from None
    except (OSError, ValueError) as error:
        raise ApiKeyError(f"{API_KEYS_FILE} is not a JSON object of name: key ({error}); fix or delete it") from None
    if not isinstance(keys, dict):
        raise ApiKeyError(f"{API_KEYS_FILE} is not a JSON object of name: key; fix or delete it")
    return keys


def key_of(name: str) -> str:
    key = read_keys().get(name)
    if not isinstance(key, str) or not key:
        raise ApiKeyError(f"{API_KEYS_FILE} has no key named {name!r}: add one, or delete the file and run `up`")
    return key
