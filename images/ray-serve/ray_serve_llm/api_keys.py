"""The API keys the OpenAI-compatible API accepts, read from a file and reloaded as it changes.

The file holds one JSON object, `{"<name>": "<key>", ...}`: a name per consumer (the chat UI,
the probe, the readiness gate, the drill, each user), so a key can be revoked alone and
rate limits count per name. On EKS the file is a mounted Kubernetes Secret that External
Secrets keeps in sync with Secrets Manager; the kubelet swaps it in place, so a key added
or revoked there reaches every replica with no restart. Locally `python -m local up`
writes it (mode 0600) in the state folder.

A file that is not such an object (a half-edited secret, a JSON typo) never locks everyone
out: the last good keys stay in force and one line is logged per bad version. A key is
compared with every accepted key in constant time (`hmac.compare_digest`, no early exit),
so the time of an answer tells nothing about how close a guess was.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger("ray.serve")

# How often the file is looked at again (a stat; it is read only when it changed).
RELOAD_INTERVAL_S = 5.0
# Shorter keys are refused in the file: guessable.
MIN_KEY_LENGTH = 16


class KeyFileError(ValueError):
    """The key file is not a JSON object of names to keys; the message says what is wrong."""


def parse_keys(text: str) -> dict[str, str]:
    """The keys of a key file's text, `{name: key}`; KeyFileError names the first problem
    (never a key's value)."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise KeyFileError(f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    if not isinstance(data, dict):
        raise KeyFileError(f'must be a JSON object {{"<name>": "<key>"}}, not a {type(data).__name__}')
    for name, key in data.items():
        if not name.strip():
            raise KeyFileError("a key's name is empty")
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH or key != key.strip():
            raise KeyFileError(
                f"the key of {name!r} must be a string of at least {MIN_KEY_LENGTH} characters, "
                "without surrounding whitespace"
            )
    keys = {name: key for name, key in data.items()}
    if len(set(keys.values())) != len(keys):
        raise KeyFileError("two names share one key: give each its own")
    return keys


def match(presented: str, keys: Mapping[str, str]) -> str | None:
    """The name whose key is `presented`, or None. Every key is compared, in constant time."""
    given = presented.encode()
    found = None
    for name, key in keys.items():
        if hmac.compare_digest(given, key.encode()):
            found = name
    return found


class KeyRing:
    """The keys of one file, reloaded when it changes (checked at most every RELOAD_INTERVAL_S).

    Until a good version has been read, no key is accepted: a missing or broken file at
    start fails closed."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._keys: dict[str, str] = {}
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) last read
        self._checked_at: float | None = None
        self._reload()

    def name_of(self, presented: str) -> str | None:
        """The name of the consumer whose key this is; None for an unknown key."""
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= RELOAD_INTERVAL_S:
            self._reload()
        return match(presented, self._keys)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def _reload(self) -> None:
        self._checked_at = self._clock()
        try:
            stat = os.stat(self.path)
        except OSError as error:
            if self._seen != (0, 0, 0):
                logger.warning(
                    "API keys: cannot read %s (%s); keeping %d keys", self.path, error.strerror, len(self._keys)
                )
                self._seen = (0, 0, 0)
            return
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if version == self._seen:
            return
        self._seen = version
        try:
            with open(self.path, encoding="utf-8") as file:
                keys = parse_keys(file.read())
        except (OSError, UnicodeDecodeError, KeyFileError) as error:
            logger.warning(
                "API keys: %s is invalid (%s); keeping the last good %d keys", self.path, error, len(self._keys)
            )
            return
        if keys != self._keys:
            logger.info("API keys: %d keys loaded from %s: %s", len(keys), self.path, ", ".join(sorted(keys)))
        self._keys = keys
