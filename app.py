#!/usr/bin/env python3
"""CDK entry point: settings from context -> the serving system's stacks (or the pipeline
that deploys them).

The only module that reads context. Bad settings end the process with one message naming
each bad key, its value and what is allowed, before anything is synthesized; so does what the
constructs' validations refuse at synth (a RayService or RayCluster that the KubeRay operator
would mark ValidationFailed), with each construct's path and message.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import aws_cdk as cdk

from stacks.existing_network import LookupFailed, check_lookups, remove_empty_context_file
from stacks.nag import enable_nag
from stacks.pipeline import PipelineStack
from stacks.serving_system import add_serving_system
from stacks.settings import Settings, SettingsError


def build_app(app: cdk.App) -> cdk.App:
    context = app.node.get_all_context()
    settings = Settings.from_context(context)
    check_lookups(context, settings.network.vpc_id)
    if settings.pipeline.enabled:
        # Every commit deploys the serving system through the pipeline's ServingStage.
        pipeline = PipelineStack(
            app,
            f"{settings.cluster.name}-pipeline",
            settings=settings,
            env=cdk.Environment(account=settings.environment.account, region=settings.environment.region),
            description="Ray Serve HA on EKS: CDK Pipeline with a post-deploy HA drill",
        )
        enable_nag(app, pipeline.stage.system, pipeline=pipeline)
    else:
        enable_nag(app, add_serving_system(app, settings))
    return app


# How aws-cdk-lib reports the constructs' validations that failed at synth (one line each).
_VALIDATION_FAILED = "ValidationFailedWithErrors:"
_VALIDATION_ERROR = re.compile(r"^\s+\[(?P<path>[^\]]+)\] (?P<message>.+)$", re.MULTILINE)


def validation_problems(error: RuntimeError) -> list[str] | None:
    """`path: message` for each construct validation that failed, or None for another error."""
    text = str(error)
    if not text.startswith(_VALIDATION_FAILED):
        return None
    return [f"{m['path']}: {m['message']}" for m in _VALIDATION_ERROR.finditer(text)]


def main(app: cdk.App | None = None) -> int:
    app = app or cdk.App()
    try:
        build_app(app)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except LookupFailed as error:
        print(f"error: {error}", file=sys.stderr)
        remove_empty_context_file(Path.cwd())
        return 1
    try:
        app.synth()
    except RuntimeError as error:
        problems = validation_problems(error)
        if not problems:
            raise
        lines = "\n".join(f"  - {problem}" for problem in problems)
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        print(f"error: the app failed its validations ({count}); nothing was synthesized:\n{lines}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
