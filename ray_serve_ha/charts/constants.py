"""Names, labels, taints and ports shared by the infrastructure and the pods.

The 2024 blueprint's most common failure was pods stuck Pending because a selector named a
label no node carried. Every label, taint and name that must agree between a NodePool or
node group (stacks/) and a pod spec (charts/) is defined here, once.
"""

from __future__ import annotations

# Label domain of this project. A DNS subdomain, as Kubernetes requires for label prefixes.
LABEL_DOMAIN = "ray-serve-ha.dev"

# Every accelerator node carries this label; Ray workers select it.
ACCELERATOR_LABEL = f"{LABEL_DOMAIN}/accelerator"
# Node role in node-groups mode ("system" for operators, the Ray head and the UI).
NODE_ROLE_LABEL = f"{LABEL_DOMAIN}/node-role"
# A batch team's nodes carry this label and a NoSchedule taint of the same key (value: the
# team name); only that team's Ray workers select and tolerate them.
TEAM_LABEL = f"{LABEL_DOMAIN}/team"
SYSTEM_NODE_ROLE = "system"

# The capacity type of a node (on-demand or spot), as each capacity mode labels it: Karpenter
# (EKS Auto Mode) with its own values, EKS managed node groups with theirs.
KARPENTER_CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
NODE_GROUP_CAPACITY_TYPE_LABEL = "eks.amazonaws.com/capacityType"
NODE_GROUP_CAPACITY_TYPES = {"on-demand": "ON_DEMAND", "spot": "SPOT"}

# Names of the accelerator capacity (Karpenter NodePool in Auto Mode, node group otherwise).
def accelerator_pool_name(accelerator: str) -> str:
    return f"ray-{accelerator}"


# With spot replicas (servingCapacityType=mixed): the accelerator's spot capacity, beside the
# on-demand pool or group above, which then holds the floor.
def accelerator_spot_pool_name(accelerator: str) -> str:
    return f"ray-{accelerator}-spot"


# EKS Auto Mode: the NodePool the Ray heads run on, and the NodeClasses of the project's pools.
HEADS_POOL = "ray-heads"
HEADS_NODE_CLASS = "ray-heads"


def accelerator_node_class(accelerator: str) -> str:
    return f"ray-{accelerator}"


# Namespaces.
SERVING_NAMESPACE = "ray-serving"
KUBERAY_NAMESPACE = "kuberay-system"
EXTERNAL_SECRETS_NAMESPACE = "external-secrets"

# Service accounts that receive AWS identities.
EXTERNAL_SECRETS_SERVICE_ACCOUNT = "external-secrets"
# node-groups mode: the Cluster Autoscaler, beside the cluster's own system components.
CLUSTER_AUTOSCALER_NAMESPACE = "kube-system"
CLUSTER_AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"

# Ports.
REDIS_PORT = 6379
SERVE_PORT = 8000
# Each Serve proxy's health route (200 while it serves, 503 while its node drains): what the
# workers' readiness probe and a load balancer's health check ask.
SERVE_PROXY_HEALTH_PATH = "/-/healthz"
DASHBOARD_PORT = 8265
# The Ray dashboard agent on every node (KubeRay's default `dashboard-agent-listen-port`).
DASHBOARD_AGENT_PORT = 52365
GCS_PORT = 6379
# Every Ray node's Prometheus metrics (Ray core, Serve, the app's own): KubeRay passes
# `--metrics-export-port=8080` and names the container port `metrics` on every Ray container;
# the CloudWatch Observability add-on scrapes it there (ray_serve_ha/charts/serve_metrics.py).
METRICS_EXPORT_PORT = 8080
GRADIO_PORT = 7860
# The service account of the Ray worker pods when they get AWS access (EKS Pod Identity):
# the compiled-artifact cache in S3.
RAY_WORKER_SERVICE_ACCOUNT = "ray-worker"
