"""The container images' Dockerfiles, checked statically (no Docker engine here).

Policy: every base image pinned to an exact tag (or a digest), never `latest`; the image
runs as a non-root user; no build argument, environment variable or copied file carries a
token or a secret (the Hugging Face token arrives at run time from a Kubernetes Secret).
Each rule is tested both ways: the project's Dockerfiles pass, a broken one fails with the
exact message.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ray_serve_ha.charts.accelerators import ACCELERATORS, CPU_BATCH_DOCKERFILE
from ray_serve_ha.charts.rayservice import RAY_VERSION

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
BATCH = ROOT / "batch"
NEURON_BASE = "public.ecr.aws/neuron/pytorch-inference-vllm-neuronx:0.16.0-neuronx-py312-sdk2.31.1-ubuntu24.04"
DOCKERFILES = sorted([*IMAGES.glob("*/Dockerfile*"), *BATCH.glob("Dockerfile*")])
# Every base image and where its tag was confirmed (docs/design.md, "Base images", says the same).
BASE_IMAGES = {
    "images/ray-serve/Dockerfile.cpu": "rayproject/ray:2.60.0-py312-cpu",
    "images/ray-serve/Dockerfile.nvidia": "rayproject/ray-llm:2.60.0-py312-cu130",
    "images/ray-serve/Dockerfile.neuron": NEURON_BASE,
    "images/gradio/Dockerfile": "public.ecr.aws/docker/library/python:3.11.14-slim-bookworm",
    "batch/Dockerfile": "rayproject/ray:2.60.0-py312-cpu",
    "batch/Dockerfile.cuda": "rayproject/ray:2.60.0-py312-cu130",
}


def froms(dockerfile: Path) -> list[str]:
    return [args.split()[0] for keyword, args in instructions(dockerfile.read_text()) if keyword == "FROM"]


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()

# Whole words of a variable name: HF_TOKEN and OPENAI_API_KEY are secrets, TOKENIZERS_PARALLELISM is not.
_SECRET_NAME = re.compile(
    r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|CREDENTIALS?|PRIVATE_KEY|AUTH)(_|$)", re.I
)
_SECRET_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{16,}|\bAKIA[0-9A-Z]{16}\b|\bsk-[A-Za-z0-9]{16,}")
_SECRET_FILE = re.compile(
    r"(^|/)(\.env|\.netrc|\.npmrc|\.pypirc|\.git-credentials|id_rsa|id_ed25519|credentials|token|\.aws|\.huggingface"
    r"|\.cache/huggingface)(/|$)|\.(pem|key|p12|pfx)$",
    re.I,
)
_ROOT_USERS = {"root", "0", "root:root", "0:0", "root:0", "0:root"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    result, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    # A colon inside the registry host (host:port/repo) is not a tag.
    if not name or "/" in tag:
        return False
    # An exact release (x.y.z), not a moving one like `latest`, `slim` or `3.11`.
    return re.search(r"\d+\.\d+\.\d+", tag) is not None


def _assignments(args: str) -> list[tuple[str, str]]:
    """KEY=VALUE pairs of ENV/ARG (also the legacy `ENV KEY VALUE` form)."""
    pairs = re.findall(r'([A-Za-z_][A-Za-z0-9_]*)(?:=("[^"]*"|\'[^\']*\'|\S*))?', args)
    if "=" not in args and len(args.split()) >= 2:  # ENV KEY some value
        key, _, value = args.partition(" ")
        return [(key, value)]
    return [(key, value.strip("\"'")) for key, value in pairs]


def dockerfile_problems(text: str) -> list[str]:
    """Every policy violation in a Dockerfile, one message each."""
    problems, stages, users = [], set(), []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            image = parts[0]
            if len(parts) >= 3 and parts[1].lower() == "as":
                stages.add(parts[2].lower())
            if image.lower() not in stages and not _image_is_pinned(image):
                problems.append(f"FROM {image}: not pinned to an exact tag or digest")
        elif keyword == "USER":
            users.append(args.split()[0] if args else "")
        elif keyword in ("ARG", "ENV"):
            for key, value in _assignments(args):
                if _SECRET_NAME.search(key):
                    problems.append(f"{keyword} {key}: a secret must not be a build argument or baked into the image")
                elif _SECRET_VALUE.search(value or ""):
                    problems.append(f"{keyword} {key}: its value looks like a credential")
        elif keyword in ("COPY", "ADD"):
            sources = [p for p in args.split() if not p.startswith("--")][:-1]
            for source in sources:
                if _SECRET_FILE.search(source.rstrip("/")):
                    problems.append(f"{keyword} {source}: copies a credentials file into the image")
        if _SECRET_VALUE.search(args) and keyword not in ("ARG", "ENV"):
            problems.append(f"{keyword}: contains what looks like a credential")
    if not users:
        problems.append("no USER: the image would run as root")
    elif users[-1].lower() in _ROOT_USERS:
        problems.append(f"USER {users[-1]}: the image must end as a non-root user")
    return problems


# --- The project's Dockerfiles ------------------------------------------------------------


def test_every_dockerfile_has_its_base_image_recorded():
    assert {_name(path): froms(path) for path in DOCKERFILES} == {
        name: [base] for name, base in BASE_IMAGES.items()
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_dockerfile_follows_the_policy(dockerfile):
    assert dockerfile_problems(dockerfile.read_text()) == []


def test_ray_images_match_the_clusters_ray_version():
    ray_bases = [base for base in BASE_IMAGES.values() if base.startswith("rayproject/")]
    assert ray_bases and all(base.split(":")[1].startswith(f"{RAY_VERSION}-") for base in ray_bases)


def test_the_nvidia_serving_image_is_a_published_ray_llm_tag():
    # ray-llm images are py3.12 + CUDA 13 only since ray-project/ray#62458; the py311/cu128
    # tag this image used does not exist for Ray 2.60.
    (base,) = froms(IMAGES / "ray-serve/Dockerfile.nvidia")
    assert base.endswith("-py312-cu130")


def test_each_accelerator_names_dockerfiles_that_exist():
    for accelerator in ACCELERATORS.values():
        assert (IMAGES / "ray-serve" / accelerator.dockerfile).is_file()
        assert (BATCH / accelerator.batch_dockerfile).is_file()


def test_teams_that_train_on_gpus_get_a_cuda_pytorch():
    for accelerator in ACCELERATORS.values():
        dockerfile = BATCH / accelerator.batch_dockerfile
        runs = " ".join(args for keyword, args in instructions(dockerfile.read_text()) if keyword == "RUN")
        (base,) = froms(dockerfile)
        if accelerator.train_on_devices:
            # `--use-gpu` needs CUDA: a CUDA base, and torch from PyPI (its CUDA build), not the CPU index.
            assert re.search(r"-cu\d+$", base), base
            assert "whl/cpu" not in runs
        else:
            assert accelerator.batch_dockerfile == CPU_BATCH_DOCKERFILE
    (cpu_base,) = froms(BATCH / CPU_BATCH_DOCKERFILE)
    assert cpu_base.endswith("-cpu")
    assert "download.pytorch.org/whl/cpu" in (BATCH / CPU_BATCH_DOCKERFILE).read_text()


SERVING_DOCKERFILES = [p for p in DOCKERFILES if p.is_relative_to(IMAGES)]


@pytest.mark.parametrize("dockerfile", SERVING_DOCKERFILES, ids=_name)
def test_dockerfile_copies_its_application_package(dockerfile):
    copies = [args for keyword, args in instructions(dockerfile.read_text()) if keyword == "COPY"]
    package = "chat_ui" if dockerfile.parent.name == "gradio" else "ray_serve_llm"
    assert any(args.split()[-2] == package for args in copies), copies


@pytest.mark.parametrize("folder", ["ray-serve", "gradio"])
def test_requirements_are_pinned(folder):
    for path in sorted((IMAGES / folder).glob("requirements*.txt")):
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        requirements = [line for line in lines if line]
        assert requirements, path
        unpinned = [
            line for line in requirements if not re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[0-9][0-9A-Za-z.+\-]*", line)
        ]
        assert unpinned == [], f"{path.name}: not pinned with ==: {unpinned}"


def test_the_package_folders_exclude_secrets_and_caches_from_the_build_context():
    for folder in ("ray-serve", "gradio"):
        ignored = (IMAGES / folder / ".dockerignore").read_text().split()
        assert {"**/__pycache__", ".env", "*.pem", "*.key"} <= set(ignored)


# --- The policy, both ways -----------------------------------------------------------------


GOOD = """\
# a comment
FROM python:3.11.14-slim-bookworm AS build
RUN pip install --no-cache-dir \\
    gradio==6.31.0
