"""The KubeRay operator's rules run at synth: what the constructs embed passes them, and a
RayService or team RayCluster that breaks one fails `cdk synth` through app.py's error path
with the operator's message: one message, exit status 1, no stack trace, no template."""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest

from app import main
from ray_serve_ha.charts import batch, ray_env
from tests.conftest import context

TEAM = {"name": "forecasting", "namespace": "team-forecasting", "cpus": 4, "memoryGib": 16}


def synth(tmp_path: Path, **overrides) -> int:
    return main(cdk.App(context=context(**overrides), outdir=str(tmp_path)))


def templates(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.template.json"))


def test_the_projects_rayservice_and_team_clusters_pass(tmp_path, capsys):
    assert synth(tmp_path, batchTeams=json.dumps([TEAM])) == 0
    assert capsys.readouterr().err == ""
    assert "ray-serve-ha-serving.template.json" in templates(tmp_path)
    assert "ray-serve-ha-batch.template.json" in templates(tmp_path)


def test_a_rayservice_the_operator_would_refuse_fails_synth_with_its_message(tmp_path, capsys, monkeypatch):
    # The head gets the password as a variable as well as through gcsFaultToleranceOptions.
    head_env = ray_env.head_env
    monkeypatch.setattr(ray_env, "head_env", lambda: {**head_env(), "REDIS_PASSWORD": "from-the-env"})
    assert synth(tmp_path) == 1
    assert capsys.readouterr().err == (
        "error: the app failed its validations (1 problem); nothing was synthesized:\n"
        "  - ray-serve-ha-serving/Default: RayService ray-serve-llm: cannot set `REDIS_PASSWORD` env var in head Pod "
        "when GcsFaultToleranceOptions is enabled - use GcsFaultToleranceOptions.RedisPassword instead\n"
    )
    assert templates(tmp_path) == []


def test_a_team_raycluster_the_operator_would_refuse_fails_synth_with_its_message(tmp_path, capsys, monkeypatch):
    head_group = batch.head_group

    def with_redis_username(*args, **kwargs):
        group = head_group(*args, **kwargs)
        group["rayStartParams"]["redis-username"] = "default"
        return group

    monkeypatch.setattr(batch, "head_group", with_redis_username)
    assert synth(tmp_path, batchTeams=json.dumps([TEAM])) == 1
    assert capsys.readouterr().err == (
        "error: the app failed its validations (1 problem); nothing was synthesized:\n"
        "  - ray-serve-ha-batch/ForecastingRayCluster: RayCluster forecasting-ray: cannot set redis username in "
        "rayStartParams or environment variables - use GcsFaultToleranceOptions.RedisUsername instead\n"
    )
    assert templates(tmp_path) == []


def test_other_errors_of_the_synth_are_not_taken_for_validations():
    from app import validation_problems

    assert validation_problems(RuntimeError("Error: something else")) is None
    text = "ValidationFailedWithErrors: Validation failed with the following errors:\n  [a/b] first\n  [c] second"
    assert validation_problems(RuntimeError(text)) == ["a/b: first", "c: second"]


@pytest.mark.parametrize("kind", ["RayService", "RayCluster", "ConfigMap"])
def test_the_rules_look_at_rayservices_and_rayclusters_only(kind):
    from ray_serve_ha.charts.kuberay_rules import manifest_violations

    spec = {"headGroupSpec": {"rayStartParams": {"redis-username": "x"}, "template": {"spec": {"containers": []}}}}
    manifest = {"kind": kind, "metadata": {"name": "n"},
                "spec": {"rayClusterConfig": spec} if kind == "RayService" else spec}
    found = manifest_violations([manifest])
    assert len(found) == (0 if kind == "ConfigMap" else 1)
    assert all(message.startswith(f"{kind} n: cannot set redis username") for message in found)
