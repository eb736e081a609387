"""The library's Lambda handlers (lambda/<name>/): their runtime and their code, in one place.
They use only the standard library and the runtime's boto3: no bundling, no Docker."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from ray_serve_ha.assets import asset_path

HANDLERS = asset_path("lambda")
# The handlers' docstrings name this runtime (a test keeps them in step).
PYTHON_RUNTIME = lambda_.Runtime.PYTHON_3_14


def handler_code(name: str) -> lambda_.Code:
    """lambda/<name>/ as the function's code, without bytecode caches."""
    return lambda_.Code.from_asset(str(HANDLERS / name), exclude=["__pycache__"])


def handler_log_group(scope: Construct, construct_id: str) -> logs.LogGroup:
    """A handler's log group: a month of logs, deleted with the stack."""
    return logs.LogGroup(
        scope, construct_id, retention=logs.RetentionDays.ONE_MONTH, removal_policy=cdk.RemovalPolicy.DESTROY
    )
