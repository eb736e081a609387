"""Adds the generated key of every consumer that lacks one to the API keys secret, and
touches nothing else: a CloudFormation custom resource (CDK Provider framework, onEvent
only) of type `Custom::ApiKeyEntries` (ray_serve_ha/constructs/api_keys.py).

The keys secret is a JSON object {name: key}. CloudFormation wrote its initial value once;
after that it belongs to the operator, who adds and revokes keys by editing it. On Create
and Update this handler reads it, and for each consumer listed without an entry reads that
consumer's generated seed secret and adds the entry; it writes a new version only when it
added something. It never removes or overwrites an entry: a consumer dropped from the list
keeps its entry, a key the operator changed stays changed, a key the operator added stays.
A secret that is not a JSON object of strings fails the deploy, with nothing written. On
Delete it does nothing (the keys secret is CloudFormation's to delete).

Runs on the AWS Lambda Python 3.14 runtime (ray_serve_ha/constructs/lambda_code.py) with the
standard library and the runtime's boto3 only: no bundling.

Entry point: `index.add_missing_entries`. ResourceProperties (as CloudFormation passes them):
KeysSecretArn, and Consumers, a list of {"Name": ..., "SeedArn": ...}. No key is ever logged
or returned.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import boto3

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


# What a JSON value that is not an object is called, by the Python type json.loads makes of it.
JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


class KeysSecretError(ValueError):
    """The keys secret holds something this handler must not rewrite (fails the deploy)."""


@lru_cache(maxsize=1)
def secrets_client() -> Any:
    return boto3.client("secretsmanager")


def consumers_of(properties: Mapping[str, Any]) -> dict[str, str]:
    """{name: seed ARN} from the Consumers property, in its order."""
    consumers = properties.get("Consumers")
    if not isinstance(consumers, list) or not all(
        isinstance(c, dict) and isinstance(c.get("Name"), str) and isinstance(c.get("SeedArn"), str)
        for c in consumers
    ):
        raise ValueError('Consumers must be a list of {"Name": ..., "SeedArn": ...}')
    return {c["Name"]: c["SeedArn"] for c in consumers}


def parse_keys(text: str | None, secret_arn: str) -> dict[str, str]:
    """The keys secret's entries. Never quotes the secret's value: it holds keys."""
    fix = (
        'restore a JSON object of names and keys in it, such as {"operator": "<key>"} '
        "(Secrets Manager console or `aws secretsmanager put-secret-value`), then deploy again; "
        "nothing was written to it"
    )
    if text is None:
        raise KeysSecretError(f"the API keys secret {secret_arn} has no SecretString: {fix}")
    try:
        keys = json.loads(text)
    except json.JSONDecodeError as error:
        raise KeysSecretError(
            f"the API keys secret {secret_arn} is not JSON (line {error.lineno}, column {error.colno}): {fix}"
        ) from None
    if not isinstance(keys, dict):
        kind = JSON_KINDS.get(type(keys), "value")
        raise KeysSecretError(f"the API keys secret {secret_arn} holds a JSON {kind}, not an object: {fix}")
    not_strings = sorted(name for name, key in keys.items() if not isinstance(key, str))
    if not_strings:
        raise KeysSecretError(
            f"the API keys secret {secret_arn} has entries whose keys are not strings ({', '.join(not_strings)}): {fix}"
        )
    return keys


def add_missing(secrets: Any, secret_arn: str, consumers: Mapping[str, str]) -> list[str]:
    """Adds the seed of each consumer without an entry; returns the names added."""
    keys = parse_keys(secrets.get_secret_value(SecretId=secret_arn).get("SecretString"), secret_arn)
    missing = [name for name in consumers if name not in keys]
    for name in missing:
        seed = secrets.get_secret_value(SecretId=consumers[name]).get("SecretString")
        if not seed:
            raise KeysSecretError(f"the generated key of {name} ({consumers[name]}) is empty; nothing was written")
        keys[name] = seed
    if missing:
        # Read, add, write: an edit made between the read and this write would be lost, so
        # the window is one call; no entry is rewritten with anything but its own value.
        secrets.put_secret_value(SecretId=secret_arn, SecretString=json.dumps(keys))
    return missing


def add_missing_entries(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    properties = event["ResourceProperties"]
    secret_arn = properties["KeysSecretArn"]
    if event["RequestType"] == "Delete":
        logger.info("Delete: the API keys secret %s is left as it is", secret_arn)
        return {"PhysicalResourceId": event.get("PhysicalResourceId", secret_arn)}
    added = add_missing(secrets_client(), secret_arn, consumers_of(properties))
    logger.info("API keys secret %s: added %s", secret_arn, ", ".join(added) if added else "nothing")
    return {"PhysicalResourceId": secret_arn, "Data": {"Added": ",".join(added)}}
