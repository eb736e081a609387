"""The serving system's capacity on a cluster, created here or imported: in EKS Auto Mode the
accelerator's and the Ray heads' Karpenter NodePools on NodeClasses of their own; otherwise
managed node groups (a system group for the heads and an accelerator group) with the
accelerator's device plugin. What they hold and how large their disks are comes from
`ServingCapacity` (ray_serve_ha/charts/capacity.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.accelerators import Accelerator, device_plugin_values
from ray_serve_ha.charts.batch_teams import (
    AcceleratorWorkerShape,
    BatchTeam,
    team_node_group_capacity_type,
    team_node_group_labels,
    team_node_group_taints,
)
from ray_serve_ha.charts.capacity import ServingCapacity
from ray_serve_ha.charts.device_plugins import DevicePlugin
from ray_serve_ha.charts.node_pool import accelerator_node_pool, auto_mode_node_class, heads_node_pool
from ray_serve_ha.charts.node_sizing import cpu_instance_type
from ray_serve_ha.constructs.operators import install_chart


@dataclass(frozen=True)
class CapacityProps:
    """cluster: where the capacity joins. capacity: the accelerator, its instance types and
    node bounds, the disks and the system nodes. subnets: the private subnets of the nodes."""

    cluster: eks.ICluster
    capacity: ServingCapacity
    subnets: ec2.SubnetSelection


class AutoModeAcceleratorPool(Construct):
    """Karpenter NodePools next to Auto Mode's built-in pools: one for the accelerator and one
    for the Ray heads, each on a NodeClass of its own whose disk holds what its nodes keep
    (the built-in `default` NodeClass gives every node 80 GiB). The NodeClasses' nodes use a
    node role of this construct, allowed into the cluster by an EC2 access entry (as EKS makes
    for its built-in NodeClass): the same for a cluster created here and an imported one."""

    def __init__(self, scope: Construct, construct_id: str, props: CapacityProps):
        super().__init__(scope, construct_id)
        cluster, capacity, subnets = props.cluster, props.capacity, props.subnets
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
        on_demand_min, on_demand_max = capacity.on_demand_nodes()
        spot_min, spot_max = capacity.spot_nodes()
        # With spot replicas (mixed) a spot pool beside the on-demand one, on the same NodeClass.
        spot_pools = [
            accelerator_node_pool(
                capacity.accelerator,
                capacity.spot_instance_types,
                spot_max,
                upgrade_surge_nodes=spot_min,
                node_class=accelerator_class,
                capacity_type="spot",
            )
        ] if spot_max else []
        # One manifest: each NodePool after its NodeClass, both after the access entry.
        self.manifest = cluster.add_manifest(
            "AcceleratorNodePool",
            node_class(accelerator_class, disks.accelerator_gib),
            accelerator_node_pool(
                capacity.accelerator,
                capacity.instance_types,
                on_demand_max,
                upgrade_surge_nodes=on_demand_min,
                node_class=accelerator_class,
            ),
            *spot_pools,
            node_class(constants.HEADS_NODE_CLASS, disks.system.min_gib),
            heads_node_pool(capacity.system_nodes.heads, constants.HEADS_NODE_CLASS),
        )
        self.manifest.node.add_dependency(self.access_entry)


class NodeGroupCapacity(Construct):
    """Managed node groups: a system group and an accelerator group with the AL2023 Neuron or
    NVIDIA AMI, plus the device plugin that advertises the accelerator to Kubernetes."""

    def __init__(self, scope: Construct, construct_id: str, props: CapacityProps):
        super().__init__(scope, construct_id)
        cluster, capacity, subnets = props.cluster, props.capacity, props.subnets
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
        on_demand_min, on_demand_max = capacity.on_demand_nodes()
        self.accelerator = eks.Nodegroup(
            self,
            "Accelerator",
            cluster=cluster,
            instance_types=[ec2.InstanceType(t) for t in capacity.instance_types],
            ami_type=ami_type_of(accelerator),
            capacity_type=eks.CapacityType.ON_DEMAND,
            labels=accelerator.node_labels(),
            taints=[eks.TaintSpec(effect=eks.TaintEffect.NO_SCHEDULE, key=accelerator.taint_key)],
            min_size=on_demand_min,
            desired_size=on_demand_min,
            # Room for a NewCluster upgrade: the new cluster's workers (at their minimum) start
            # beside the running ones, up to their maximum; the Cluster Autoscaler adds them.
            max_size=on_demand_max + on_demand_min,
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
        with_ami_type(self.accelerator, accelerator)
        self.accelerator_spot: eks.Nodegroup | None = None
        spot_min, spot_max = capacity.spot_nodes()
        if spot_max:
            # The replicas above the on-demand floor (mixed). A SPOT managed node group spreads
            # over every instance type given (price-capacity-optimized) and has Capacity
            # Rebalancing on: EKS drains a node when EC2 recommends rebalancing or sends the
            # two-minute interruption notice, after starting its replacement.
            self.accelerator_spot = eks.Nodegroup(
                self,
                "AcceleratorSpot",
                cluster=cluster,
                instance_types=[ec2.InstanceType(t) for t in capacity.spot_instance_types],
                ami_type=ami_type_of(accelerator),
                capacity_type=eks.CapacityType.SPOT,
                labels=accelerator.node_labels(),
                taints=[eks.TaintSpec(effect=eks.TaintEffect.NO_SCHEDULE, key=accelerator.taint_key)],
                min_size=spot_min,
                desired_size=spot_min,
                max_size=spot_max + spot_min,
                max_unavailable=1,
                force_update=False,
                disk_size=capacity.disks.accelerator_gib,
                subnets=subnets,
                tags=autoscaler_node_template_tags(accelerator, capacity.spot_instance_types),
            )
            without_surge(self.accelerator_spot)
            with_ami_type(self.accelerator_spot, accelerator)
        self.device_plugin = install_device_plugin(cluster, accelerator.device_plugin)


def ami_type_of(accelerator: Accelerator) -> eks.NodegroupAmiType | None:
    """The node group's `ami_type`, where aws-cdk-lib accepts it for the accelerator's
    instance types (None: with_ami_type sets it on the resource)."""
    if not accelerator.cdk_knows_instance_family:
        return None
    return eks.NodegroupAmiType[accelerator.node_group_ami_type]


def with_ami_type(node_group: eks.Nodegroup, accelerator: Accelerator) -> None:
    """The accelerator's AMI type on the node group's CloudFormation resource, where
    aws-cdk-lib's instance-class list would refuse it as a prop (Trainium; EKS checks it)."""
    if accelerator.cdk_knows_instance_family:
        return
    cfn = node_group.node.default_child
    assert isinstance(cfn, eks.CfnNodegroup)
    # The enum member itself: jsii hands CloudFormation its value ("AL2023_x86_64_NEURON").
    cfn.add_property_override("AmiType", eks.NodegroupAmiType[accelerator.node_group_ami_type])


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


