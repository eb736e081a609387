#!/usr/bin/env python3
"""CDK entry point: settings from context -> the serving system's stacks (or the pipeline
that deploys them).

The only module that reads context. Bad settings end the process with one message naming
each bad key, its value and what is allowed, before anything is synthesized.
"""

from __future__ import annotations

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
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
