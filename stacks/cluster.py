"""ClusterStack: the EKS cluster, its accelerator capacity and the operators the serving
stack relies on (KubeRay, External Secrets)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import Accelerator
from ray_serve_ha.charts.capacity import ServingCapacity
from ray_serve_ha.charts.helm import HelmChartRef
from ray_serve_ha.charts.node_pool import accelerator_node_pool, auto_mode_node_class, heads_node_pool
from stacks import helm_charts
from stacks.existing_network import ExistingNetwork
from stacks.settings import ClusterSettings, NetworkSettings, SecretsSettings


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
        capacity: ServingCapacity,
        secrets: SecretsSettings,
        vpc: ec2.IVpc | None = None,
        subnets: Sequence[ec2.ISubnet] | None = None,
        existing_network: NetworkSettings | None = None,
        **kwargs: Any,
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
        cluster = eks.Cluster(
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
            cluster.grant_access(
                f"Admin{index}",
                arn,
                [
                    eks.AccessPolicy.from_access_policy_name(
                        "AmazonEKSClusterAdminPolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                    )
                ],
            )
        # aws-cdk-lib's Python `Cluster` implements ICluster through jsii but its class lacks
        # the interface's `kubectl_provider_options` member, so mypy does not match it.
        self.cluster: eks.ICluster = cluster  # type: ignore[assignment]

        add_ons = ServingAddOns(self, cluster=self.cluster, capacity=capacity, secrets=secrets,
                                subnets=subnet_selection)
        self.accelerator_pool = add_ons.accelerator_pool
        self.node_groups = add_ons.node_groups
        self.kuberay_operator = add_ons.kuberay_operator
        self.external_secrets = add_ons.external_secrets
        self.cluster_autoscaler: ClusterAutoscaler | None = None
        if not capacity.auto_mode:
            # Managed node groups do not follow pending pods: without an autoscaler a
            # NewCluster upgrade's second set of workers (and batch teams' workers) would wait
            # for nodes forever.
            self.cluster_autoscaler = ClusterAutoscaler(
                self,
                "ClusterAutoscaler",
                cluster=self.cluster,
                cluster_settings=cluster_settings,
                pod_identity_agent=self.external_secrets.pod_identity_agent,
            )

    @property
    def cluster_security_group(self) -> ec2.ISecurityGroup:
        """The EKS-created security group on the control plane, Auto Mode and managed nodes."""
        return self.cluster.cluster_security_group


class ServingAddOns:
    """What the serving system adds to a cluster, created here or imported: the accelerator
    capacity (an Auto Mode NodePool or managed node groups), the KubeRay operator (waited for:
    the RayService needs it running) and External Secrets with read access to the Hugging
    Face token. Not a construct of its own: each part keeps its id directly in `stack`."""

    def __init__(
        self,
        stack: Construct,
        *,
        cluster: eks.ICluster,
        capacity: ServingCapacity,
        secrets: SecretsSettings,
        subnets: ec2.SubnetSelection,
        pod_identity_agent: bool | None = None,
    ) -> None:
        self.accelerator_pool: AutoModeAcceleratorPool | None = None
        self.node_groups: NodeGroupCapacity | None = None
        if capacity.auto_mode:
            self.accelerator_pool = AutoModeAcceleratorPool(
                stack, "AcceleratorPool", cluster=cluster, capacity=capacity, subnets=subnets
            )
        else:
            self.node_groups = NodeGroupCapacity(
                stack, "NodeGroups", cluster=cluster, capacity=capacity, subnets=subnets
            )
        self.kuberay_operator = _install(
            cluster, "KubeRayOperator", helm_charts.KUBERAY_OPERATOR, constants.KUBERAY_NAMESPACE, wait=True
        )
        self.external_secrets = ExternalSecretsOperator(
            stack, "ExternalSecrets", cluster=cluster, auto_mode=capacity.auto_mode,
            pod_identity_agent=pod_identity_agent,
        )
        hugging_face_token = secretsmanager.Secret.from_secret_name_v2(
            stack, "HuggingFaceToken", secrets.hugging_face_token_secret_name
        )
        hugging_face_token.grant_read(self.external_secrets.role)


class AutoModeAcceleratorPool(Construct):
    """Karpenter NodePools next to Auto Mode's built-in pools: one for the accelerator and one
    for the Ray heads, each on a NodeClass of its own whose disk holds what its nodes keep
    (the built-in `default` NodeClass gives every node 80 GiB). The NodeClasses' nodes use a
    node role of this construct, allowed into the cluster by an EC2 access entry (as EKS makes
    for its built-in NodeClass): the same for a cluster created here and an imported one."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        capacity: ServingCapacity,
        subnets: ec2.SubnetSelection,
    ):
        super().__init__(scope, construct_id)
        # What EKS documents for an Auto Mode node role.
        self.node_role = iam.Role(
            self,
            "NodeRole",
            description="EKS Auto Mode nodes of the accelerator and Ray head NodeClasses",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonEKSWorkerNodeMinimalPolicy"),
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonEC2ContainerRegistryPullOnly"),
            ],
        )
        self.access_entry = eks.AccessEntry(
            self,
            "NodeAccess",
            cluster=cluster,
            principal=self.node_role.role_arn,
            access_entry_type=eks.AccessEntryType.EC2,
            access_policies=[
                eks.AccessPolicy.from_access_policy_name(
                    "AmazonEKSAutoNodePolicy", access_scope_type=eks.AccessScopeType.CLUSTER
                )
            ],
        )
        subnet_ids = [subnet.subnet_id for subnet in subnets.subnets or []]
        disks = capacity.disks

        def node_class(name: str, disk_gib: int) -> dict[str, Any]:
            return auto_mode_node_class(
                name,
                role=self.node_role.role_name,
                subnet_ids=subnet_ids,
                security_group_ids=[cluster.cluster_security_group_id],
                disk_gib=disk_gib,
            )

        accelerator_class = constants.accelerator_node_class(capacity.accelerator.name)
        # One manifest: each NodePool after its NodeClass, both after the access entry.
        self.manifest = cluster.add_manifest(
            "AcceleratorNodePool",
            node_class(accelerator_class, disks.accelerator_gib),
            accelerator_node_pool(
                capacity.accelerator,
                capacity.instance_types,
                capacity.max_nodes,
                upgrade_surge_nodes=capacity.min_nodes,
                node_class=accelerator_class,
            ),
            node_class(constants.HEADS_NODE_CLASS, disks.system.min_gib),
            heads_node_pool(capacity.system_nodes.heads, constants.HEADS_NODE_CLASS),
        )
        self.manifest.node.add_dependency(self.access_entry)


