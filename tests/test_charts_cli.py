"""`python -m charts`: one YAML file per chart, in apply order; bad input (a table of every
case) or an `--out` that cannot be written stops it with one line and exit status 2, and
nothing written. Snapshots of the YAML come last."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from charts.__main__ import main
from ray_serve_ha.charts.accelerators import ACCELERATORS
from tests.conftest import ROOT

EKS_VALUES = [
    "--redis-endpoint", "master.gcs.example.cache.amazonaws.com",
    "--region", "us-east-2",
    "--redis-auth-secret-arn", "arn:aws:secretsmanager:us-east-2:111122223333:secret:gcs-auth-AbCdEf",
    "--hf-token-secret-name", "ray-serve-ha/hugging-face-token",
    "--ray-image", "111122223333.dkr.ecr.us-east-2.amazonaws.com/ray-serve:1",
    "--gradio-image", "111122223333.dkr.ecr.us-east-2.amazonaws.com/gradio:1",
]
PROFILES = {
    "eks-neuron": ["--profile", "eks", "--accelerator", "neuron", *EKS_VALUES],
    "eks-nvidia": ["--profile", "eks", "--accelerator", "nvidia", "--max-workers", "4", *EKS_VALUES],
    "kind": ["--profile", "kind"],
}


class YamlSnapshotExtension(SingleFileSnapshotExtension):
    file_extension = "yaml"
    _write_mode = WriteMode.TEXT


@pytest.fixture
def snapshot_yaml(snapshot):
    return snapshot.use_extension(YamlSnapshotExtension)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charts", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Each profile's files, name -> text, written once by the CLI's main()."""
    files = {}
    for profile, args in PROFILES.items():
        out = tmp_path_factory.mktemp(profile)
        assert main([*args, "--out", str(out)]) == 0
        files[profile] = {p.name: p.read_text() for p in sorted(out.iterdir())}
    return files


EKS_FILES = ["00-namespace.k8s.yaml", "01-secrets.k8s.yaml", "02-rayservice.k8s.yaml", "03-gradio.k8s.yaml"]


def test_one_file_per_chart_numbered_in_apply_order(written):
    assert {profile: list(files) for profile, files in written.items()} == {
        "eks-neuron": EKS_FILES,
        "eks-nvidia": EKS_FILES,
        "kind": [
            "00-namespace.k8s.yaml", "01-redis.k8s.yaml", "02-rayservice.k8s.yaml", "03-gradio.k8s.yaml",
            "04-query.k8s.yaml",
        ],
    }


def test_options_reach_the_manifests(written):
    rayservice = yaml.safe_load(written["eks-nvidia"]["02-rayservice.k8s.yaml"].split("\n---\n")[0])
    cluster = rayservice["spec"]["rayClusterConfig"]
    (group,) = cluster["workerGroupSpecs"]
    assert group["groupName"] == "nvidia" and group["maxReplicas"] == 4
    assert group["template"]["spec"]["containers"][0]["image"].endswith("/ray-serve:1")
    redis_address = cluster["gcsFaultToleranceOptions"]["redisAddress"]
    assert redis_address == "rediss://master.gcs.example.cache.amazonaws.com:6379"


