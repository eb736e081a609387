"""The pipeline's asset steps as CodeBuild runs them, from their staged copy in the cloud
assembly (cdk.out), with only what the service provides: the synth step's commands that
stage the asset publisher, then every asset project's buildspec as synthesized (install,
pre_build and build phases) in one shell per phase group, with Node 24 and npm, the npm
global prefix of a fresh machine, and a stand-in `docker` (no Docker daemon here) that
checks and records its calls; they publish to moto's S3, ECR and STS on loopback.

The drill's steps are run by tests/test_staged_drill.py, the Lambda handlers by
tests/test_staged_lambdas.py; all three share the assembly (tests/staged.py). Not exercised
here: CodeBuild's own image (Python 3.12 and Node from its runtime-versions; here the
project's Python and Node 24), a real Docker build and push, AWS's authorization of the
calls (see tests/test_resource_policies.py for the policies)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import threading
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

import pytest

from stacks.pipeline import CDK_PIPELINES_CDK_ASSETS, STAGED_PUBLISHER
from tests import staged
from tests.conftest import ROOT
from tests.staged import (
    ACCOUNT,
    NO_AWS_CONFIG,
    REGION,
    ROLE_CREDENTIALS,
    VENV_BIN,
    buildspecs,
    entries,
    moto_client,
    pipeline_template,
    run_phases,
    stage_manifests,
    tool,
)

pytestmark = pytest.mark.staged
# The session's cloud assembly and moto (tests/staged.py), taken in by name.
assembly, aws_endpoint = staged.assembly, staged.aws_endpoint



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
        # The CodeBuild image trusts the public CAs; where this machine reaches npm's registry
        # through a proxy of its own, Node needs that proxy's CA, which the machine names here.
        **{name: os.environ[name] for name in ("NODE_EXTRA_CA_CERTS",) if name in os.environ},
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


# ---------------------------------------------------------------------------------------