class NodeGroupCapacity(Construct):
    """Managed node groups: a system group and an accelerator group with the AL2023 Neuron or
    NVIDIA AMI, plus the device plugin that advertises the accelerator to Kubernetes."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        capacity: ServingCapacity,
        subnets: ec2.SubnetSelection,
    ):
        super().__init__(scope, construct_id)
        accelerator = capacity.accelerator
        system = capacity.system_nodes
        # Sized from the pods it holds: the serving head, an upgrade's second head, one head per
        # batch team, the UI and the operators (ray_serve_ha/charts/capacity_plan.py); the Cluster Autoscaler
        # adds the upgrade's node. Its disk holds every head's image (EKS's default: 20 GiB).
        self.system = eks.Nodegroup(
            self,
            "System",
            cluster=cluster,
            instance_types=[ec2.InstanceType(system.instance_type)],
            ami_type=eks.NodegroupAmiType.AL2023_X86_64_STANDARD,
            labels={constants.NODE_ROLE_LABEL: constants.SYSTEM_NODE_ROLE},
            min_size=system.min_nodes,
            desired_size=system.min_nodes,
            max_size=system.max_nodes,
            disk_size=capacity.disks.system.min_gib,
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
            # Room for a NewCluster upgrade: the new cluster's workers (at their minimum) start
            # beside the running ones, up to their maximum; the Cluster Autoscaler adds them.
            max_size=capacity.max_nodes + capacity.min_nodes,
            # A managed node group update (new AMI) drains one node at a time (max_unavailable)
            # and waits on the workers' PodDisruptionBudget: never both replicas. Not forced: a
            # forced update terminates a node whose worker the PDB protects (after EKS's 15-minute
            # drain time-out, which a Neuron replica that compiles can outlast); unforced, the
            # update fails instead and can be retried once the other replica serves.
            max_unavailable=1,
            force_update=False,
            # Its image, the weights and compile scratch (ray_serve_ha/charts/capacity_plan.py).
            disk_size=capacity.disks.accelerator_gib,
            subnets=subnets,
            tags=autoscaler_node_template_tags(accelerator, capacity.instance_types),
        )
        without_surge(self.accelerator)
        self.device_plugin = install_device_plugin(cluster, accelerator)


class ClusterAutoscaler(Construct):
    """The Cluster Autoscaler (pinned chart, image matching the cluster's minor) for managed
    node groups, found by the tags EKS puts on their Auto Scaling groups, with an EKS Pod
    Identity role that may resize only this cluster's groups."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        cluster_settings: ClusterSettings,
        pod_identity_agent: eks.Addon | None,
    ):
        super().__init__(scope, construct_id)
        name = self.cluster_name = cluster_settings.name
        self.role = iam.Role(
            self,
            "Role",
            description=f"Cluster Autoscaler of EKS cluster {name}: resizes its managed node groups",
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
        )
        # Reads have no resource-level permissions (AWS documents "*" for them).
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=[
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                ],
                resources=["*"],
            )
        )
        # Labels and taints of a group scaled to zero, from its managed node group.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["eks:DescribeNodegroup"],
                resources=[
                    cdk.Stack.of(self).format_arn(
                        service="eks", resource="nodegroup", resource_name=f"{name}/*",
                    )
                ],
            )
        )
        # Changes only to groups EKS tagged as this cluster's.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                resources=["*"],
                conditions={"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{name}": "owned"}},
            )
        )
        association = eks.CfnPodIdentityAssociation(
            self,
            "PodIdentity",
            cluster_name=cluster.cluster_name,
            namespace=constants.CLUSTER_AUTOSCALER_NAMESPACE,
            service_account=constants.CLUSTER_AUTOSCALER_SERVICE_ACCOUNT,
            role_arn=self.role.role_arn,
        )
        if pod_identity_agent is not None:
            association.node.add_dependency(pod_identity_agent)
        self.chart = _install(
            cluster,
            "ClusterAutoscaler",
            helm_charts.CLUSTER_AUTOSCALER,
            constants.CLUSTER_AUTOSCALER_NAMESPACE,
            values=cluster_autoscaler_values(cluster_settings, cdk.Stack.of(self).region),
        )
        # Pod Identity credentials are injected at pod start: associate before the pod exists.
        self.chart.node.add_dependency(association)


