"""GradioChart: the chat UI, a client of the serve Service's OpenAI-compatible API.

Built with cdk8s-plus, whose defaults are overridden on purpose wherever they do not fit
(each override is asserted in tests/test_charts_gradio.py): its resources (1-1.5 CPU,
0.5-2 GiB) are sized for nothing in particular, its startup probe gives 30 s, its
hash-derived selector label changes with the construct path, and `Always` pull does not
work with images loaded into kind. Its read-only root filesystem and non-root user are
kept: Gradio gets an emptyDir where it writes instead.

The UI's API key is a file: its Secret mounted as a volume, which the kubelet updates in
place when External Secrets writes a rotated key, and which the UI reads at each request.
"""

from __future__ import annotations

from dataclasses import dataclass

import cdk8s
import cdk8s_plus_28 as kplus
from constructs import Construct

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.pod_requests import GRADIO_CPU_REQUEST_MILLI, GRADIO_MEMORY_REQUEST_MIB, GRADIO_REPLICAS
from ray_serve_ha.charts.ray_pods import SecretKeyRef

GRADIO_NAME = "gradio"
GRADIO_LABELS = {"app.kubernetes.io/name": GRADIO_NAME, "app.kubernetes.io/part-of": "ray-serve-ha"}
# The UI image's unprivileged user (images/gradio).
GRADIO_USER = 1000
# Gradio writes uploads and cached files here; the root filesystem stays read-only.
TMP_PATH = "/tmp"
GRADIO_TEMP_DIR = f"{TMP_PATH}/gradio"
# What each UI pod requests, and how many (the system nodes are sized with them: capacity_plan.py).
CPU_REQUEST_MILLI = GRADIO_CPU_REQUEST_MILLI
MEMORY_REQUEST_MIB = GRADIO_MEMORY_REQUEST_MIB
DEFAULT_REPLICAS = GRADIO_REPLICAS
# Where the UI's key Secret is mounted; the UI reads the file named OPENAI_API_KEY_FILE there.
API_KEY_MOUNT_DIR = "/etc/ray-serve-ha/api-key"
# Readable by the UI's group (the pod's fsGroup) only.
API_KEY_FILE_MODE = 0o440


@dataclass(frozen=True)
class GradioInputs:
    image: str
    # The serve Service's OpenAI-compatible API (`rayservice.openai_base_url`).
    openai_base_url: str
    # The model the UI asks for (the Serve app's `model_id`).
    model_id: str
    # What serves the model, in the UI's title (the accelerator table's `ui_device_word`);
    # None: not named (the CPU engine of the kind profile).
    device: str | None = None
    namespace: str = constants.SERVING_NAMESPACE
    replicas: int = DEFAULT_REPLICAS
    # The Secret key holding the UI's own API key, mounted as its OPENAI_API_KEY_FILE; None: the
    # API is open (kind).
    api_key: SecretKeyRef | None = None


def api_key_file(key: SecretKeyRef) -> str:
    """The path of the UI's key file in its pod (its OPENAI_API_KEY_FILE)."""
    return f"{API_KEY_MOUNT_DIR}/{key.key}"


