"""How the Lambda Python runtime runs a handler, for handlers staged in cdk.out: a Python
started without site-packages (-I -S), with the function's code and the runtime's packages on
sys.path, the function's environment from the template, and a check that the handler imported
nothing but those and the standard library (tests/test_staged_lambdas.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.staged import NO_AWS_CONFIG, REGION, ROLE_CREDENTIALS

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


def same_tree(staged: Path, source: Path) -> bool:
    """Whether a staged asset directory holds exactly the files of a lambda/ folder."""
    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}

    return files(staged) == files(source)


def run_staged(function: StagedFunction, event: dict[str, Any], runtime: Path, tmp_path: Path,
               given: dict[str, str], extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the staged handler as the Lambda runtime does, with the function's environment
    from the template; `given` supplies the variables the template fills at deploy time. An
    exception fails the run, its message on stderr, as Lambda reports a failed invocation."""
    tokens = {k for k, v in function.environment.items() if not isinstance(v, str)}
    assert tokens == set(given), f"{function.logical_id}: deploy-time variables {tokens}"
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
        "RESULT_FILE": str(tmp_path / "result.json"),
        **ROLE_CREDENTIALS,
        **NO_AWS_CONFIG,
        **{k: v for k, v in function.environment.items() if isinstance(v, str)},
        **given,
        **(extra_env or {}),
    }
    return subprocess.run([sys.executable, "-I", "-S", "-c", INVOKE], input=json.dumps(event), env=env,
                          capture_output=True, text=True, timeout=60)


def invoke(function: StagedFunction, event: dict[str, Any], runtime: Path, tmp_path: Path,
           given: dict[str, str], extra_env: dict[str, str] | None = None) -> Any:
    """The handler's answer, from a run that succeeded and imported nothing but its own code,
    the standard library and the runtime's packages."""
    completed = run_staged(function, event, runtime, tmp_path, given, extra_env)
    assert completed.returncode == 0, completed.stderr
    answer = json.loads((tmp_path / "result.json").read_text())
    allowed = (str(function.code), str(runtime), *answer["stdlib"])
    assert [f for f in answer["files"] if not f.startswith(allowed)] == []
    assert any(f.startswith(str(function.code)) for f in answer["files"])
    return answer["result"]
