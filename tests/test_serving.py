"""ServingStack: the charts embedded in the templates, fed with tokens, ordered for deploy
and for a safe teardown, and valid against the real schemas."""

from __future__ import annotations

import itertools
import json
import re

import pytest
import yaml

from ray_serve_ha.charts import constants
from tests.crd_schemas import schema_errors

CHART_ORDER = ["NamespaceChart", "SecretsChart", "RayserviceChart", "GradioChart"]


def chart_resources(template) -> dict[str, tuple[str, dict]]:
    """Chart construct id -> (logical id, resource)."""
    found = {}
    for logical_id, resource in template.find_resources("Custom::AWSCDK-EKS-KubernetesResource").items():
        for chart in CHART_ORDER:
            if logical_id.startswith(chart):
                found[chart] = (logical_id, resource)
    return found


def tokens(value) -> list:
    """The CloudFormation intrinsics inside a manifest property."""
    if isinstance(value, dict) and "Fn::Join" in value:
        return [part for part in value["Fn::Join"][1] if not isinstance(part, str)]
    return []


def render(value) -> str:
    """A manifest property as text, each token replaced by `token-<n>` (n: its position
    among the tokens), so the objects can be parsed and schema-checked."""
    if isinstance(value, str):
        return value
    separator, parts = value["Fn::Join"]
    rendered, count = [], 0
    for part in parts:
        if isinstance(part, str):
            rendered.append(part)
        else:
            rendered.append(f"token-{count}")
            count += 1
    return separator.join(rendered)


def objects(template, chart: str) -> list[dict]:
    _, resource = chart_resources(template)[chart]
    return json.loads(render(resource["Properties"]["Manifest"]))


def the_rayservice(template) -> dict:
    (rayservice,) = [o for o in objects(template, "RayserviceChart") if o["kind"] == "RayService"]
    return rayservice


@pytest.fixture(
    scope="module", params=["default_system", "node_groups_nvidia", "in_existing_vpc", "in_existing_cluster"]
)
def serving(request):
    return request.getfixturevalue(request.param).serving


def test_charts_apply_in_order_namespace_secrets_rayservice_ui(serving):
    charts = chart_resources(serving)
    assert sorted(charts) == sorted(CHART_ORDER)
    for before, after in itertools.pairwise(CHART_ORDER):
        assert charts[before][0] in charts[after][1]["DependsOn"]


def test_every_embedded_object_is_valid_against_the_real_schemas(serving):
    embedded = [o for chart in CHART_ORDER for o in objects(serving, chart)]
    kinds = {o["kind"] for o in embedded}
    assert {
        "Namespace",
        "SecretStore",
        "ExternalSecret",
        "RayService",
        "PodDisruptionBudget",
        "Deployment",
        "Service",
    } <= kinds
    errors = {f"{o['kind']}/{o['metadata']['name']}": schema_errors(o) for o in embedded}
    assert {name: e for name, e in errors.items() if e} == {}