class GradioChart(cdk8s.Chart):
    def __init__(self, scope: Construct, construct_id: str, *, inputs: GradioInputs) -> None:
        super().__init__(scope, construct_id, namespace=inputs.namespace, disable_resource_name_hashes=True)
        tmp = kplus.Volume.from_empty_dir(self, "tmp", "tmp", size_limit=cdk8s.Size.mebibytes(256))
        volume_mounts = [kplus.VolumeMount(path=TMP_PATH, volume=tmp)]
        key_env: dict[str, kplus.EnvValue] = {}
        if inputs.api_key is not None:
            volume_mounts.append(_api_key_mount(self, inputs.api_key))
            key_env["OPENAI_API_KEY_FILE"] = kplus.EnvValue.from_value(api_key_file(inputs.api_key))
        self.deployment = kplus.Deployment(
            self,
            "deployment",
            metadata=cdk8s.ApiObjectMetadata(name=GRADIO_NAME, labels=GRADIO_LABELS),
            replicas=inputs.replicas,
            # Our own stable labels, not cdk8s's construct-path hash (selectors are immutable).
            select=False,
            # No Kubernetes API calls from the UI.
            automount_service_account_token=False,
            security_context=kplus.PodSecurityContextProps(
                ensure_non_root=True, user=GRADIO_USER, group=GRADIO_USER, fs_group=GRADIO_USER
            ),
            # A new pod is ready before an old one goes: the UI never drops to one replica less.
            strategy=kplus.DeploymentStrategy.rolling_update(
                max_surge=kplus.PercentOrAbsolute.absolute(1),
                max_unavailable=kplus.PercentOrAbsolute.absolute(0),
            ),
            containers=[
                kplus.ContainerProps(
                    name=GRADIO_NAME,
                    image=inputs.image,
                    # Image tags are immutable here (ECR asset hashes, kind-loaded images).
                    image_pull_policy=kplus.ImagePullPolicy.IF_NOT_PRESENT,
                    port_number=constants.GRADIO_PORT,
                    env_variables={
                        "OPENAI_BASE_URL": kplus.EnvValue.from_value(inputs.openai_base_url),
                        "MODEL_NAME": kplus.EnvValue.from_value(inputs.model_id),
                        # The nodes have no internet access.
                        "GRADIO_ANALYTICS_ENABLED": kplus.EnvValue.from_value("False"),
                        # Reachable through the Service, not only from inside the pod.
                        "GRADIO_SERVER_NAME": kplus.EnvValue.from_value("0.0.0.0"),
                        "GRADIO_SERVER_PORT": kplus.EnvValue.from_value(str(constants.GRADIO_PORT)),
                        "GRADIO_TEMP_DIR": kplus.EnvValue.from_value(GRADIO_TEMP_DIR),
                        **({"UI_DEVICE": kplus.EnvValue.from_value(inputs.device)} if inputs.device else {}),
                        **key_env,
                    },
                    resources=kplus.ContainerResources(
                        cpu=kplus.CpuResources(
                            request=kplus.Cpu.millis(CPU_REQUEST_MILLI), limit=kplus.Cpu.millis(1000)
                        ),
                        memory=kplus.MemoryResources(
                            request=cdk8s.Size.mebibytes(MEMORY_REQUEST_MIB), limit=cdk8s.Size.mebibytes(1024)
                        ),
                    ),
                    security_context=kplus.ContainerSecurityContextProps(
                        ensure_non_root=True,
                        user=GRADIO_USER,
                        group=GRADIO_USER,
                        read_only_root_filesystem=True,
                        allow_privilege_escalation=False,
                        privileged=False,
                        capabilities=kplus.ContainerSecutiryContextCapabilities(drop=[kplus.Capability.ALL]),
                        seccomp_profile=kplus.SeccompProfile(type=kplus.SeccompProfileType.RUNTIME_DEFAULT),
                    ),
                    # Importing Gradio takes longer than cdk8s-plus's 30 s startup default on a
                    # busy node: allow two minutes, then hand over to the readiness probe.
                    startup=kplus.Probe.from_http_get(
                        "/", port=constants.GRADIO_PORT, period_seconds=cdk8s.Duration.seconds(2),
                        failure_threshold=60,
                    ),
                    readiness=kplus.Probe.from_http_get(
                        "/", port=constants.GRADIO_PORT, period_seconds=cdk8s.Duration.seconds(5),
                        timeout_seconds=cdk8s.Duration.seconds(2), failure_threshold=3,
                    ),
                    volume_mounts=volume_mounts,
                )
            ],
        )
        for key, value in GRADIO_LABELS.items():
            self.deployment.pod_metadata.add_label(key, value)
        self.deployment.select(kplus.LabelSelector.of(labels=GRADIO_LABELS))
        # Preferred, not required: two replicas on one node beat one replica Pending (kind has
        # one node; cdk8s-plus's `spread` would require distinct nodes and zones).
        peers = kplus.Pods.select(self, "peers", labels=GRADIO_LABELS)
        self.deployment.scheduling.separate(peers, topology=kplus.Topology.HOSTNAME, weight=100)
        self.service = kplus.Service(
            self,
            "service",
            metadata=cdk8s.ApiObjectMetadata(name=GRADIO_NAME, labels=GRADIO_LABELS),
            ports=[kplus.ServicePort(name="http", port=constants.GRADIO_PORT, target_port=constants.GRADIO_PORT)],
        )
        for key, value in GRADIO_LABELS.items():
            self.service.select_label(key, value)


def _api_key_mount(chart: cdk8s.Chart, key: SecretKeyRef) -> kplus.VolumeMount:
    """The Secret External Secrets keeps, as a read-only volume: the kubelet swaps in a new
    version at its periodic sync of the pod (about a minute), and the UI reads the file at each
    request, so a rotated key needs no restart. A whole-volume mount on purpose: a subPath
    mount is never updated, and neither is an environment variable."""
    secret = kplus.Secret.from_secret_name(chart, "api-key-secret", key.name)
    volume = kplus.Volume.from_secret(
        chart, "api-key", secret, name="api-key", default_mode=API_KEY_FILE_MODE,
        items={key.key: kplus.PathMapping(path=key.key)},
    )
    return kplus.VolumeMount(path=API_KEY_MOUNT_DIR, volume=volume, read_only=True)