FROM build
COPY --chown=10001:10001 chat_ui ./chat_ui
ENV HF_HOME=/home/app/.cache GRADIO_SERVER_PORT=7860 TOKENIZERS_PARALLELISM=false
USER 10001
"""


def test_a_compliant_dockerfile_passes():
    assert dockerfile_problems(GOOD) == []


def test_digest_pins_and_registry_ports_are_understood():
    assert dockerfile_problems("FROM registry.local:5000/ray@sha256:" + "a" * 64 + "\nUSER ray\n") == []
    assert dockerfile_problems("FROM registry.local:5000/ray\nUSER ray\n") == [
        "FROM registry.local:5000/ray: not pinned to an exact tag or digest"
    ]


@pytest.mark.parametrize(
    "change,problem",
    [
        (("python:3.11.14-slim-bookworm", "python:latest"), "FROM python:latest: not pinned to an exact tag or digest"),
        (("python:3.11.14-slim-bookworm", "python"), "FROM python: not pinned to an exact tag or digest"),
        (("python:3.11.14-slim-bookworm", "python:slim"), "FROM python:slim: not pinned to an exact tag or digest"),
        (
            ("python:3.11.14-slim-bookworm", "python:3.11-slim"),
            "FROM python:3.11-slim: not pinned to an exact tag or digest",
        ),
        (("USER 10001", "USER root"), "USER root: the image must end as a non-root user"),
        (("USER 10001", "USER 0:0"), "USER 0:0: the image must end as a non-root user"),
        (("USER 10001\n", ""), "no USER: the image would run as root"),
        (
            ("ENV HF_HOME", "ARG HF_TOKEN\nENV HF_HOME"),
            "ARG HF_TOKEN: a secret must not be a build argument or baked into the image",
        ),
        (
            ("GRADIO_SERVER_PORT=7860", "OPENAI_API_KEY=abc"),
            "ENV OPENAI_API_KEY: a secret must not be a build argument or baked into the image",
        ),
        (
            ("GRADIO_SERVER_PORT=7860", "HUGGING_FACE_HUB_TOKEN=x"),
            "ENV HUGGING_FACE_HUB_TOKEN: a secret must not be a build argument or baked into the image",
        ),
        (
            ("GRADIO_SERVER_PORT=7860", "MODEL_CONFIG=hf_" + "x1" * 12),
            "ENV MODEL_CONFIG: its value looks like a credential",
        ),
        (
            ("COPY --chown=10001:10001 chat_ui ./chat_ui", "COPY .env /app/.env"),
            "COPY .env: copies a credentials file into the image",
        ),
        (
            ("COPY --chown=10001:10001 chat_ui ./chat_ui", "COPY .cache/huggingface/token /root/"),
            "COPY .cache/huggingface/token: copies a credentials file into the image",
        ),
        (
            ("COPY --chown=10001:10001 chat_ui ./chat_ui", "ADD certs/server.pem /etc/"),
            "ADD certs/server.pem: copies a credentials file into the image",
        ),
        (
            ("gradio==6.31.0", "gradio==6.31.0 && huggingface-cli login --token hf_" + "y2" * 12),
            "RUN: contains what looks like a credential",
        ),
    ],
    ids=[
        "latest",
        "no tag",
        "floating tag",
        "minor tag",
        "root",
        "uid 0",
        "no user",
        "token arg",
        "api key env",
        "token env",
        "token value",
        "dotenv",
        "hf token file",
        "pem",
        "token in run",
    ],
)
def test_a_broken_dockerfile_fails_with_the_exact_problem(change, problem):
    old, new = change
    assert old in GOOD
    assert dockerfile_problems(GOOD.replace(old, new)) == [problem]
