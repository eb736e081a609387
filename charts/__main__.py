"""python -m charts: the serving manifests as plain YAML, one file per chart, for GitOps tools.

    python -m charts --profile kind --out manifests/kind
    python -m charts --profile eks --out manifests/eks --accelerator neuron \\
        --redis-endpoint master.example.cache.amazonaws.com --region us-east-2 \\
        --redis-auth-secret-arn arn:aws:secretsmanager:us-east-2:111122223333:secret:gcs-auth-AbCdEf \\
        --hf-token-secret-name ray-serve-ha/hugging-face-token \\
        --ray-image 111122223333.dkr.ecr.us-east-2.amazonaws.com/ray-serve:neuron \\
        --gradio-image 111122223333.dkr.ecr.us-east-2.amazonaws.com/gradio:1

Files are named `NN-<chart>.k8s.yaml` in apply order, so `kubectl apply -f DIR` creates them
in the order they need (and delete them in the reverse order). Bad input, or an `--out` that
cannot be written, ends the run with one line on stderr and exit status 2, and nothing
written. The kind profile uses the project's locally built images unless told otherwise
(the Serve app on CPU with the tiny model built in, and the UI) and prints how to build them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import cdk8s

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import ACCELERATORS, DEFAULT_ACCELERATOR
from ray_serve_ha.charts.capacity import DEFAULT_CAPACITY_MODE, CapacityMode
from ray_serve_ha.charts.kuberay_rules import manifest_violations
from ray_serve_ha.charts.models import HF_MODEL_ID, HF_MODEL_ID_RULE, MODELS, model_of
from ray_serve_ha.charts.profiles import (
    KIND_IMAGE_BUILDS,
    EksDeployment,
    KindDeployment,
    eks_charts,
    kind_charts,
)

PROG = "python -m charts"
# Values only the CDK (or this CLI) knows at deploy time: the eks profile cannot guess them.
EKS_REQUIRED = ("redis_endpoint", "redis_auth_secret_arn", "region", "ray_image", "gradio_image")
# Options that have no meaning on kind, each with the reason.
_KIND_WORKERS = "kind runs two CPU workers"
_KIND_REDIS = "kind runs its own Redis"
_KIND_SECRETS = "kind reads no AWS secrets"
_KIND_MODEL = "kind serves the tiny model built into the CPU image"
EKS_ONLY = {
    "accelerator": _KIND_WORKERS, "instance_type": _KIND_WORKERS, "min_workers": _KIND_WORKERS,
    "max_workers": _KIND_WORKERS, "capacity_mode": _KIND_WORKERS, "on_demand_replicas": _KIND_WORKERS,
    "model_id": _KIND_MODEL, "model_weights_gb": _KIND_MODEL,
    "redis_endpoint": _KIND_REDIS, "redis_port": _KIND_REDIS,
    "redis_auth_secret_arn": _KIND_SECRETS, "hf_token_secret_name": _KIND_SECRETS, "region": _KIND_SECRETS,
    "api_keys_secret_arn": _KIND_SECRETS,
}

_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_IMAGE = re.compile(r"^[a-z0-9][\w.:/@-]*$")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the message names the option and what is wrong.
        raise UsageError(message)


def _checked(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}")
        return value

    return check


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (1-65535)")
    return int(value)


def _worker_count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number")
    return int(value)


def _weights_gb(value: str) -> float:
    try:
        gb = float(value)
    except ValueError:
        gb = 0.0
    if not 0 < gb <= 1000:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size in GB (above 0, at most 1000)")
    return gb


def _out_dir(value: str) -> Path:
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path is not a directory to write to")
    return Path(value)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", required=True, choices=("eks", "kind"))
    p.add_argument("--out", required=True, type=_out_dir, help="directory for the YAML files")
    p.add_argument("--ray-image", type=_checked(_IMAGE, "an image reference"),
                   help="Ray image with the Serve app (kind default: the project's CPU image, "
                   f"{KindDeployment.ray_image}, built from images/ray-serve/Dockerfile.cpu)")
    p.add_argument("--gradio-image", type=_checked(_IMAGE, "an image reference"),
                   help=f"Gradio UI image (kind default: {KindDeployment.gradio_image})")
    eks = p.add_argument_group("eks profile")
    eks.add_argument("--accelerator", choices=sorted(ACCELERATORS), help=f"default: {DEFAULT_ACCELERATOR}")
    eks.add_argument("--instance-type", help="accelerator instance type the workers are sized for "
                     f"(default: {', '.join(f'{a.name} {a.default_instance_type}' for a in ACCELERATORS.values())})")
    eks.add_argument("--min-workers", type=_worker_count, help=f"default: {EksDeployment.min_workers}")
    eks.add_argument("--max-workers", type=_worker_count, help=f"default: {EksDeployment.max_workers}")
    eks.add_argument("--on-demand-replicas", type=_worker_count,
                     help="spot replicas above an on-demand floor of this many (servingCapacityType=mixed); "
                     "default: every worker on on-demand nodes")
    eks.add_argument("--model-id", type=_checked(HF_MODEL_ID, HF_MODEL_ID_RULE.removeprefix("must be ")),
                     help=f"Hugging Face model id (default: {EksDeployment.model.id}; the models table: "
                     f"{', '.join(MODELS)}, or another with --model-weights-gb)")
    eks.add_argument("--model-weights-gb", type=_weights_gb,
                     help="size in GB of the weights of a model the models table lacks")
    eks.add_argument("--capacity-mode", choices=tuple(CapacityMode), help="how the cluster provisions the "
                     f"serve Service's internal NLB (default: {DEFAULT_CAPACITY_MODE})")
    eks.add_argument("--redis-endpoint", type=_checked(_HOSTNAME, "a host name"),
                     help="ElastiCache primary endpoint")
    eks.add_argument("--redis-port", type=_port, help=f"default: {constants.REDIS_PORT}")
    eks.add_argument("--redis-auth-secret-arn", type=_checked(_SECRET_ARN, "a Secrets Manager secret ARN"),
                     help="ARN of the ElastiCache AUTH token secret")
    eks.add_argument("--hf-token-secret-name", type=_checked(_SECRET_NAME, "a Secrets Manager secret name"),
                     help=f"name of the Hugging Face token secret (default: {EksDeployment.hugging_face_token_secret})")
    eks.add_argument("--api-keys-secret-arn", type=_checked(_SECRET_ARN, "a Secrets Manager secret ARN"),
                     help="ARN of the API keys secret, a JSON object {name: key} with a `chat-ui` entry "
                     "(unset: the API is open to whatever reaches the serve Service)")
    eks.add_argument("--region", type=_checked(_REGION, "an AWS region such as us-east-2"),
                     help="region of the secrets")
    return p


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def build(args: argparse.Namespace, app: cdk8s.App) -> tuple[cdk8s.Chart, ...]:
    """The profile's charts, in apply order; UsageError or ValueError on bad input."""
    if args.profile == "kind":
        eks_only = [f"{_option(d)} ({why})" for d, why in EKS_ONLY.items() if getattr(args, d) is not None]
        if eks_only:
            raise UsageError(f"only for --profile eks: {', '.join(eks_only)}")
        images = {"ray_image": args.ray_image, "gradio_image": args.gradio_image}
        return kind_charts(app, KindDeployment(**{k: v for k, v in images.items() if v})).in_apply_order()

    missing = [_option(d) for d in EKS_REQUIRED if getattr(args, d) is None]
    if missing:
        raise UsageError(
            f"--profile eks needs {', '.join(missing)} (deploy-time values the charts cannot guess)"
        )
    accelerator = ACCELERATORS[args.accelerator or DEFAULT_ACCELERATOR]
    instance_type = args.instance_type or accelerator.default_instance_type
    try:
        model = model_of(args.model_id or EksDeployment.model.id, args.model_weights_gb,
                         id_key="--model-id", weights_key="--model-weights-gb")
    except ValueError as problem:
        raise UsageError(str(problem)) from None
    if instance_type in accelerator.instance_types and (reason := accelerator.unfit_reason(instance_type, model)):
        raise UsageError(f"--instance-type {instance_type}: cannot serve the model: {reason}")
    # Unset: the library's defaults, which `cdk synth` takes too (EksDeployment's).
    given: dict[str, Any] = {
        "min_workers": args.min_workers, "max_workers": args.max_workers, "model": model,
        "on_demand_replicas": args.on_demand_replicas,
        "capacity_mode": args.capacity_mode and CapacityMode(args.capacity_mode), "redis_port": args.redis_port,
        "hugging_face_token_secret": args.hf_token_secret_name,
        "api_keys_secret": args.api_keys_secret_arn,
    }
    return eks_charts(
        app,
        EksDeployment(
            accelerator=accelerator,
            instance_types=(instance_type,),
            region=args.region,
            redis_endpoint=args.redis_endpoint,
            gcs_store_auth_secret=args.redis_auth_secret_arn,
            ray_image=args.ray_image,
            gradio_image=args.gradio_image,
            **{key: value for key, value in given.items() if value is not None},
        ),
    ).in_apply_order()


