"""The library's Lambda handlers (lambda/<name>/): their runtime and their code, in one place.
They use only the standard library and the runtime's boto3: no bundling, no Docker."""

from __future__ import annotations

from aws_cdk import aws_lambda as lambda_

from ray_serve_ha.assets import asset_path

HANDLERS = asset_path("lambda")
# The handlers' docstrings name this runtime (a test keeps them in step).
PYTHON_RUNTIME = lambda_.Runtime.PYTHON_3_14


def handler_code(name: str) -> lambda_.Code:
    """lambda/<name>/ as the function's code, without bytecode caches."""
    return lambda_.Code.from_asset(str(HANDLERS / name), exclude=["__pycache__"])
