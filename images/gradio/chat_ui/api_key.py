"""The UI's API key, read from a file at every request, so a rotated key is used at once.

On EKS the file is the UI's Secret mounted as a volume: External Secrets writes a new key
into the Secret, the kubelet swaps the file in place, and the next chat sends the new key:
no restart. (An environment variable would keep the old key until the pod restarts.)

The file holds the key alone (surrounding whitespace ignored), or, with a name, a JSON
object `{"<name>": "<key>", ...}` of which the UI uses that name's key: the local stack
points the UI at its `api-keys.json`, so editing that file rotates the UI's key as well.

Reading a few bytes per request costs nothing next to a model's answer; a cache would only
add a way to send a stale key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class ApiKeyError(RuntimeError):
    """The key file cannot give a key; the message says what is wrong and what to check,
    never a key's value."""


@dataclass(frozen=True)
class ApiKeyFile:
    path: str
    # The key's name when the file is a JSON object {name: key}; None: the file is the key.
    name: str | None = None

    def read(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as file:
                text = file.read()
        except FileNotFoundError:
            raise ApiKeyError(f"{self.path} does not exist") from None
        except IsADirectoryError:
            raise ApiKeyError(f"{self.path} is a directory, not a file") from None
        except OSError as error:
            raise ApiKeyError(f"cannot read {self.path} ({error.strerror})") from None
        except UnicodeDecodeError:
            raise ApiKeyError(f"{self.path} is not UTF-8 text") from None
        key = self._key_of(text).strip()
        if not key:
            where = f"the key named {self.name!r} in {self.path}" if self.name else self.path
            raise ApiKeyError(f"{where} is empty")
        # What an Authorization header can carry and the API accepts: one printable ASCII word.
        if not key.isascii() or not key.isprintable() or any(char.isspace() for char in key):
            where = f"the key named {self.name!r} in {self.path}" if self.name else self.path
            raise ApiKeyError(f"{where} is not a key: it must be one word of printable ASCII, without spaces")
        return key

    def _key_of(self, text: str) -> str:
        if self.name is None:
            return text
        try:
            keys = json.loads(text)
        except ValueError:
            raise ApiKeyError(f'{self.path} is not valid JSON (a JSON object {{"<name>": "<key>"}})') from None
        if not isinstance(keys, dict):
            raise ApiKeyError(f'{self.path} is not a JSON object {{"<name>": "<key>"}}')
        key = keys.get(self.name)
        if key is None:
            raise ApiKeyError(f"{self.path} has no key named {self.name!r}")
        if not isinstance(key, str):
            raise ApiKeyError(f"the key named {self.name!r} in {self.path} is not a string")
        return key