def worker_group_and_replicas(rayservice: dict) -> tuple[int, int, int, int]:
    cluster = rayservice["spec"]["rayClusterConfig"]
    (group,) = cluster["workerGroupSpecs"]
    (application,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    (deployment,) = application["deployments"]
    scaling = deployment["autoscaling_config"]
    return group["minReplicas"], group["maxReplicas"], scaling["min_replicas"], scaling["max_replicas"]


def test_the_cli_takes_the_defaults_cdk_synth_takes(written, default_system):
    # One default, one place: what `cdk synth` builds with no settings given, the eks profile
    # writes with no options given.
    from tests.test_serving import the_rayservice

    cli = yaml.safe_load(written["eks-neuron"]["02-rayservice.k8s.yaml"].split("\n---\n")[0])
    synthesized = the_rayservice(default_system.serving)
    assert worker_group_and_replicas(cli) == worker_group_and_replicas(synthesized) == (2, 4, 2, 4)
    assert cli["spec"]["serveService"] == synthesized["spec"]["serveService"]


def test_worker_bounds_given_reach_the_manifests(tmp_path):
    assert main([*PROFILES["eks-neuron"], "--min-workers", "3", "--max-workers", "6", "--out", str(tmp_path)]) == 0
    rayservice = yaml.safe_load((tmp_path / "02-rayservice.k8s.yaml").read_text().split("\n---\n")[0])
    assert worker_group_and_replicas(rayservice) == (3, 6, 3, 6)


def test_an_api_keys_secret_locks_the_api(tmp_path):
    arn = "arn:aws:secretsmanager:us-east-2:111122223333:secret:api-keys-AbCdEf"
    assert main([*PROFILES["eks-neuron"], "--api-keys-secret-arn", arn, "--out", str(tmp_path)]) == 0
    secrets = list(yaml.safe_load_all((tmp_path / "01-secrets.k8s.yaml").read_text()))
    assert {s["metadata"]["name"] for s in secrets if s["kind"] == "ExternalSecret"} >= {"api-keys", "chat-ui-api-key"}
    assert "api_keys_file:" in (tmp_path / "02-rayservice.k8s.yaml").read_text()
    gradio = (tmp_path / "03-gradio.k8s.yaml").read_text()
    assert "OPENAI_API_KEY_FILE" in gradio and "secretName: chat-ui-api-key" in gradio


def test_what_kuberay_would_refuse_is_not_written(tmp_path, monkeypatch, capsys):
    from ray_serve_ha.charts import ray_env

    head_env = ray_env.head_env
    monkeypatch.setattr(ray_env, "head_env", lambda: {**head_env(), "RAY_REDIS_ADDRESS": "redis:6379"})
    assert main([*PROFILES["kind"], "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "python -m charts: error: RayService ray-serve-llm: cannot set `RAY_REDIS_ADDRESS` env var in head Pod when "
        "GcsFaultToleranceOptions is enabled - use GcsFaultToleranceOptions.RedisAddress instead\n"
    )
    assert not (tmp_path / "out").exists()


def test_eks_without_deploy_time_values_names_each_missing_option(tmp_path):
    out = tmp_path / "out"
    result = run_cli("--profile", "eks", "--out", str(out), "--ray-image", "ray:1")
    assert result.returncode == 2
    assert result.stderr == (
        "python -m charts: error: --profile eks needs --redis-endpoint, --redis-auth-secret-arn, "
        "--region, --gradio-image (deploy-time values the charts cannot guess)\n"
    )
    assert not out.exists()


EKS = ["--profile", "eks", *EKS_VALUES]
KIND = ["--profile", "kind"]
BAD_INPUTS = {
    "api keys on kind": (
        [*KIND, "--api-keys-secret-arn", "arn:aws:secretsmanager:us-east-2:111122223333:secret:k-AbCdEf"],
        "only for --profile eks: --api-keys-secret-arn (kind reads no AWS secrets)",
    ),
    "port": ([*EKS, "--redis-port", "70000"], "argument --redis-port: '70000' is not a TCP port (1-65535)"),
    "region": ([*EKS, "--region", "mars-1"], "argument --region: 'mars-1' is not an AWS region such as us-east-2"),
    "accelerator": (
        [*EKS, "--accelerator", "tpu"],
        f"argument --accelerator: invalid choice: 'tpu' (choose from {', '.join(map(repr, sorted(ACCELERATORS)))})",
    ),
    "instance type of another accelerator": (
        [*EKS, "--instance-type", "g6e.xlarge"],
        "instance types ['g6e.xlarge'] must be a non-empty list of neuron instance types: inf2.xlarge, "
        "inf2.8xlarge, inf2.24xlarge, inf2.48xlarge",
    ),
    "instance type too small for the model": (
        [*EKS, "--instance-type", "inf2.xlarge"],
        "--instance-type inf2.xlarge: cannot serve the model: inf2.xlarge has 16 GiB of host memory; a worker "
        "there may request 12 GiB, too little to load mistralai/Mistral-7B-Instruct-v0.2's ≈14.5 GB of bf16 weights",
    ),
    "workers": (
        [*EKS, "--min-workers", "1"],
        "workers min_replicas=1: at least 2 worker pods are needed to keep two Serve replicas on two nodes",
    ),
    "workers not a number": ([*EKS, "--max-workers", "2.5"], "argument --max-workers: '2.5' is not a whole number"),
    "model id": (
        [*EKS, "--model-id", "not a model"],
        "argument --model-id: 'not a model' is not a Hugging Face model id, <organization>/<model>",
    ),
    "empty model id": ([*EKS, "--model-id", ""], "argument --model-id: '' is not a Hugging Face model id, "
                       "<organization>/<model>"),
    "empty image": ([*KIND, "--ray-image", ""], "argument --ray-image: '' is not an image reference"),
    "image with a space": ([*KIND, "--gradio-image", "has space"],
                           "argument --gradio-image: 'has space' is not an image reference"),
    "model id on kind": (
        [*KIND, "--model-id", "mistralai/Mistral-7B-Instruct-v0.2"],
        "only for --profile eks: --model-id (kind serves the tiny model built into the CPU image)",
    ),
    "AWS options on kind": (
        [*KIND, "--region", "us-east-2", "--accelerator", "nvidia", "--redis-port", "6380"],
        "only for --profile eks: --accelerator (kind runs two CPU workers), --redis-port (kind runs its own "
        "Redis), --region (kind reads no AWS secrets)",
    ),
    "no profile": (["--ray-image", "r:1"], "the following arguments are required: --profile"),
}


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_exit_2_and_nothing_written(capsys, tmp_path, args, message):
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"python -m charts: error: {message}\n"
    assert not out.exists()


def test_an_empty_out_is_refused_not_read_as_the_current_directory(capsys):
    assert main([*KIND, "--out", ""]) == 2
    assert capsys.readouterr().err == (
        "python -m charts: error: argument --out: an empty path is not a directory to write to\n"
    )


def test_an_out_path_that_is_a_file_is_refused(capsys, tmp_path):
    out = tmp_path / "file"
    out.write_text("keep me")
    assert main([*KIND, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"python -m charts: error: --out {out}: exists and is not a directory\n"
    assert out.read_text() == "keep me"


def test_an_out_path_that_cannot_be_created_is_refused(capsys, tmp_path):
    (tmp_path / "file").write_text("keep me")
    out = tmp_path / "file" / "k8s"
    assert main([*KIND, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"python -m charts: error: --out {out}: cannot write there (Not a directory)\n"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_file_name_taken_by_a_folder_is_refused_before_anything_is_written(capsys, tmp_path):
    out = tmp_path / "k8s"
    (out / "02-rayservice.k8s.yaml").mkdir(parents=True)
    assert main([*KIND, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"python -m charts: error: --out {out}: 02-rayservice.k8s.yaml there is not a file\n"
    )
    assert [p.name for p in out.iterdir()] == ["02-rayservice.k8s.yaml"]


def test_a_second_run_replaces_the_files_and_leaves_nothing_partial(tmp_path):
    out = tmp_path / "k8s"
    assert main([*KIND, "--out", str(out)]) == 0
    first = {p.name: p.read_text() for p in out.iterdir()}
    assert main([*KIND, "--out", str(out)]) == 0
    assert {p.name: p.read_text() for p in out.iterdir()} == first


def test_kind_defaults_to_the_projects_cpu_image_and_says_how_to_build_it(capsys, tmp_path, written):
    rayservice = yaml.safe_load(written["kind"]["02-rayservice.k8s.yaml"].split("\n---\n")[0])
    images = {
        c["image"]
        for group in [rayservice["spec"]["rayClusterConfig"]["headGroupSpec"],
                      *rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
        for c in group["template"]["spec"]["containers"]
    }
    # The project's CPU image has the Serve app and the tiny model; Ray's own image has neither.
    assert images == {"ray-serve-ha/ray-serve-cpu:local"}
    assert main([*KIND, "--out", str(tmp_path / "k8s")]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "build ray-serve-ha/ray-serve-cpu:local: docker build -f images/ray-serve/Dockerfile.cpu "
        "-t ray-serve-ha/ray-serve-cpu:local images/ray-serve",
        "build ray-serve-ha/gradio:local: docker build -t ray-serve-ha/gradio:local images/gradio",
        "load the images into kind: kind load docker-image ray-serve-ha/ray-serve-cpu:local ray-serve-ha/gradio:local",
    ]


def test_a_bad_option_from_the_shell_gives_no_traceback(tmp_path):
    result = run_cli("--profile", "kind", "--out", str(tmp_path / "out"), "--gradio-image", "has space")
    assert result.returncode == 2
    assert result.stderr == (
        "python -m charts: error: argument --gradio-image: 'has space' is not an image reference\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("profile", PROFILES)
def test_yaml_snapshot(written, snapshot_yaml, profile):
    # Each file under a comment with its name, as `kubectl apply -f DIR` would read them.
    assert "---\n".join(f"# {name}\n{text}" for name, text in written[profile].items()) == snapshot_yaml
