"""A stand-in for the AWS CLI commands the pipeline's drill step and the drill's CodeBuild
project call (run as `aws`).

`aws eks update-kubeconfig --name N --region R` writes the kubeconfig the real command
writes (its user runs `aws --region R eks get-token --cluster-name N --output json`; the
cluster's endpoint is $FAKE_EKS_ENDPOINT), to $KUBECONFIG or ~/.kube/config; `aws eks
get-token` prints an ExecCredential. `aws codebuild start-build --project-name P --query
build.id --output text` prints a build id; `aws codebuild batch-get-builds --ids I --query
"builds[0].buildStatus" --output text` prints $FAKE_BUILD_STATUS. Each call is recorded as a
JSON line in $FAKE_AWS_LOG; anything else fails as an unknown command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TOKEN = "k8s-aws-v1.fake-token-from-aws-eks-get-token"


def main(argv: list[str]) -> int:
    with open(os.environ["FAKE_AWS_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    parser = argparse.ArgumentParser(prog="aws")
    parser.add_argument("--region")
    parser.add_argument("service", choices=["eks", "codebuild"])
    parser.add_argument("command", choices=["update-kubeconfig", "get-token", "start-build", "batch-get-builds"])
    parser.add_argument("--name")
    parser.add_argument("--cluster-name")
    parser.add_argument("--project-name")
    parser.add_argument("--ids")
    parser.add_argument("--query")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    if args.command == "start-build":
        assert (args.query, args.output) == ("build.id", "text"), argv
        print(f"{args.project_name}:0b1c2d3e-0000-4000-8000-000000000000")
        return 0
    if args.command == "batch-get-builds":
        assert (args.query, args.output) == ("builds[0].buildStatus", "text"), argv
        print(os.environ["FAKE_BUILD_STATUS"])
        return 0
    region = args.region or os.environ.get("AWS_REGION")
    if not region:
        print("You must specify a region.", file=sys.stderr)
        return 253
    if args.command == "get-token":
        print(json.dumps({"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1beta1",
                          "spec": {}, "status": {"token": TOKEN}}))
        return 0
    arn = f"arn:aws:eks:{region}:111122223333:cluster/{args.name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": arn, "cluster": {"server": os.environ["FAKE_EKS_ENDPOINT"]}}],
        "contexts": [{"name": arn, "context": {"cluster": arn, "user": arn}}],
        "current-context": arn,
        "users": [{"name": arn, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["--region", region, "eks", "get-token", "--cluster-name", args.name, "--output", "json"],
        }}}],
    }
    path = Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    print(f"Added new context {arn} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
