"""External Secrets wiring: Secrets Manager -> Kubernetes Secret -> secretKeyRef, and no
secret value in any eks manifest."""

from __future__ import annotations

import copy

import cdk8s
import pytest

from ray_serve_ha.charts.accelerators import ACCELERATORS
from ray_serve_ha.charts.gradio import API_KEY_MOUNT_DIR
from ray_serve_ha.charts.profiles import EksDeployment, eks_charts
from ray_serve_ha.charts.rayservice import API_KEYS_MOUNT_DIR
from ray_serve_ha.charts.secrets import SecretsChart, SecretsInputs
from tests.chart_inputs import API_KEYS_ARN
from tests.crd_schemas import schema_errors

AUTH_TOKEN_ARN = "arn:aws:secretsmanager:us-east-2:111122223333:secret:gcs-auth-AbCdEf"
HF_SECRET = "ray-serve-ha/hugging-face-token"
INPUTS = SecretsInputs(region="us-east-2", gcs_store_auth_secret=AUTH_TOKEN_ARN, hugging_face_token_secret=HF_SECRET)


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    chart = SecretsChart(cdk8s.App(), "secrets", inputs=INPUTS)
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in chart.to_json()}


@pytest.fixture(scope="module", params=list(ACCELERATORS))
def eks_objects(request) -> list[dict]:
    charts = eks_charts(
        cdk8s.App(),
        EksDeployment(
            accelerator=ACCELERATORS[request.param],
            instance_types=(ACCELERATORS[request.param].default_instance_type,),
            region="us-east-2",
            redis_endpoint="master.gcs.example.cache.amazonaws.com",
            redis_port=6379,
            gcs_store_auth_secret=AUTH_TOKEN_ARN,
            hugging_face_token_secret=HF_SECRET,
            ray_image="111122223333.dkr.ecr.us-east-2.amazonaws.com/ray-serve:1",
            gradio_image="111122223333.dkr.ecr.us-east-2.amazonaws.com/gradio:1",
            api_keys_secret=API_KEYS_ARN,
        ),
    )
    return [o for chart in charts.in_apply_order() for o in chart.to_json()]


def test_secret_store_uses_the_operators_pod_identity(objects):
    store = objects["SecretStore/aws-secrets-manager"]
    assert store["metadata"]["namespace"] == "ray-serving"
    # No `auth` block: the AWS SDK default chain, i.e. the operator's EKS Pod Identity.
    assert store["spec"] == {"provider": {"aws": {"service": "SecretsManager", "region": "us-east-2"}}}


@pytest.mark.parametrize(
    ("name", "remote_key", "secret_key"),
    [("gcs-store-auth", AUTH_TOKEN_ARN, "password"), ("hugging-face-token", HF_SECRET, "HF_TOKEN")],
)
def test_external_secret_syncs_one_key_from_the_store(objects, name, remote_key, secret_key):
    spec = objects[f"ExternalSecret/{name}"]["spec"]
    assert spec["secretStoreRef"] == {"kind": "SecretStore", "name": "aws-secrets-manager"}
    assert spec["target"] == {"name": name, "creationPolicy": "Owner"}
    assert spec["data"] == [{"secretKey": secret_key, "remoteRef": {"key": remote_key}}]
    assert spec["refreshInterval"] == "1h"


def secret_refs(value) -> list[dict]:
    """Every secretKeyRef anywhere in a manifest."""
    if isinstance(value, dict):
        found = [value["secretKeyRef"]] if "secretKeyRef" in value else []
        return found + [ref for v in value.values() for ref in secret_refs(v)]
    if isinstance(value, list):
        return [ref for v in value for ref in secret_refs(v)]
    return []


def test_every_secret_reference_is_to_a_key_an_external_secret_writes(eks_objects):
    written = {
        (o["spec"]["target"]["name"], d["secretKey"])
        for o in eks_objects
        if o["kind"] == "ExternalSecret"
        for d in o["spec"]["data"]
    }
    referenced = {(ref["name"], ref["key"]) for o in eks_objects for ref in secret_refs(o)}
    assert referenced == {("gcs-store-auth", "password"), ("hugging-face-token", "HF_TOKEN")}
    # The API keys (the replicas' and the UI's own) are mounted as volumes, not read from env (next test).
    mounted = {(name, key) for o in eks_objects for name, key in secret_volume_refs(o)}
    assert mounted == {("api-keys", "api-keys.json"), ("chat-ui-api-key", "api-key")}
    assert written == referenced | mounted


def secret_volume_refs(value) -> list[tuple[str, str]]:
    """(Secret, key) of every key a Secret volume anywhere in a manifest projects."""
    if isinstance(value, dict):
        secret = value.get("secret")
        found = ([(secret["secretName"], item["key"]) for item in secret.get("items", [])]
                 if isinstance(secret, dict) and "secretName" in secret else [])
        return found + [ref for v in value.values() for ref in secret_volume_refs(v)]
    if isinstance(value, list):
        return [ref for v in value for ref in secret_volume_refs(v)]
    return []


