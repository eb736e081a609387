"""ClusterStack: the EKS cluster, its accelerator capacity and the operators the serving
stack relies on (KubeRay, External Secrets)."""

from __future__ import annotations

import importlib
from typing import Sequence

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from charts import constants
from charts.accelerators import Accelerator
from charts.helm import HelmChartRef
from charts.node_pool import accelerator_node_pool
from stacks import helm_charts
from stacks.existing_network import ExistingNetwork
from stacks.settings import CapacitySettings, ClusterSettings, NetworkSettings, SecretsSettings

# node-groups mode: where the operators, the Ray head and the UI run.
SYSTEM_INSTANCE_TYPE = "m7i.xlarge"
# Accelerator images (Neuron DLC, vLLM) are 10+ GB; the default 20 GiB root disk fills up.
ACCELERATOR_DISK_GIB = 200


class ClusterStack(cdk.Stack):
    """An `aws_eks_v2` cluster with envelope-encrypted secrets, every control-plane log type,
    access entries for the configured admins, accelerator capacity per settings, and the
    KubeRay and External Secrets operators."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster_settings: ClusterSettings,
        capacity: CapacitySettings,
        secrets: SecretsSettings,
        vpc: ec2.IVpc | None = None,
        subnets: Sequence[ec2.ISubnet] | None = None,
        existing_network: NetworkSettings | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # An existing VPC (instead of vpc and subnets) is looked up in this stack, the first
        # that needs it; the stacks after it share what it found.
        self.existing_network: ExistingNetwork | None = None
        if existing_network is not None:
            self.existing_network = ExistingNetwork(self, "ExistingVpc", settings=existing_network)
            vpc, subnets = self.existing_network.vpc, self.existing_network.private_subnets
        if vpc is None or subnets is None:
            raise ValueError("ClusterStack needs vpc and subnets, or existing_network")
        subnet_selection = ec2.SubnetSelection(subnets=list(subnets))
        secrets_key = kms.Key(
            self,
            "SecretsKey",
            description=f"Envelope encryption of Kubernetes secrets in EKS cluster {cluster_settings.name}",
            enable_key_rotation=True,
        )
        self.cluster = eks.Cluster(
            self,
            "Cluster",
            cluster_name=cluster_settings.name,
            version=eks.KubernetesVersion.of(cluster_settings.kubernetes_version),
            kubectl_provider_options=eks.KubectlProviderOptions(
                kubectl_layer=_kubectl_layer(self, cluster_settings)
            ),
            vpc=vpc,
            vpc_subnets=[subnet_selection],
            endpoint_access=_endpoint_access(cluster_settings.endpoint_public_access_cidrs),
            secrets_encryption_key=secrets_key,
            cluster_logging=[
                eks.ClusterLoggingTypes.API,
                eks.ClusterLoggingTypes.AUDIT,
                eks.ClusterLoggingTypes.AUTHENTICATOR,
                eks.ClusterLoggingTypes.CONTROLLER_MANAGER,
                eks.ClusterLoggingTypes.SCHEDULER,
            ],
            default_capacity_type=(
                eks.DefaultCapacityType.AUTOMODE if capacity.auto_mode else eks.DefaultCapacityType.NODEGROUP
            ),
            # node-groups mode adds its own groups below; no default m5.large group.
            default_capacity=None if capacity.auto_mode else 0,
            compute=(
                eks.ComputeConfig(node_pools=["system", "general-purpose"]) if capacity.auto_mode else None
            ),
        )
        for index, arn in enumerate(cluster_settings.admin_principal_arns):
            self.cluster.grant_access(
                f"Admin{index}",
                arn,
                [
                    eks.AccessPolicy.from_access_policy_name(
                        "AmazonEKSClusterAdminPolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                    )
                ],
            )

        self.accelerator_pool: AutoModeAcceleratorPool | None = None
        self.node_groups: NodeGroupCapacity | None = None
        if capacity.auto_mode:
            self.accelerator_pool = AutoModeAcceleratorPool(
                self, "AcceleratorPool", cluster=self.cluster, capacity=capacity
            )
        else:
            self.node_groups = NodeGroupCapacity(
                self, "NodeGroups", cluster=self.cluster, capacity=capacity, subnets=subnet_selection
            )

        # Waited for: the serving stack's RayService needs a running operator.
        self.kuberay_operator = _install(
            self.cluster, "KubeRayOperator", helm_charts.KUBERAY_OPERATOR, constants.KUBERAY_NAMESPACE, wait=True
        )
        self.external_secrets = ExternalSecretsOperator(
            self, "ExternalSecrets", cluster=self.cluster, auto_mode=capacity.auto_mode
        )
        hugging_face_token = secretsmanager.Secret.from_secret_name_v2(
            self, "HuggingFaceToken", secrets.hugging_face_token_secret_name
        )
        hugging_face_token.grant_read(self.external_secrets.role)

    @property
    def cluster_security_group(self) -> ec2.ISecurityGroup:
        """The EKS-created security group on the control plane, Auto Mode and managed nodes."""
        return self.cluster.cluster_security_group


class AutoModeAcceleratorPool(Construct):
    """A Karpenter NodePool for the accelerator next to Auto Mode's built-in pools."""

    def __init__(self, scope: Construct, construct_id: str, *, cluster: eks.Cluster, capacity: CapacitySettings):
        super().__init__(scope, construct_id)
        self.manifest = cluster.add_manifest(
            "AcceleratorNodePool",
            accelerator_node_pool(capacity.accelerator, capacity.instance_types, capacity.max_nodes),
        )


