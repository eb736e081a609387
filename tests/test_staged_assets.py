"""What AWS runs, run here from its staged copy in the cloud assembly (cdk.out), with only
what the AWS service provides:

- the pipeline's asset steps (CodeBuild): the synth step's commands that stage the asset
  publisher, then every asset project's buildspec as synthesized (install, pre_build and
  build phases) in one shell per phase group, with Node 24 and npm, the npm global prefix of
  a fresh machine, and a stand-in `docker` (no Docker daemon here) that checks and records
  its calls; they publish to moto's S3, ECR and STS on loopback;
- the pipeline's post-deploy drill step: its buildspec with a stand-in `aws` that answers
  as CodeBuild would for the stage's drill project;
- the drill's CodeBuild project: a fresh venv in a copy of its staged source asset, the
  buildspec's install step, `python -m local.drill --help`, and its build commands against
  the fake Kubernetes API of tests/test_drill.py, with a stand-in `aws` for the EKS commands;
- every Lambda handler of the project: imported from its staged asset directory and invoked
  by a Python started without site-packages, with only the standard library and the Lambda
  runtime's boto3 and botocore, against the fakes of tests/test_lambda_*.py.

The module synthesizes the pipeline app once: its stage holds the same serving stacks as
`cdk deploy`. Not exercised here: CodeBuild's own image (Python 3.12 and Node from its
runtime-versions; here the project's Python and Node 24), Lambda's Python 3.14 (here the
project's Python), a real Docker build and push, AWS's authorization of the calls (see
tests/test_resource_policies.py for the policies)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import pytest

from app import build_app
from stacks.drill_runner import DRILL_REQUIREMENTS, drill_sources, ha_drill_project_name
from stacks.pipeline import CDK_PIPELINES_CDK_ASSETS, STAGED_PUBLISHER
from stacks.settings import Settings
from tests.conftest import ROOT, context
from tests.fakes.aws import TOKEN as EKS_TOKEN
from tests.moto_server import moto_server
from tests.test_drill import FakeCluster
from tests.test_drill import _handler as fake_cluster_handler
from tests.test_lambda_rayservice_ready import (
    READY,
    FakeKube,
    _self_signed,
    _serve,
    k8s_object,
    listing,
)
from tests.test_lambda_serve_probe import FakeServe, start_fake_serve
from tests.test_pipeline import PIPELINE

pytestmark = pytest.mark.staged

ACCOUNT = PIPELINE["account"]
REGION = PIPELINE["region"]
SETTINGS = Settings.from_context(context(**PIPELINE))
VENV_BIN = Path(sys.executable).parent
FAKES = ROOT / "tests" / "fakes"
# Static credentials of the CodeBuild or Lambda role (made up: every endpoint is local).
ROLE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEROLE",
    "AWS_SECRET_ACCESS_KEY": "example-secret-key",
    "AWS_SESSION_TOKEN": "example-session-token",
}
NO_AWS_CONFIG = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                 "AWS_EC2_METADATA_DISABLED": "true"}


# ---------------------------------------------------------------------------------------
# The cloud assembly and what it holds
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def assembly(tmp_path_factory) -> Path:
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(context=context(**PIPELINE), outdir=str(outdir))
    build_app(app)
    app.synth()
    return outdir


def stage_manifests(assembly: Path) -> list[Path]:
    """The asset manifests of the deployed stage (the pipeline stack's own manifest holds
    only its template, which the self-mutation step's `cdk deploy` publishes)."""
    (stage,) = assembly.glob("assembly-*")
    return sorted(stage.glob("*.assets.json"))


def stage_template(assembly: Path, stack: str) -> dict[str, Any]:
    (stage,) = assembly.glob("assembly-*")
    (path,) = stage.glob(f"*{stack.replace('-', '')}*.template.json")
    return json.loads(path.read_text())


def pipeline_template(assembly: Path) -> dict[str, Any]:
    return json.loads((assembly / f"{SETTINGS.cluster.name}-pipeline.template.json").read_text())


def buildspecs(template: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    return {
        name: json.loads(resource["Properties"]["Source"]["BuildSpec"])
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CodeBuild::Project" and name.startswith(prefix)
    }


@dataclass(frozen=True)
class Entry:
    """One asset destination of a manifest."""

    manifest: Path
    asset_id: str
    destination_id: str
    kind: str  # "files" or "dockerImages"
    source: dict[str, Any]
    destination: dict[str, Any]

    @property
    def selector(self) -> str:
        return f"{self.asset_id}:{self.destination_id}"

    @property
    def staged(self) -> Path:
        return (self.manifest.parent / (self.source.get("path") or self.source["directory"])).resolve()


def entries(manifests: list[Path]) -> list[Entry]:
    found = []
    for manifest in manifests:
        body = json.loads(manifest.read_text())
        for kind in ("files", "dockerImages"):
            for asset_id, asset in body.get(kind, {}).items():
                for destination_id, destination in asset["destinations"].items():
                    found.append(Entry(manifest, asset_id, destination_id, kind, asset["source"], destination))
    return found


def staged_file_asset(assembly: Path, object_key: str) -> Path:
    """The staged directory or file of the stage's file asset published as `object_key`."""
    (entry,) = [e for e in entries(stage_manifests(assembly)) if e.destination.get("objectKey") == object_key]
    return entry.staged


def run_phases(
    commands: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Buildspec commands as CodeBuild runs them (version 0.2: one shell keeps the directory
    and the variables; a failing command fails the build)."""
    return subprocess.run(["/bin/sh", "-ec", "\n".join(commands)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def tool(directory: Path, name: str, module: str) -> None:
    """A stand-in command `name` in `directory` that runs tests/fakes/<module>.py."""
    path = directory / name
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKES / module}.py" "$@"\n')
    path.chmod(0o755)


@pytest.fixture(scope="module")
def aws_endpoint():
    """moto's server: S3, ECR, STS and CloudWatch of the pipeline's account, on loopback."""
    with moto_server(account=ACCOUNT) as endpoint:
        yield endpoint


def moto_client(endpoint: str, service: str):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


# ---------------------------------------------------------------------------------------
# The pipeline's asset steps
# ---------------------------------------------------------------------------------------


def test_every_manifest_is_read_by_the_asset_publisher(assembly):
    # `make setup` installs the publisher as the project's `cdk-assets` (package.json).
    publisher = ROOT / "node_modules" / ".bin" / "cdk-assets"
    assert publisher.resolve() == (ROOT / "tools" / "asset-publisher" / "bin" / "cdk-assets").resolve()
    manifests = sorted(assembly.rglob("*.assets.json"))
    assert len(manifests) == 5  # the pipeline stack's and the stage's four stacks'
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    for manifest in manifests:
        listed = subprocess.run([str(publisher), "--path", str(manifest), "ls"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert {e.asset_id for e in entries([manifest])} == {line.split()[0] for line in listed.stdout.splitlines()
                                                              if not line.startswith(" ")}


@pytest.fixture(scope="module")
def staged_publisher(assembly, tmp_path_factory) -> Path:
    """The synth step's commands after `make synth` (whose cloud assembly this module's synth
    stands for), run as written in a checkout whose cdk.out is that assembly."""
    (synth,) = buildspecs(pipeline_template(assembly), "PipelineBuildSynth").values()
    commands = synth["phases"]["build"]["commands"]
    assert commands[0] == "make synth"
    checkout = tmp_path_factory.mktemp("checkout")
    source = ROOT / "tools" / "asset-publisher"
    shutil.copytree(source, checkout / "tools" / "asset-publisher", ignore=shutil.ignore_patterns("node_modules"))
    (checkout / "tools" / "asset-publisher" / "node_modules").mkdir()  # as `make setup` leaves it
    (checkout / "cdk.out").symlink_to(assembly)
    result = run_phases(commands[1:], env={"PATH": "/usr/bin:/bin"}, cwd=checkout)
    assert result.returncode == 0, result.stderr
    return assembly / STAGED_PUBLISHER


def test_synth_step_stages_the_publisher_without_its_installed_packages(staged_publisher):
    staged = sorted(p.relative_to(staged_publisher).as_posix() for p in staged_publisher.rglob("*") if p.is_file())
    assert staged == ["bin/cdk-assets", "package-lock.json", "package.json"]


@dataclass
class AssetSteps:
    results: dict[str, subprocess.CompletedProcess[str]]
    selectors: dict[str, str]  # project -> the asset it publishes
    docker_calls: list[dict[str, Any]]
    sts_calls: list[dict[str, str]]  # the STS requests' parameters
    build_env: dict[str, str]  # the environment the build phase sees, after the install phases


@contextmanager
def recording_proxy(upstream: str) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback HTTP proxy to `upstream` that records each request's form parameters (the
    STS query API sends them as the POST body)."""
    calls: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            calls.append(dict(urllib.parse.parse_qsl(body.decode())))
            request = urllib.request.Request(upstream + self.path, data=body, method="POST",
                                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    status, headers, payload = answer.status, answer.headers, answer.read()
            except urllib.error.HTTPError as error:
                status, headers, payload = error.code, error.headers, error.read()
            self.send_response(status)
            for key in ("Content-Type",):
                if headers.get(key):
                    self.send_header(key, headers[key])
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def asset_steps(assembly, staged_publisher, aws_endpoint, tmp_path_factory) -> AssetSteps:
    """Every asset project of the pipeline, its buildspec run as synthesized against moto."""
    image = tmp_path_factory.mktemp("codebuild")
    tools = image / "bin"
    tools.mkdir()
    for name in ("node", "npm", "npx"):  # the project's Node 24 (runtime-versions asks for it)
        shutil.copy(VENV_BIN / name, tools / name)
    tool(tools, "docker", "docker")
    npm_prefix = image / "npm-global"
    cache = subprocess.run([str(VENV_BIN / "npm"), "config", "get", "cache"], capture_output=True, text=True,
                           check=True).stdout.strip()
    env = {
        "PATH": f"{tools}:{npm_prefix / 'bin'}:/usr/bin:/bin",
        "HOME": str(image),
        "CODEBUILD_SRC_DIR": str(assembly),
        # A fresh machine's global prefix; npm's cache of this machine (filled by `make setup`).
        "npm_config_prefix": str(npm_prefix),
        "npm_config_cache": cache,
        "npm_config_prefer_offline": "true",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": aws_endpoint,
        "FAKE_DOCKER_LOG": str(image / "docker-calls.jsonl"),
        **ROLE_CREDENTIALS,
        **NO_AWS_CONFIG,
    }
    # What `cdk bootstrap` made in the account: the asset bucket and repository.
    stage = entries(stage_manifests(assembly))
    for bucket in {e.destination["bucketName"] for e in stage if e.kind == "files"}:
        moto_client(aws_endpoint, "s3").create_bucket(Bucket=bucket,
                                                      CreateBucketConfiguration={"LocationConstraint": REGION})
    for repository in {e.destination["repositoryName"] for e in stage if e.kind == "dockerImages"}:
        moto_client(aws_endpoint, "ecr").create_repository(repositoryName=repository)

    projects = buildspecs(pipeline_template(assembly), "PipelineAssets")
    setup = {json.dumps({p: spec["phases"].get(p) for p in ("install", "pre_build")}) for spec in projects.values()}
    assert len(setup) == 1, "every asset project installs the same way"
    spec = next(iter(projects.values()))
    node = subprocess.run([str(tools / "node"), "--version"], capture_output=True, text=True, check=True).stdout
    assert node.startswith(f"v{spec['phases']['install']['runtime-versions']['nodejs']}.")
    dump = image / "env"
    installed = run_phases([*spec["phases"]["install"]["commands"], *spec["phases"]["pre_build"]["commands"],
                            f'env -0 > "{dump}"'], env=env, cwd=assembly)
    assert installed.returncode == 0, installed.stderr
    build_env = dict(line.split("=", 1) for line in dump.read_text().split("\0") if line)

    results, selectors = {}, {}
    with recording_proxy(aws_endpoint) as (sts, sts_calls):
        for name, project in projects.items():
            commands = project["phases"]["build"]["commands"]
            (selector,) = re.findall(r'publish "([^"]+)"', " ".join(commands))
            selectors[name] = selector
            results[name] = run_phases(commands, env={**build_env, "AWS_ENDPOINT_URL_STS": sts}, cwd=assembly)
    log = Path(env["FAKE_DOCKER_LOG"])
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return AssetSteps(results, selectors, calls, sts_calls, build_env)


def test_every_asset_step_succeeds_with_the_staged_publisher(asset_steps):
    for name, result in asset_steps.results.items():
        assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
        assert "success: Published" in result.stderr, name


def test_the_cdk_assets_cdk_pipelines_installs_still_refuses_the_manifests(assembly, asset_steps):
    # The reason for tools/asset-publisher: when a cdk-assets release reads the schema
    # aws-cdk-lib writes, this fails, and the publisher can go.
    (installed,) = [Path(d) / "cdk-assets" for d in asset_steps.build_env["PATH"].split(":")
                    if "npm-global" in d and (Path(d) / "cdk-assets").exists()]
    assert json.loads((installed.resolve().parent.parent / "package.json").read_text())["version"] == \
        CDK_PIPELINES_CDK_ASSETS
    for manifest in sorted(assembly.rglob("*.assets.json")):
        refused = subprocess.run([str(installed), "--path", str(manifest), "ls"], env=asset_steps.build_env,
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1, "cdk-assets reads the manifests now: publish with it, drop the publisher"
        assert "Cloud assembly schema version mismatch: Maximum schema version supported is 54.x.x" in refused.stderr


def test_the_asset_steps_publish_every_asset_of_the_stage_once(assembly, asset_steps):
    # Templates are not published: CloudFormation actions read them from the artifact. An
    # asset that two stacks share (same hash, same destination) is one step.
    wanted = {e.selector for e in entries(stage_manifests(assembly)) if not str(e.staged).endswith(".template.json")}
    published = list(asset_steps.selectors.values())
    assert sorted(published) == sorted(wanted)


def test_file_assets_land_in_the_bootstrap_bucket_as_staged(assembly, asset_steps, aws_endpoint):
    s3 = moto_client(aws_endpoint, "s3")
    published = set(asset_steps.selectors.values())
    files = [e for e in entries(stage_manifests(assembly)) if e.kind == "files" and e.selector in published]
    assert len(files) >= 8  # Lambda code, layers, the drill's source
    for entry in files:
        body = s3.get_object(Bucket=entry.destination["bucketName"], Key=entry.destination["objectKey"])["Body"].read()
        if entry.source["packaging"] == "zip" and entry.staged.is_dir():
            archive = zipfile.ZipFile(io.BytesIO(body))
            names = sorted(n for n in archive.namelist() if not n.endswith("/"))
            staged = sorted(p.relative_to(entry.staged).as_posix() for p in entry.staged.rglob("*") if p.is_file())
            assert names == staged, entry.asset_id
            assert all(archive.read(n) == (entry.staged / n).read_bytes() for n in names)
        else:
            assert body == entry.staged.read_bytes(), entry.asset_id


def test_docker_assets_are_built_from_their_staged_context_and_pushed_to_the_repository(
    assembly, asset_steps, aws_endpoint
):
    ecr = moto_client(aws_endpoint, "ecr")
    images = [e for e in entries(stage_manifests(assembly)) if e.kind == "dockerImages"]
    assert len(images) == 2  # the Ray Serve and Gradio images
    calls = [c["argv"] for c in asset_steps.docker_calls]
    for entry in images:
        (repository,) = ecr.describe_repositories(repositoryNames=[entry.destination["repositoryName"]])["repositories"]
        image = f"{repository['repositoryUri']}:{entry.destination['imageTag']}"
        local = f"cdkasset-{entry.asset_id}"
        (build,) = [c for c in asset_steps.docker_calls if c["argv"][:3] == ["build", "--tag", local]]
        assert Path(build["cwd"]) == entry.staged and build["argv"][-1] == "."
        assert build["argv"][build["argv"].index("--file") + 1] == entry.source.get("dockerFile", "Dockerfile") \
            if "--file" in build["argv"] else "dockerFile" not in entry.source
        assert build["argv"][build["argv"].index("--platform") + 1] == entry.source["platform"] == "linux/amd64"
        assert ["tag", local, image] in calls
        assert ["push", image] in calls
    registry = repository["repositoryUri"].split("/")[0]
    logins = [c for c in asset_steps.docker_calls if c["argv"][0] == "login"]
    assert logins and all(c["argv"] == ["login", "--username", "AWS", "--password-stdin", registry] and c["stdin"]
                          for c in logins)


def test_asset_steps_publish_as_the_bootstrap_publishing_roles(assembly, asset_steps):
    assumed = {call["RoleArn"] for call in asset_steps.sts_calls if call.get("Action") == "AssumeRole"}
    wanted = {e.destination["assumeRoleArn"].replace("${AWS::Partition}", "aws")
              for e in entries(stage_manifests(assembly))}
    assert assumed == wanted
    assert wanted == {f"arn:aws:iam::{ACCOUNT}:role/cdk-hnb659fds-{kind}-publishing-role-{ACCOUNT}-{REGION}"
                      for kind in ("file", "image")}


@pytest.mark.parametrize("status,code", [("SUCCEEDED", 0), ("FAILED", 1), ("TIMED_OUT", 1)])
def test_pipeline_drill_step_passes_only_when_the_stages_drill_build_succeeds(assembly, tmp_path, status, code):
    (project,) = [r["Properties"] for r in pipeline_template(assembly)["Resources"].values()
                  if r["Type"] == "AWS::CodeBuild::Project" and "start-build" in json.dumps(r)]
    variables = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
    # The project it starts is the one the stage creates.
    (drill,) = [r["Properties"]["Name"] for r in stage_template(assembly, "serving")["Resources"].values()
                if r["Type"] == "AWS::CodeBuild::Project"]
    assert variables == {"DRILL_PROJECT": drill}
    tools = tmp_path / "bin"
    tools.mkdir()
    tool(tools, "aws", "aws")
    log = tmp_path / "aws-calls.jsonl"
    env = {"PATH": f"{tools}:/usr/bin:/bin", "AWS_REGION": REGION, "FAKE_AWS_LOG": str(log),
           "FAKE_BUILD_STATUS": status, **ROLE_CREDENTIALS, **variables}
    spec = json.loads(project["Source"]["BuildSpec"])
    result = run_phases(spec["phases"]["build"]["commands"], env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == code, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == (
        "HA drill passed" if code == 0 else f"HA drill {status}: see the {drill} build log"
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0] == ["codebuild", "start-build", "--project-name", drill, "--query", "build.id", "--output", "text"]
    assert calls[1][:4] == ["codebuild", "batch-get-builds", "--ids", f"{drill}:0b1c2d3e-0000-4000-8000-000000000000"]


# ---------------------------------------------------------------------------------------
# The drill's CodeBuild project
# ---------------------------------------------------------------------------------------


def test_drill_sources_follow_imports_and_leave_out_the_local_backend(tmp_path):
    from stacks import drill_runner

    for path, text in {
        "local/__init__.py": "",
        "local/topology.py": "from ray_serve_ha.charts import constants\n",
        "local/stack.py": "import ray_serve_ha.charts.big\n",
        "local/drill/__init__.py": "",
        "local/drill/requirements.txt": "httpx\n",
        "local/drill/__main__.py": (
            "from typing import TYPE_CHECKING\nimport httpx\nfrom local.drill import stats\n"
            "if TYPE_CHECKING:\n    from local.drill import typing_only\n"
            "def main():\n    from local.topology import X\n    from local.stack import Y\n"
        ),
        "local/drill/stats.py": "from .plot import draw\n",
        "local/drill/plot.py": "",
        "local/drill/typing_only.py": "",
        "local/drill/matrix.py": "",
        "ray_serve_ha/__init__.py": "",
        "ray_serve_ha/charts/__init__.py": "",
        "ray_serve_ha/charts/constants.py": "",
        "ray_serve_ha/charts/big.py": "",
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert drill_runner.drill_sources(tmp_path) == [
        "local/__init__.py", "local/drill/__init__.py", "local/drill/__main__.py", "local/drill/plot.py",
        "local/drill/requirements.txt", "local/drill/stats.py", "local/topology.py", "ray_serve_ha/__init__.py",
        "ray_serve_ha/charts/__init__.py", "ray_serve_ha/charts/constants.py",
    ]


@dataclass
class DrillProject:
    buildspec: dict[str, Any]
    environment: dict[str, Any]  # name -> value, tokens as the template holds them
    source: Path  # CODEBUILD_SRC_DIR: a copy of the staged asset
    env: dict[str, str]  # the build's environment after the install phase


@pytest.fixture(scope="module")
def drill_project(assembly, tmp_path_factory) -> DrillProject:
    """The drill's CodeBuild project from the stage's serving template: its source asset
    copied from cdk.out (as CodeBuild unpacks it), a fresh venv, and the install phase."""
    template = stage_template(assembly, "serving")
    name = ha_drill_project_name(SETTINGS.cluster.name)
    (project,) = [r["Properties"] for r in template["Resources"].values()
                  if r["Type"] == "AWS::CodeBuild::Project" and r["Properties"].get("Name") == name]
    (key,) = re.findall(r"[0-9a-f]{64}\.zip", json.dumps(project["Source"]["Location"]))
    staged = staged_file_asset(assembly, key)
    work = tmp_path_factory.mktemp("drill-build")
    source = work / "src"
    shutil.copytree(staged, source)
    tools = work / "bin"
    tools.mkdir()
    tool(tools, "aws", "aws")
    venv = work / "venv"  # CodeBuild's Python (3.12 there, this machine's here), no packages
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    environment = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
    env = {
        "PATH": f"{venv / 'bin'}:{tools}:/usr/bin:/bin",
        "HOME": str(work),
        "CODEBUILD_SRC_DIR": str(source),
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "FAKE_AWS_LOG": str(work / "aws-calls.jsonl"),
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},  # this machine's package index
        **ROLE_CREDENTIALS,
        **{k: v for k, v in environment.items() if isinstance(v, str)},
    }
    spec = json.loads(project["Source"]["BuildSpec"])
    installed = run_phases(spec["phases"]["install"]["commands"], env=env, cwd=source, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return DrillProject(spec, environment, source, env)


def test_drill_asset_holds_what_the_drill_imports_and_nothing_else(drill_project):
    staged = sorted(p.relative_to(drill_project.source).as_posix()
                    for p in drill_project.source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert staged == drill_sources()
    assert DRILL_REQUIREMENTS in staged and "ray_serve_ha/charts/constants.py" in staged
    assert "local/stack.py" not in staged


def test_drill_help_runs_from_the_staged_asset(drill_project):
    result = run_phases(["python -m local.drill --help"], env=drill_project.env, cwd=drill_project.source)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m local.drill")


def run_drill_build(project: DrillProject, cluster: FakeCluster, out: str) -> subprocess.CompletedProcess[str]:
    """The build phase as synthesized against the fake cluster (its API and the serve
    endpoint on one local server); the drill command gets short timings added (a deleted pod
    is replaced at once here: no outage to wait out)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake_cluster_handler(cluster))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    commands = project.buildspec["phases"]["build"]["commands"]
    (drill,) = [c for c in commands if c.startswith("python -m local.drill ")]
    quick = " --clients 2 --before 0.5 --after 0.5 --outage 0 --recovery-timeout 20"
    commands = [c + quick if c == drill else c for c in commands]
    tokens = {k for k, v in project.environment.items() if not isinstance(v, str)}
    assert tokens == {"SERVE_URL"}  # the internal load balancer, known at deploy time
    env = {**project.env, "SERVE_URL": url, "FAKE_EKS_ENDPOINT": url}
    try:
        return run_phases([*commands, f"test -d {out}"], env=env, cwd=project.source, timeout=300)
    finally:
        server.shutdown()
        server.server_close()


def test_drill_build_deletes_the_head_through_the_eks_kubeconfig_and_passes(drill_project):
    cluster = FakeCluster()
    result = run_drill_build(drill_project, cluster, "drill-results")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((drill_project.source / "drill-results" / "drill-kubernetes-head.json").read_text())
    assert report["backend"] == "kubernetes" and report["total"]["failed"] == 0 and report["total"]["requests"] > 0
    assert cluster.deletions == [("ray-serve-llm-abcde-head-1", 0)]
    # Authenticated as `aws eks update-kubeconfig` sets it up: the token of `aws eks get-token`
    # (the serve endpoint, on the same fake server, is asked without one).
    assert set(cluster.authorizations) - {""} == {f"Bearer {EKS_TOKEN}"}
    calls = [json.loads(line) for line in Path(drill_project.env["FAKE_AWS_LOG"]).read_text().splitlines()]
    cluster_name = drill_project.environment["CLUSTER_NAME"]
    assert calls[0] == ["eks", "update-kubeconfig", "--name", cluster_name, "--region", REGION]
    assert ["--region", REGION, "eks", "get-token", "--cluster-name", cluster_name, "--output", "json"] in calls
    # What the buildspec keeps as artifacts.
    assert drill_project.buildspec["artifacts"]["files"] == ["drill-results/**/*"]
    produced = {p.name for p in (drill_project.source / "drill-results").iterdir()}
    assert produced == {"drill-kubernetes-head.json", "drill-kubernetes-head.png"}


def test_drill_build_fails_when_requests_fail(drill_project):
    cluster = FakeCluster()
    cluster.chat_status = 503
    result = run_drill_build(drill_project, cluster, "drill-results")
    assert result.returncode == 1
    assert "requests failed (--max-failed 0)" in result.stderr


# ---------------------------------------------------------------------------------------
# The Lambda handlers
# ---------------------------------------------------------------------------------------

# What the Lambda Python runtime holds besides the standard library.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")

# Runs in a Python started with -I -S (no site-packages, no current directory, no
# PYTHON* variables): the bootstrap's part of the Lambda runtime, which puts the function's
# code and the runtime's packages on sys.path, imports _HANDLER and calls it.
INVOKE = r"""
import importlib, json, os, sys, sysconfig
sys.path[:0] = [os.environ["LAMBDA_TASK_ROOT"], os.environ["LAMBDA_RUNTIME_DIR"]]
os.chdir(os.environ["LAMBDA_TASK_ROOT"])
module, function = os.environ["_HANDLER"].rsplit(".", 1)
handler = getattr(importlib.import_module(module), function)

class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    def get_remaining_time_in_millis(self):
        return 50_000

result = handler(json.loads(sys.stdin.read()), Context())
files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
paths = sysconfig.get_paths()
with open(os.environ["RESULT_FILE"], "w") as out:
    json.dump({"result": result, "files": files, "stdlib": [paths["stdlib"], paths["platstdlib"]]}, out)
"""


@dataclass(frozen=True)
class StagedFunction:
    logical_id: str
    handler: str
    code: Path  # the staged asset directory in cdk.out
    folder: str  # the project's lambda/<folder> it was staged from
    environment: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return self.folder, self.handler


def _same_tree(staged: Path, source: Path) -> bool:
    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}

    return files(staged) == files(source)


@pytest.fixture(scope="module")
def functions(assembly) -> list[StagedFunction]:
    """The stage's Python functions whose code is one of the project's lambda/ folders."""
    found = []
    for stack in ("network", "cluster", "gcs-store", "serving"):
        for name, resource in stage_template(assembly, stack)["Resources"].items():
            properties = resource["Properties"]
            if resource["Type"] != "AWS::Lambda::Function" or not properties["Runtime"].startswith("python"):
                continue
            code = staged_file_asset(assembly, properties["Code"]["S3Key"])
            folders = [f.name for f in (ROOT / "lambda").iterdir() if _same_tree(code, f)]
            if folders:
                found.append(StagedFunction(name, properties["Handler"], code, folders[0],
                                            properties.get("Environment", {}).get("Variables", {})))
    return found


@pytest.fixture(scope="module")
def lambda_runtime(tmp_path_factory) -> Path:
    """The runtime's packages (boto3, botocore and what they need), from this venv."""
    runtime = tmp_path_factory.mktemp("lambda-runtime")
    site = Path(boto3.__file__).parent.parent
    for name in RUNTIME_PACKAGES:
        path = site / name if (site / name).is_dir() else site / f"{name}.py"
        (runtime / path.name).symlink_to(path)
    return runtime


def invoke(function: StagedFunction, event: dict[str, Any], runtime: Path, tmp_path: Path,
           given: dict[str, str], extra_env: dict[str, str] | None = None) -> Any:
    """Invokes the staged handler as the Lambda runtime does, with the function's environment
    from the template; `given` supplies the variables the template fills at deploy time."""
    tokens = {k for k, v in function.environment.items() if not isinstance(v, str)}
    assert tokens == set(given), f"{function.logical_id}: deploy-time variables {tokens}"
    result_file = tmp_path / "result.json"
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(function.code),
        "LAMBDA_RUNTIME_DIR": str(runtime),
        "_HANDLER": function.handler,
        "AWS_LAMBDA_FUNCTION_NAME": function.logical_id,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.14",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "RESULT_FILE": str(result_file),
        **ROLE_CREDENTIALS,
        **NO_AWS_CONFIG,
        **{k: v for k, v in function.environment.items() if isinstance(v, str)},
        **given,
        **(extra_env or {}),
    }
    completed = subprocess.run([sys.executable, "-I", "-S", "-c", INVOKE], input=json.dumps(event), env=env,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    answer = json.loads(result_file.read_text())
    allowed = (str(function.code), str(runtime), *answer["stdlib"])
    assert [f for f in answer["files"] if not f.startswith(allowed)] == []
    assert any(f.startswith(str(function.code)) for f in answer["files"])
    return answer["result"]


def test_every_project_handler_is_staged_and_covered(functions):
    assert {f.key for f in functions} == set(SCENARIOS)
    assert {f.folder for f in functions} == {p.name for p in (ROOT / "lambda").iterdir() if p.is_dir()}


@pytest.fixture(scope="module")
def cluster_api(tmp_path_factory):
    """The fake Kubernetes API over TLS with its own CA, as the EKS endpoint is."""
    import ssl

    key, cert = _self_signed(tmp_path_factory.mktemp("cluster-ca"), "cluster-ca")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    kube = FakeKube()
    server = _serve(kube, tls=tls)
    yield kube, f"https://127.0.0.1:{server.server_address[1]}", base64.b64encode(cert.read_bytes()).decode()
    server.shutdown()
    server.server_close()


def gate_event(assembly: Path, resource_type: str, request_type: str, cluster_api) -> dict[str, Any]:
    """A CloudFormation request with the gate resource's properties from the template; the
    values CloudFormation resolves at deploy time are those of the fake cluster."""
    _, url, ca = cluster_api
    (properties,) = [r["Properties"] for r in stage_template(assembly, "serving")["Resources"].values()
                     if r["Type"] == resource_type]
    given = {"ClusterName": SETTINGS.cluster.name, "Endpoint": url, "CertificateAuthority": ca}
    resolved = {k: v if isinstance(v, str) else given.get(k, f"<{k} resolved by CloudFormation>")
                for k, v in properties.items()}
    return {
        "RequestType": request_type,
        "ResourceType": resource_type,
        "RequestId": "d3b1c2f0-0000-4000-8000-000000000000",
        "StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/serving/abc",
        "LogicalResourceId": "Readiness",
        "ResourceProperties": resolved,
        "PhysicalResourceId": f"{resolved['Namespace']}/{resolved['RayServiceName']}",
    }


def scenario_on_event(function, assembly, runtime, tmp_path, cluster_api, aws_endpoint):
    event = gate_event(assembly, "Custom::RayServiceReady", "Create", cluster_api)
    del event["PhysicalResourceId"]
    result = invoke(function, event, runtime, tmp_path, {})
    assert result["PhysicalResourceId"] == "ray-serving/ray-serve-llm"
    assert result["Data"]["StartedAt"].isdigit()


def scenario_is_complete(function, assembly, runtime, tmp_path, cluster_api, aws_endpoint):
    kube, _, _ = cluster_api
    ready = gate_event(assembly, "Custom::RayServiceReady", "Create", cluster_api)
    path = f"/apis/ray.io/v1/namespaces/{ready['ResourceProperties']['Namespace']}/rayservices/ray-serve-llm"
    kube.answers.clear()
    kube.requests.clear()
    kube.answers[path] = [(200, READY)]
    ready["Data"] = {"StartedAt": str(int(time.time()))}
    assert invoke(function, ready, runtime, tmp_path, {})["IsComplete"] is True
    assert [r["path"] for r in kube.requests] == [path]
    assert kube.requests[0]["headers"]["Authorization"].startswith("Bearer k8s-aws-v1.")
    # Teardown: the deleted RayService left no RayCluster and no load balancer.
    gone = gate_event(assembly, "Custom::RayServiceGone", "Delete", cluster_api)
    gone["Data"] = {"StartedAt": str(int(time.time()))}
    namespace = gone["ResourceProperties"]["Namespace"]
    kube.answers.clear()
    kube.requests.clear()
    kube.answers[f"/apis/ray.io/v1/namespaces/{namespace}/rayclusters"] = [(200, listing())]
    kube.answers[f"/api/v1/namespaces/{namespace}/services"] = [
        (200, listing(k8s_object("gradio", service_type="ClusterIP")))
    ]
    assert invoke(function, gone, runtime, tmp_path, {}) == {"IsComplete": True}
    assert {r["path"] for r in kube.requests} == {
        path, f"/apis/ray.io/v1/namespaces/{namespace}/rayclusters", f"/api/v1/namespaces/{namespace}/services"
    }


def scenario_probe(function, assembly, runtime, tmp_path, cluster_api, aws_endpoint):
    serve = FakeServe()
    server = start_fake_serve(serve)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        summary = invoke(function, {"source": "aws.events", "detail-type": "Scheduled Event"}, runtime, tmp_path,
                         {"SERVE_URL": url}, {"AWS_ENDPOINT_URL_CLOUDWATCH": aws_endpoint})
    finally:
        server.shutdown()
        server.server_close()
    requests = int(function.environment["PROBE_REQUESTS"])
    assert (summary["requests"], summary["failed"]) == (requests, 0)
    assert len([r for r in serve.received if r[0] == "POST"]) == requests
    cloudwatch = moto_client(aws_endpoint, "cloudwatch")
    metrics = cloudwatch.list_metrics(Namespace=function.environment["METRIC_NAMESPACE"])["Metrics"]
    dimensions = [{"Name": "Service", "Value": function.environment["SERVICE_NAME"]}]
    assert {m["MetricName"] for m in metrics if m["Dimensions"] == dimensions} == {
        "Availability", "Latency", "Requests", "FailedRequests"
    }


SCENARIOS = {
    ("rayservice_ready", "index.on_event"): scenario_on_event,
    ("rayservice_ready", "index.is_complete"): scenario_is_complete,
    ("serve_probe", "index.handler"): scenario_probe,
}


@pytest.mark.parametrize("key", sorted(SCENARIOS), ids=lambda key: f"{key[0]}:{key[1]}")
def test_handler_runs_from_its_staged_asset_with_only_the_runtime(
    key, functions, assembly, lambda_runtime, tmp_path, cluster_api, aws_endpoint
):
    matching = [f for f in functions if f.key == key]
    assert matching, f"no function runs {key}"
    for function in matching:
        SCENARIOS[key](function, assembly, lambda_runtime, tmp_path, cluster_api, aws_endpoint)
