"""The HA drill as AWS runs it, from its staged copy in the cloud assembly (cdk.out):

- the pipeline's post-deploy drill step: its buildspec with a stand-in `aws` that answers
  as CodeBuild would for the stage's drill project;
- the drill's CodeBuild project: a fresh venv in a copy of its staged source asset, the
  buildspec's install step, `python -m local.drill --help`, and its build commands against
  the fake Kubernetes API of tests/test_drill.py, with a stand-in `aws` for the EKS commands.

Not exercised here: CodeBuild's own image (Python 3.12 from its runtime-versions; here the
project's Python).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from stacks.drill_runner import DRILL_REQUIREMENTS, drill_sources, ha_drill_project_name
from tests import staged
from tests.fakes.aws import TOKEN as EKS_TOKEN
from tests.fakes.drill_cluster import FakeCluster
from tests.fakes.drill_cluster import api_handler as fake_cluster_handler
from tests.staged import (
    REGION,
    ROLE_CREDENTIALS,
    SETTINGS,
    pipeline_template,
    run_phases,
    stage_template,
    staged_file_asset,
    tool,
)

pytestmark = pytest.mark.staged
# The session's cloud assembly (tests/staged.py), taken in by name.
assembly = staged.assembly


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


DRILL_API_KEY = "sk-drill-" + "k" * 40


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
    # The internal load balancer, known at deploy time, and the drill's API key, which
    # CodeBuild reads from the API keys secret (`<arn>:ha-drill`) when the build starts.
    assert tokens == {"SERVE_URL", "OPENAI_API_KEY"}
    env = {**project.env, "SERVE_URL": url, "FAKE_EKS_ENDPOINT": url, "OPENAI_API_KEY": DRILL_API_KEY}
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
    # Authenticated as `aws eks update-kubeconfig` sets it up: the token of `aws eks get-token`;
    # the serve endpoint, on the same fake server, with the drill's own API key.
    assert set(cluster.authorizations) == {f"Bearer {EKS_TOKEN}", f"Bearer {DRILL_API_KEY}"}
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
