"""GradioChart: the UI's Deployment and Service, and every cdk8s-plus default we override."""

from __future__ import annotations

from dataclasses import replace

import cdk8s
import pytest

from ray_serve_ha.charts.gradio import GRADIO_LABELS, GradioChart, GradioInputs
from ray_serve_ha.charts.profiles import eks_charts
from ray_serve_ha.charts.ray_pods import SecretKeyRef
from ray_serve_ha.charts.serve_service import openai_base_url
from tests.chart_inputs import example_eks_deployment
from tests.crd_schemas import schema_errors

BASE_URL = openai_base_url("ray-serve-llm", "ray-serving")
INPUTS = GradioInputs(image="111122223333.dkr.ecr.us-east-2.amazonaws.com/gradio:1", openai_base_url=BASE_URL,
                      model_id="mistralai/Mistral-7B-Instruct-v0.2",
                      api_key=SecretKeyRef(name="ui-key", key="api-key"))


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    return {o["kind"]: o for o in GradioChart(cdk8s.App(), "gradio", inputs=INPUTS).to_json()}


@pytest.fixture(scope="module")
def pod(objects) -> dict:
    return objects["Deployment"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (container,) = pod["containers"]
    return container


def test_two_replicas_rolled_without_losing_one(objects):
    spec = objects["Deployment"]["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_talks_to_the_serve_service_openai_endpoint(container):
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OPENAI_BASE_URL"] == "http://ray-serve-llm-serve-svc.ray-serving.svc.cluster.local:8000/v1"
    assert env["MODEL_NAME"] == "mistralai/Mistral-7B-Instruct-v0.2"
    assert env["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0"
    assert env["GRADIO_SERVER_PORT"] == "7860"


@pytest.mark.parametrize("accelerator,word", [("neuron", "Inferentia2"), ("nvidia", "GPU")])
def test_the_ui_names_the_device_from_the_accelerator_table(accelerator, word):
    charts = eks_charts(cdk8s.App(), example_eks_deployment(accelerator))
    (deployment,) = [o for o in charts.gradio.to_json() if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "UI_DEVICE", "value": word} in container["env"]


def test_without_a_device_the_ui_is_told_none(container):
    assert "UI_DEVICE" not in {e["name"] for e in container["env"]}


def test_readiness_and_startup_probe_the_ui_over_http(container):
    readiness = container["readinessProbe"]
    assert readiness["httpGet"] == {"path": "/", "port": 7860, "scheme": "HTTP"}
    # cdk8s-plus's default startup probe (TCP, 3 x 10 s) is replaced by a two-minute HTTP one.
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/" and "tcpSocket" not in startup
    assert startup["periodSeconds"] * startup["failureThreshold"] == 120


def test_resources_are_ours_not_cdk8s_plus_defaults(container):
    # cdk8s-plus would set cpu 1000m/1500m and memory 512Mi/2048Mi.
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1000m", "memory": "1024Mi"},
    }


def test_runs_as_user_1000_with_a_read_only_root_and_no_privileges(pod, container):
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["automountServiceAccountToken"] is False
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False and context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_gradio_writes_to_an_empty_dir_not_the_root_filesystem(pod, container):
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "256Mi"}
    temp_dir = next(e["value"] for e in container["env"] if e["name"] == "GRADIO_TEMP_DIR")
    assert temp_dir.startswith("/tmp/")


def test_the_api_key_is_a_file_from_a_secret_volume_that_the_kubelet_updates(pod, container):
    """Mounted whole, read-only: the kubelet swaps a rotated key in (a subPath mount or an
    environment variable would keep the old key until the pod restarts)."""
    env = {e["name"]: e for e in container["env"]}
    assert "OPENAI_API_KEY" not in env
    assert not [e for e in container["env"] if "valueFrom" in e]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/ray-serve-ha/api-key"]
    assert mount["readOnly"] is True and "subPath" not in mount and "subPathExpr" not in mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    # Only the UI's key, readable by the pod's group (the UI's fsGroup) and nobody else.
    assert volume["secret"] == {"secretName": "ui-key", "items": [{"key": "api-key", "path": "api-key"}],
                                "defaultMode": 0o440}
    assert pod["securityContext"]["fsGroup"] == 1000
    assert env["OPENAI_API_KEY_FILE"] == {"name": "OPENAI_API_KEY_FILE", "value": "/etc/ray-serve-ha/api-key/api-key"}


def test_the_deployment_with_its_key_volume_is_valid_against_the_kubernetes_schema(objects):
    assert schema_errors(objects["Deployment"]) == []


def test_without_a_key_the_ui_gets_no_key_file():
    charts = GradioChart(cdk8s.App(), "gradio", inputs=replace(INPUTS, api_key=None)).to_json()
    (deployment,) = [o for o in charts if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert "OPENAI_API_KEY_FILE" not in {e["name"] for e in pod["containers"][0]["env"]}


def test_kind_loaded_images_are_not_pulled_again(container):
    assert container["imagePullPolicy"] == "IfNotPresent"  # cdk8s-plus default: Always


def test_selectors_use_stable_labels_not_the_construct_path_hash(objects):
    deployment, service = objects["Deployment"], objects["Service"]
    assert deployment["spec"]["selector"] == {"matchLabels": GRADIO_LABELS}
    assert deployment["spec"]["template"]["metadata"]["labels"].items() >= GRADIO_LABELS.items()
    assert service["spec"]["selector"] == GRADIO_LABELS


def test_replicas_prefer_distinct_nodes_without_requiring_them(pod):
    anti = pod["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"] == {"matchLabels": GRADIO_LABELS}


def test_service_exposes_the_ui_port(objects):
    service = objects["Service"]
    assert service["metadata"]["name"] == "gradio"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 7860, "targetPort": 7860}]