def render(charts: Sequence[cdk8s.Chart]) -> dict[str, str]:
    """File name -> YAML, numbered in apply order; UsageError for what the KubeRay operator
    would refuse (ValidationFailed), as `cdk synth` refuses it."""
    refused = manifest_violations(o for chart in charts for o in chart.to_json())
    if refused:
        raise UsageError("; ".join(refused))
    return {
        f"{index:02d}-{chart.node.id}.k8s.yaml": cdk8s.Yaml.stringify(*chart.to_json()).rstrip("\n") + "\n"
        for index, chart in enumerate(charts)
    }


def write(files: dict[str, str], out: Path) -> None:
    """Writes every file or none: each is written beside its target first and renamed into
    place only when all were written; on failure what this run created is removed again."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    in_the_way = [name for name in files if (out / name).exists() and not (out / name).is_file()]
    if in_the_way:
        raise UsageError(f"--out {out}: {', '.join(in_the_way)} there is not a file")
    created = [folder for folder in (out, *out.parents) if not folder.exists()]
    staged: list[tuple[Path, Path]] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            partial = out / f".{name}.partial"
            partial.write_text(text, encoding="utf-8")
            staged.append((partial, out / name))
        for partial, path in staged:
            partial.replace(path)
    except OSError as error:
        for partial, _ in staged:
            partial.unlink(missing_ok=True)
        for folder in created:  # innermost first
            if folder.exists():
                folder.rmdir()
        raise UsageError(f"--out {out}: cannot write there ({error.strerror or error})") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        files = render(build(args, cdk8s.App()))
        write(files, args.out)
    except (UsageError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} files to {args.out}: {', '.join(files)}")
    if args.profile == "kind":
        images = [args.ray_image or KindDeployment.ray_image, args.gradio_image or KindDeployment.gradio_image]
        for image in images:
            if image in KIND_IMAGE_BUILDS:
                print(f"build {image}: {KIND_IMAGE_BUILDS[image].format(image=image)}")
        print(f"load the images into kind: kind load docker-image {' '.join(images)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