def test_the_api_keys_reach_the_replicas_as_a_file_that_follows_secrets_manager_within_a_minute(eks_objects):
    """The whole JSON of keys, refreshed every 30 s, mounted as a Secret volume (updated in
    place by the kubelet, unlike an env var or a subPath) where the serve config reads it;
    the UI gets only its own entry, as often. Both valid against External Secrets' own schema."""
    by_name = {o["metadata"]["name"]: o for o in eks_objects if o["kind"] == "ExternalSecret"}
    keys, ui = by_name["api-keys"], by_name["chat-ui-api-key"]
    assert keys["spec"]["refreshInterval"] == ui["spec"]["refreshInterval"] == "30s"
    assert keys["spec"]["data"] == [{"secretKey": "api-keys.json", "remoteRef": {"key": API_KEYS_ARN}}]
    assert ui["spec"]["data"] == [
        {"secretKey": "api-key", "remoteRef": {"key": API_KEYS_ARN, "property": "chat-ui"}}]
    for manifest in (keys, ui):
        assert schema_errors(manifest) == []
    (rayservice,) = [o for o in eks_objects if o["kind"] == "RayService"]
    assert f"api_keys_file: {API_KEYS_MOUNT_DIR}/api-keys.json" in rayservice["spec"]["serveConfigV2"]
    for group in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        (ray,) = [c for c in pod["containers"] if c["name"] == "ray-worker"]
        (mount,) = [m for m in ray["volumeMounts"] if m["name"] == "api-keys"]
        assert mount == {"name": "api-keys", "mountPath": API_KEYS_MOUNT_DIR, "readOnly": True}
        (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
        assert volume["secret"]["secretName"] == "api-keys"
        env = {e["name"]: e for e in ray["env"]}
        assert env["API_LIMITS_REDIS_ADDRESS"]["value"] == "rediss://master.gcs.example.cache.amazonaws.com:6379"
        assert env["API_LIMITS_REDIS_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "gcs-store-auth", "key": "password"}}


def test_the_ui_reads_its_own_key_from_the_mounted_secret_that_external_secrets_writes(eks_objects):
    (ui,) = [o for o in eks_objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "gradio"]
    pod = ui["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "OPENAI_API_KEY" not in env and not secret_refs(container)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == API_KEY_MOUNT_DIR]
    assert "subPath" not in mount and mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "chat-ui-api-key"
    assert env["OPENAI_API_KEY_FILE"]["value"] == f"{API_KEY_MOUNT_DIR}/api-key"


def env_vars(value) -> list[dict]:
    if isinstance(value, dict):
        found = list(value["env"]) if isinstance(value.get("env"), list) else []
        return found + [e for v in value.values() for e in env_vars(v)]
    if isinstance(value, list):
        return [e for v in value for e in env_vars(v)]
    return []


SENSITIVE_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY")


def names_a_file(env: dict) -> bool:
    """A variable that names the file a secret is in (RAY_AUTH_TOKEN_PATH: a mounted volume's
    path) carries a reference, not the value."""
    return env["name"].upper().endswith(("_PATH", "_FILE")) and str(env.get("value", "")).startswith("/")


def literal_secrets(objects: list[dict]) -> list[str]:
    """Places where a manifest would carry a secret value instead of a reference."""
    found = [f"Secret/{o['metadata']['name']}" for o in objects if o["kind"] == "Secret"]
    found += [
        f"env {e['name']}"
        for o in objects
        for e in env_vars(o)
        if any(word in e["name"].upper() for word in SENSITIVE_WORDS) and "value" in e and not names_a_file(e)
    ]
    for o in objects:
        if o["kind"] == "RayService":
            options = o["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
            found += [f"gcsFaultToleranceOptions.{k}.value" for k in ("redisPassword", "redisUsername")
                      if "value" in options.get(k, {})]
    return found


def test_no_secret_value_in_any_eks_manifest(eks_objects):
    assert literal_secrets(eks_objects) == []


def test_a_literal_secret_value_would_be_caught(eks_objects):
    bad = copy.deepcopy(eks_objects)
    (rayservice,) = [o for o in bad if o["kind"] == "RayService"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    cluster["gcsFaultToleranceOptions"]["redisPassword"] = {"value": "hunter2"}
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    worker["env"] = [e for e in worker["env"] if e["name"] != "HF_TOKEN"] + [
        {"name": "HF_TOKEN", "value": "hf_x"}, {"name": "API_KEY_FILE", "value": "sk-x"}]  # a value, not a path
    bad.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "leak"}, "stringData": {"k": "v"}})
    assert literal_secrets(bad) == ["Secret/leak", "env HF_TOKEN", "env API_KEY_FILE",
                                    "gcsFaultToleranceOptions.redisPassword.value"]