def test_rayservice_reaches_the_elasticache_primary_over_tls_by_token(default_system):
    _, resource = chart_resources(default_system.serving)["RayserviceChart"]
    manifest_tokens = tokens(resource["Properties"]["Manifest"])
    rayservice = the_rayservice(default_system.serving)
    address = rayservice["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["redisAddress"]
    match = re.fullmatch(r"rediss://token-(\d+):token-(\d+)", address)
    assert match, address
    host, port = (manifest_tokens[int(i)] for i in match.groups())
    # Both come from the GCS store stack's replication group, not from a copied string.
    assert "PrimaryEndPointAddress" in json.dumps(host) and "gcs-store" in json.dumps(host)
    assert "PrimaryEndPointPort" in json.dumps(port) and "gcs-store" in json.dumps(port)


def test_secrets_are_synced_from_the_auth_token_secret_and_the_hugging_face_secret(default_system):
    _, resource = chart_resources(default_system.serving)["SecretsChart"]
    manifest_tokens = json.dumps(tokens(resource["Properties"]["Manifest"]))
    assert "AuthToken" in manifest_tokens and "gcs-store" in manifest_tokens
    keys = {
        o["metadata"]["name"]: o["spec"]["data"][0]["remoteRef"]["key"]
        for o in objects(default_system.serving, "SecretsChart")
        if o["kind"] == "ExternalSecret"
    }
    assert "ray-serve-ha/hugging-face-token" in keys.values()
    assert any(key.startswith("token-") for key in keys.values())


def test_images_are_the_docker_image_assets(default_system):
    serving = default_system.serving
    _, resource = chart_resources(serving)["RayserviceChart"]
    manifest_tokens = tokens(resource["Properties"]["Manifest"])
    rayservice = the_rayservice(serving)
    spec = rayservice["spec"]["rayClusterConfig"]
    containers = spec["headGroupSpec"]["template"]["spec"]["containers"] + [
        c for group in spec["workerGroupSpecs"] for c in group["template"]["spec"]["containers"]
    ]
    for container in containers:
        image = container["image"]
        assert re.fullmatch(r"token-\d+", image), image
        assert "container-assets" in json.dumps(manifest_tokens[int(image.split("-")[1])])
    ray_asset = default_system.system.serving.ray_image
    assert ray_asset.node.find_child("Staging") is not None


def test_serving_stack_is_deleted_before_the_gcs_store_and_the_cluster(default_system):
    system = default_system.system
    dependencies = {s.stack_name for s in system.serving.dependencies}
    assert {system.gcs_store.stack_name, system.cluster.stack_name} <= dependencies


def test_rayservice_serves_the_configured_model(default_system):
    rayservice = the_rayservice(default_system.serving)
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert config["applications"][0]["args"]["model_id"] == "mistralai/Mistral-7B-Instruct-v0.2"
    assert rayservice["metadata"]["namespace"] == constants.SERVING_NAMESPACE


def test_no_secret_value_is_embedded(default_system):
    text = json.dumps(default_system.serving.to_json())
    assert not re.search(r"hf_[A-Za-z0-9]{30,}", text)
    for chart in CHART_ORDER:
        for obj in objects(default_system.serving, chart):
            assert not (obj["kind"] == "Secret" and (obj.get("data") or obj.get("stringData"))), obj


def test_neuron_workers_share_compiled_artifacts_through_a_private_bucket(default_system):
    serving = default_system.serving
    (bucket_id, bucket), = serving.find_resources("AWS::S3::Bucket").items()
    properties = bucket["Properties"]
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
    }
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    # TLS only; and emptied and deleted with the stack (a re-creatable cache).
    (policy,) = serving.find_resources("AWS::S3::BucketPolicy").values()
    assert {"Action": "s3:*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}, "Effect": "Deny",
            "Principal": {"AWS": "*"}} in [
        {k: v for k, v in s.items() if k != "Resource"} for s in policy["Properties"]["PolicyDocument"]["Statement"]]
    assert bucket["DeletionPolicy"] == "Delete"
    assert serving.find_resources("Custom::S3AutoDeleteObjects")

    # The serve config points the engine at the bucket's prefix (the engine adds a folder
    # per model, SDK, tensor parallel degree and sequence settings).
    (manifest,) = [
        r["Properties"]["Manifest"] for k, r in chart_resources(serving).values() if k.startswith("Rayservice")
    ]
    rayservice = the_rayservice(serving)
    args = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert re.fullmatch(r"s3://token-\d+/neuron-compiled-artifacts", args["neuron_compiled_artifacts"])
    assert {"Ref": bucket_id} in tokens(manifest)

    # The worker pods run as the service account that Pod Identity maps to the cache role.
    (worker_group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    account = worker_group["template"]["spec"]["serviceAccountName"]
    assert "serviceAccountName" not in rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    (service_account,) = [o for o in objects(serving, "RayserviceChart") if o["kind"] == "ServiceAccount"]
    assert (service_account["metadata"]["name"], service_account["metadata"]["namespace"]) == (account, "ray-serving")
    (association_id, association), = serving.find_resources("AWS::EKS::PodIdentityAssociation").items()
    assert (association["Properties"]["Namespace"], association["Properties"]["ServiceAccount"]) == (
        "ray-serving",
        account,
    )
    _, rayservice_resource = chart_resources(serving)["RayserviceChart"]
    assert association_id in rayservice_resource["DependsOn"]

    # That role may list, read and write under the prefix, nothing else.
    role_id = association["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = [s for p in serving.find_resources("AWS::IAM::Policy").values()
                  if {"Ref": role_id} in p["Properties"]["Roles"]
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    assert statements == [
        {"Action": "s3:ListBucket", "Condition": {"StringLike": {"s3:prefix": ["neuron-compiled-artifacts/*"]}},
         "Effect": "Allow", "Resource": {"Fn::GetAtt": [bucket_id, "Arn"]}},
        {"Action": ["s3:GetObject", "s3:PutObject"], "Effect": "Allow",
         "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/neuron-compiled-artifacts/*"]]}},
    ]


def test_gpu_workers_have_no_compile_cache(node_groups_nvidia):
    serving = node_groups_nvidia.serving
    assert serving.find_resources("AWS::S3::Bucket") == {}
    assert serving.find_resources("AWS::EKS::PodIdentityAssociation") == {}
    rayservice = the_rayservice(serving)
    args = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert "neuron_compiled_artifacts" not in args
    (worker_group,) = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert "serviceAccountName" not in worker_group["template"]["spec"]
