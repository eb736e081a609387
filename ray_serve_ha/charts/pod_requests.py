"""What the pods that share the Ray heads' nodes request: the serving head, a batch team's
head and the chat UI. Their charts set these requests, and the capacity plan packs the same
numbers onto the system nodes (capacity_plan.py). Plain data, without cdk8s."""

from __future__ import annotations

from ray_serve_ha.charts.ray_pods import PodResources

# The serving head runs the GCS, the dashboard and the Serve controller, and no replicas.
EKS_HEAD_RESOURCES = PodResources(cpu="2", memory="8Gi")
# A team's head runs the GCS, the dashboard, the autoscaler's view and every job's driver.
BATCH_HEAD_RESOURCES = PodResources(cpu="2", memory="8Gi")
# Each chat UI pod, and how many the UI runs.
GRADIO_CPU_REQUEST_MILLI = 250
GRADIO_MEMORY_REQUEST_MIB = 512
GRADIO_REPLICAS = 2