def install_device_plugin(
    cluster: eks.ICluster, plugin: DevicePlugin, scope: Construct | None = None
) -> eks.HelmChart:
    """A device plugin's one release (node-groups mode: Auto Mode brings its own), on the
    nodes of every accelerator that uses its chart, serving and batch teams' alike: it
    tolerates every team's taint. Under `scope` (another stack's construct), or else under
    the cluster."""
    return install_chart(
        cluster,
        f"{plugin.name}DevicePlugin",
        plugin.chart,
        plugin.namespace,
        values=device_plugin_values(plugin, tolerated_taint_keys=(constants.TEAM_LABEL,)),
        scope=scope,
    )


@dataclass(frozen=True)
class TeamNodeGroupProps:
    """cluster, subnets: where the nodes join. team: whose workers alone run there (its label
    and taint). disk_gib: what a node keeps (its image and Ray's spill space)."""

    cluster: eks.ICluster
    team: BatchTeam
    subnets: Sequence[ec2.ISubnet]
    disk_gib: int


def team_node_group(scope: Construct, construct_id: str, props: TeamNodeGroupProps) -> eks.Nodegroup:
    """A batch team's managed node group (node-groups mode): the team's worker shape (an
    accelerator instance type, or the smallest general-purpose type that holds a CPU worker),
    its label and taint, its capacity type, from its minimum to its maximum of workers."""
    team = props.team
    shape = team.worker_shape
    tags: dict[str, str] = {}
    if isinstance(shape, AcceleratorWorkerShape):
        instance_type = shape.instance_type
        ami_type = ami_type_of(shape.accelerator)
        # A team group scales from zero: the autoscaler must know its nodes' devices.
        tags = autoscaler_node_template_tags(shape.accelerator, (instance_type,))
    else:
        fitting = cpu_instance_type(shape.cpus, shape.memory_gib)
        if fitting is None:
            raise ValueError(
                f"team {team.name!r}: no general-purpose instance type holds a worker of {shape.cpus} CPUs and "
                f"{shape.memory_gib} GiB in node-groups mode; lower cpus or memoryGib"
            )
        instance_type = fitting
        ami_type = eks.NodegroupAmiType.AL2023_X86_64_STANDARD
    node_group = eks.Nodegroup(
        scope,
        construct_id,
        cluster=props.cluster,
        instance_types=[ec2.InstanceType(instance_type)],
        ami_type=ami_type,
        capacity_type=eks.CapacityType[team_node_group_capacity_type(team)],
        labels=team_node_group_labels(team),
        taints=[
            eks.TaintSpec(effect=eks.TaintEffect.NO_SCHEDULE, key=taint.key, value=taint.value)
            for taint in team_node_group_taints(team)
        ],
        # The cluster stack's Cluster Autoscaler adds nodes when the Ray autoscaler adds worker
        # pods, and removes them when the pods go (Auto Mode's Karpenter does both itself).
        min_size=team.min_workers,
        desired_size=team.min_workers,
        max_size=team.max_workers,
        # The team's image and Ray's spill space (ray_serve_ha/charts/capacity_plan.py; EKS's default: 20 GiB).
        disk_size=props.disk_gib,
        subnets=ec2.SubnetSelection(subnets=list(props.subnets)),
        tags=tags or None,
    )
    if isinstance(shape, AcceleratorWorkerShape):
        # Accelerator instances: no surge of extra nodes during an update.
        without_surge(node_group)
        with_ami_type(node_group, shape.accelerator)
    return node_group
