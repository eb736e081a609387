"""The HA serving parts in an EKS cluster you already run (KubeRay and External Secrets
installed): the GCS store, the fault-tolerant RayService with its readiness gate, and the
availability probe and alarm. `pip install git+<this repository>`, then, e.g.:

    cdk synth --app "python examples/existing_cluster.py" -c account=111122223333 -c region=us-east-2 \
      -c vpcId=vpc-… -c clusterName=… -c clusterEndpoint=https://… -c clusterCertificateAuthorityData=… \
      -c clusterSecurityGroupId=sg-… -c kubectlProviderServiceToken=arn:… -c kubectlProviderRoleArn=arn:… \
      -c externalSecretsRoleArn=arn:… -c rayImage=<uri> -c gradioImage=<uri>
"""

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam

import ray_serve_ha.constructs as ha
from ray_serve_ha.charts.accelerators import ACCELERATORS
from ray_serve_ha.charts.profiles import EksDeployment


def build(app: cdk.App) -> cdk.Stack:
    c = app.node.get_context
    stack = cdk.Stack(app, "RayServeHaParts", env=cdk.Environment(account=c("account"), region=c("region")))
    vpc = ec2.Vpc.from_lookup(stack, "Vpc", vpc_id=c("vpcId"))
    cluster = eks.Cluster.from_cluster_attributes(
        stack, "Cluster", cluster_name=c("clusterName"), vpc=vpc, cluster_endpoint=c("clusterEndpoint"),
        cluster_certificate_authority_data=c("clusterCertificateAuthorityData"),
        cluster_security_group_id=c("clusterSecurityGroupId"),
        kubectl_provider=eks.KubectlProvider.from_kubectl_provider_attributes(
            stack, "Kubectl", service_token=c("kubectlProviderServiceToken"),
            role=iam.Role.from_role_arn(stack, "KubectlRole", c("kubectlProviderRoleArn"))))
    where = dict(vpc=vpc, subnets=vpc.private_subnets)
    secrets_role = iam.Role.from_role_arn(stack, "ExternalSecretsRole", c("externalSecretsRoleArn"))
    store = ha.GcsStore(stack, "GcsStore", ha.GcsStoreProps(
        **where, client_security_group=cluster.cluster_security_group, secret_readers=[secrets_role]))
    neuron = ACCELERATORS["neuron"]
    service = ha.FaultTolerantRayService(stack, "RayService", ha.FaultTolerantRayServiceProps(
        cluster=cluster, **where, cluster_security_group=cluster.cluster_security_group,
        deployment=EksDeployment(
            accelerator=neuron, instance_types=(neuron.default_instance_type,), region=stack.region,
            redis_endpoint=store.primary_endpoint, redis_port=store.port,
            gcs_store_auth_secret=store.auth_token.secret_arn,
            ray_image=c("rayImage"), gradio_image=c("gradioImage"))))
    probe_access = ha.HelperSecurityGroup(stack, "ProbeAccess", ha.HelperSecurityGroupProps(
        vpc=vpc, cluster_security_group=cluster.cluster_security_group, description="Ray Serve availability probe",
        reach=ha.HelperReach(serve_load_balancer=True, aws_apis=True)))
    probe = ha.ServeAvailabilityProbe(stack, "Probe", ha.ServeAvailabilityProbeProps(
        service_name=f"{c('clusterName')}/{service.rayservice_name}", serve_url=service.serve_url, **where,
        security_group=probe_access.security_group))
    ha.ServeAvailabilityAlarm(stack, "Availability", ha.ServeAvailabilityAlarmProps(probe=probe))
    return stack


if __name__ == "__main__":
    app = cdk.App()
    build(app)
    app.synth()