def without_surge(node_group: eks.Nodegroup) -> None:
    """Updates replace a node by terminating it first (EKS's MINIMAL update strategy). The
    DEFAULT strategy first adds up to twice as many nodes as the group has AZs (six in three
    AZs), whatever max_unavailable says: accelerator instances that default quotas and regional
    capacity often refuse, and that sit idle while the old nodes drain. MINIMAL never runs more
    nodes than the group's size; a replica is down while its node is replaced, as with DEFAULT
    (the drain evicts it either way). aws_eks_v2.Nodegroup has no property for it yet."""
    cfn = node_group.node.default_child
    assert isinstance(cfn, eks.CfnNodegroup)
    cfn.add_property_override("UpdateConfig.UpdateStrategy", "MINIMAL")


def autoscaler_node_template_tags(accelerator: Accelerator, instance_types: Sequence[str]) -> dict[str, str]:
    """Tags that tell the Cluster Autoscaler a node group's nodes carry the accelerator's
    devices before any node exists (it reads a managed node group's own tags): without them
    it cannot scale a group up from zero for a pod that requests `aws.amazon.com/neuron`,
    which its instance table does not know (it knows NVIDIA GPUs)."""
    devices = min(accelerator.instance_types[t].devices for t in instance_types)
    return {f"k8s.io/cluster-autoscaler/node-template/resources/{accelerator.device_resource}": str(devices)}


def cluster_autoscaler_values(cluster_settings: ClusterSettings, region: str) -> dict[str, Any]:
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        # Finds the groups tagged k8s.io/cluster-autoscaler/enabled and
        # k8s.io/cluster-autoscaler/<cluster> (EKS tags every managed node group so).
        "autoDiscovery": {"clusterName": cluster_settings.name},
        "image": {"tag": helm_charts.CLUSTER_AUTOSCALER_IMAGE_TAGS[cluster_settings.kubernetes_version]},
        "rbac": {"serviceAccount": {"name": constants.CLUSTER_AUTOSCALER_SERVICE_ACCOUNT}},
        # On the system nodes, never on the accelerator or team nodes it scales.
        "nodeSelector": {constants.NODE_ROLE_LABEL: constants.SYSTEM_NODE_ROLE},
        "extraArgs": {
            # Several accelerator instance types: add the node that wastes least.
            "expander": "least-waste",
            # Replicas spread over zones: keep same-shaped groups balanced.
            "balance-similar-node-groups": "true",
        },
    }


def install_device_plugin(
    cluster: eks.ICluster, accelerator: Accelerator, scope: Construct | None = None
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
    ) -> None:
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
        self.pod_identity_agent: eks.Addon | None = None
        if pod_identity_agent is None:
            pod_identity_agent = not auto_mode
        if pod_identity_agent:
            # Auto Mode runs the Pod Identity agent itself; managed node groups need the add-on.
            self.pod_identity_agent = eks.Addon(
                self, "PodIdentityAgent", cluster=cluster, addon_name="eks-pod-identity-agent"
            )
            association.node.add_dependency(self.pod_identity_agent)
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
    cluster: eks.ICluster,
    construct_id: str,
    ref: HelmChartRef,
    namespace: str,
    values: dict[str, Any] | None = None,
    wait: bool = False,
    scope: Construct | None = None,
) -> eks.HelmChart:
    options: dict[str, Any] = dict(
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


def _kubectl_layer(scope: Construct, cluster_settings: ClusterSettings) -> lambda_.ILayerVersion:
    minor = cluster_settings.kubernetes_version.split(".")[1]
    module = importlib.import_module(cluster_settings.kubectl_layer_module)
    layer: lambda_.ILayerVersion = getattr(module, f"KubectlV{minor}Layer")(scope, "KubectlLayer")
    return layer


def _endpoint_access(public_cidrs: tuple[str, ...]) -> eks.EndpointAccess:
    if not public_cidrs:
        return eks.EndpointAccess.PRIVATE
    return eks.EndpointAccess.PUBLIC_AND_PRIVATE.only_from(*public_cidrs)