class NodeGroupCapacity(Construct):
    """Managed node groups: a system group and an accelerator group with the AL2023 Neuron or
    NVIDIA AMI, plus the device plugin that advertises the accelerator to Kubernetes."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        capacity: CapacitySettings,
        subnets: ec2.SubnetSelection,
    ):
        super().__init__(scope, construct_id)
        accelerator = capacity.accelerator
        self.system = eks.Nodegroup(
            self,
            "System",
            cluster=cluster,
            instance_types=[ec2.InstanceType(SYSTEM_INSTANCE_TYPE)],
            ami_type=eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
            labels={constants.NODE_ROLE_LABEL: constants.SYSTEM_NODE_ROLE},
            min_size=2,
            desired_size=2,
            max_size=4,
            subnets=subnets,
        )
        # eks.Nodegroup rather than cluster.add_nodegroup_capacity: the latter silently adds
        # an outdated Neuron device-plugin manifest for inf/trn instance types.
        self.accelerator = eks.Nodegroup(
            self,
            "Accelerator",
            cluster=cluster,
            instance_types=[ec2.InstanceType(t) for t in capacity.instance_types],
            ami_type=eks.NodegroupAmiType[accelerator.node_group_ami_type],
            capacity_type=eks.CapacityType.ON_DEMAND,
            labels=accelerator.node_labels(),
            taints=[eks.TaintSpec(effect=eks.TaintEffect.NO_SCHEDULE, key=accelerator.taint_key)],
            min_size=capacity.min_nodes,
            desired_size=capacity.min_nodes,
            max_size=capacity.max_nodes,
            disk_size=ACCELERATOR_DISK_GIB,
            subnets=subnets,
        )
        self.device_plugin = install_device_plugin(cluster, accelerator)


def install_device_plugin(
    cluster: eks.Cluster, accelerator: Accelerator, scope: Construct | None = None
) -> eks.HelmChart:
    """The accelerator's device plugin (node-groups mode: Auto Mode brings its own), on the
    accelerator's nodes, serving and batch teams' alike: it tolerates every team's taint.
    Under `scope` (another stack's construct), or else under the cluster."""
    plugin = accelerator.device_plugin
    return _install(
        cluster,
        f"{accelerator.name.title()}DevicePlugin",
        plugin.chart,
        plugin.namespace,
        values=accelerator.device_plugin_values(tolerated_taint_keys=(constants.TEAM_LABEL,)),
        scope=scope,
    )


class ExternalSecretsOperator(Construct):
    """External Secrets Operator with an EKS Pod Identity role that starts with no
    permissions: each secret the project syncs is granted to `role` where it is defined."""

    def __init__(
        self, scope: Construct, construct_id: str, *, cluster: eks.ICluster, auto_mode: bool,
        pod_identity_agent: bool | None = None,
    ):
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            description="External Secrets Operator: reads this project's secrets only",
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
        )
        association = eks.CfnPodIdentityAssociation(
            self,
            "PodIdentity",
            cluster_name=cluster.cluster_name,
            namespace=constants.EXTERNAL_SECRETS_NAMESPACE,
            service_account=constants.EXTERNAL_SECRETS_SERVICE_ACCOUNT,
            role_arn=self.role.role_arn,
        )
        # Unset: the add-on where the nodes are managed node groups. An imported cluster
        # brings its own agent (pod_identity_agent=False): a second add-on would fail.
        if pod_identity_agent is None:
            pod_identity_agent = not auto_mode
        if pod_identity_agent:
            # Auto Mode runs the Pod Identity agent itself; managed node groups need the add-on.
            agent = eks.Addon(self, "PodIdentityAgent", cluster=cluster, addon_name="eks-pod-identity-agent")
            association.node.add_dependency(agent)
        self.chart = _install(
            cluster,
            "ExternalSecretsOperator",
            helm_charts.EXTERNAL_SECRETS,
            constants.EXTERNAL_SECRETS_NAMESPACE,
            values={"serviceAccount": {"name": constants.EXTERNAL_SECRETS_SERVICE_ACCOUNT}},
            # Its admission webhook must answer before the serving stack creates ExternalSecrets.
            wait=True,
        )
        # Pod Identity credentials are injected at pod start: associate before the pods exist.
        self.chart.node.add_dependency(association)


def _install(
    cluster: eks.Cluster,
    construct_id: str,
    ref: HelmChartRef,
    namespace: str,
    values: dict | None = None,
    wait: bool = False,
    scope: Construct | None = None,
) -> eks.HelmChart:
    options = dict(
        repository=ref.repository,
        chart=ref.chart,
        # A stable release name: what `helm list -A` shows and upgrades target.
        release=ref.chart,
        version=ref.version,
        namespace=namespace,
        create_namespace=True,
        values=values,
        wait=wait,
    )
    if scope is None:
        return cluster.add_helm_chart(construct_id, **options)
    return eks.HelmChart(scope, construct_id, cluster=cluster, **options)


def _kubectl_layer(scope: Construct, cluster_settings: ClusterSettings):
    minor = cluster_settings.kubernetes_version.split(".")[1]
    module = importlib.import_module(cluster_settings.kubectl_layer_module)
    return getattr(module, f"KubectlV{minor}Layer")(scope, "KubectlLayer")


def _endpoint_access(public_cidrs: tuple[str, ...]) -> eks.EndpointAccess:
    if not public_cidrs:
        return eks.EndpointAccess.PRIVATE
    return eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*public_cidrs)

