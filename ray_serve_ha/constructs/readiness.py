"""The readiness gate: `cdk deploy` returns only once the RayService serves its current spec
with nothing pending and (given the API keys) its OpenAI API answers the gate's own key, or
fails with its conditions and recent events, or the API's last answer, when it does not in
time. It waits again on every deploy that changes the RayService manifest."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import custom_resources as cr
from constructs import Construct

from ray_serve_ha.charts import constants
from ray_serve_ha.charts.key_propagation import API_KEY_PROPAGATION_S
from ray_serve_ha.charts.rbac import RAYSERVICE_READERS_GROUP, rayservice_reader_rbac
from ray_serve_ha.charts.serve_service import serve_service_name
from ray_serve_ha.constructs.api_keys import READINESS_GATE, ApiKeys
from ray_serve_ha.constructs.lambda_code import PYTHON_RUNTIME, handler_code, handler_log_group

# A CloudFormation custom resource waits at most 3,600 s (ServiceTimeout), and the gate
# needs a few minutes of that to report why the RayService is not Ready (its conditions
# and events) before CloudFormation gives up without a reason. The default is the longest
# wait: a first Neuron start compiles the model for tens of minutes.
READINESS_TIMEOUT_MAX_MINUTES = 55
READINESS_TIMEOUT_MIN_MINUTES = 5
DEFAULT_READINESS_TIMEOUT_MINUTES = READINESS_TIMEOUT_MAX_MINUTES
POLL_INTERVAL = cdk.Duration.seconds(30)
# CloudFormation waits at most this long for a custom resource (ServiceTimeout 1-3600 s).
CUSTOM_RESOURCE_MAX_WAIT = cdk.Duration.seconds(3600)
# The handler gives up this much before the Provider's waiter does, so its message (the
# conditions and events) is what CloudFormation shows, not a generic time-out.
HANDLER_HEADROOM = cdk.Duration.seconds(2 * POLL_INTERVAL.to_seconds())
# Left to CloudFormation, the onEvent call and the waiter's start within its own limit.
CLOUDFORMATION_HEADROOM = cdk.Duration.minutes(5)
MAX_TIMEOUT = cdk.Duration.minutes(READINESS_TIMEOUT_MAX_MINUTES)
# How long the API may refuse the gate's own key before the gate fails: the longest a key
# takes to reach every Serve replica (External Secrets' refresh, the kubelet's resync of the
# mounted Secret, the replicas' reload), plus one poll, so at least one poll comes after it.
API_KEY_GRACE = cdk.Duration.seconds(API_KEY_PROPAGATION_S + POLL_INTERVAL.to_seconds())
if MAX_TIMEOUT.to_seconds() + CLOUDFORMATION_HEADROOM.to_seconds() > CUSTOM_RESOURCE_MAX_WAIT.to_seconds():
    raise ValueError(
        f"READINESS_TIMEOUT_MAX_MINUTES={READINESS_TIMEOUT_MAX_MINUTES} leaves less than "
        f"{CLOUDFORMATION_HEADROOM.to_minutes():g} min of CloudFormation's 60-minute custom-resource limit"
    )


# How CDK writes an unresolved value into a string at synth ("${Token[NAME.123]}").
_TOKEN_MARKER = re.compile(r"\$\{Token\[[^\]]+\]\}")


def rayservice_fingerprint(stack: cdk.Stack, manifest: Any) -> tuple[str, list[Any]]:
    """What makes the gate run again: a content hash of the RayService manifest as written at
    synth, and the deploy-time values inside it (image URIs, the Redis endpoint, the cache
    bucket), which CloudFormation resolves. A change in either changes the custom
    resource's properties, so CloudFormation sends an Update and the gate waits for the
    new spec.

    In the hash each token is a placeholder and the text around it stays (a serve config
    that names the cache bucket still hashes its model id): token names depend on
    construction order, not on content."""
    values: list[Any] = []

    def mask(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: mask(item) for key, item in value.items()}
        if isinstance(value, list):
            return [mask(item) for item in value]
        if isinstance(value, str) and cdk.Token.is_unresolved(value):
            values.append(value)
            return _TOKEN_MARKER.sub("<deploy-time value>", value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and cdk.Token.is_unresolved(value):
            values.append(stack.to_json_string(value))
            return "<deploy-time value>"
        return value

    masked = mask(manifest)
    digest = hashlib.sha256(json.dumps(masked, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return digest, values


def default_readiness_timeout() -> cdk.Duration:
    return cdk.Duration.minutes(DEFAULT_READINESS_TIMEOUT_MINUTES)


@dataclass(frozen=True)
class RayServiceReadinessProps:
    """cluster, namespace, rayservice_name: the RayService to wait for.
    rayservice_manifest: the chart's objects as applied (their fingerprint makes the gate run
    again when they change).
    vpc, subnets, security_group: where the handlers run (a private API endpoint answers
    from the VPC only): a group that reaches the API endpoint, and nothing else but what
    the API check needs (below).
    timeout: how long a deploy waits for Ready (at most READINESS_TIMEOUT_MAX_MINUTES).
    api_keys: the API keys (`ApiKeys`): once the RayService is Ready, the gate also waits until
    its OpenAI API answers `GET /v1/models` with the `api_key_name` entry, through the serve
    Service's load balancer on `serve_port`; `security_group` must then also reach that port
    in the VPC and Secrets Manager (`HelperReach(serve_load_balancer=True, aws_apis=True)`).
    None: an open API, not called."""

    cluster: eks.ICluster
    namespace: str
    rayservice_name: str
    rayservice_manifest: Any
    vpc: ec2.IVpc
    subnets: Sequence[ec2.ISubnet]
    security_group: ec2.ISecurityGroup
    timeout: cdk.Duration = field(default_factory=default_readiness_timeout)
    api_keys: ApiKeys | None = None
    api_key_name: str = READINESS_GATE
    serve_port: int = constants.SERVE_PORT


class RayServiceReadiness(Construct):
    """A custom resource (Provider framework, onEvent + isComplete) that polls the
    RayService through the Kubernetes API with an EKS token. Its role gets a view access
    entry scoped to the serving namespace, nothing more. `rayservice_manifest` is the
    chart's objects as applied: their fingerprint is a property, so every change to them
    (spec, images, deploy-time values) makes CloudFormation run the gate again."""

    def __init__(self, scope: Construct, construct_id: str, props: RayServiceReadinessProps) -> None:
        super().__init__(scope, construct_id)
        cluster, namespace, timeout = props.cluster, props.namespace, props.timeout
        if timeout.to_seconds() > MAX_TIMEOUT.to_seconds():
            raise ValueError(
                f"readiness timeout {timeout.to_minutes():g} min exceeds {READINESS_TIMEOUT_MAX_MINUTES} min: "
                "CloudFormation waits at most 60 minutes for a custom resource"
            )
        api_keys = props.api_keys
        if api_keys is not None and props.api_key_name not in api_keys.consumers:
            raise ValueError(
                f"the readiness gate's API key {props.api_key_name!r} is not one the API keys generate "
                f"({', '.join(api_keys.consumers)}): add it to ApiKeysProps.consumers, or set api_key_name "
                "to one of them"
            )

        def handler(construct_id: str, entry_point: str, description: str) -> lambda_.Function:
            return lambda_.Function(
                self, construct_id, handler=entry_point, description=description,
                log_group=handler_log_group(self, f"{construct_id}Logs"),
                runtime=PYTHON_RUNTIME,
                code=handler_code("rayservice_ready"),
                # A private API endpoint is reachable from the VPC only: run in it, in a group
                # of its own that reaches only what it calls (helper_access.py).
                vpc=props.vpc,
                vpc_subnets=ec2.SubnetSelection(subnets=list(props.subnets)),
                security_groups=[props.security_group],
                timeout=cdk.Duration.seconds(60),
                memory_size=256,
            )

        self.on_event = handler("OnEvent", "index.on_event", "RayService readiness gate: records when the wait started")
        self.is_complete = handler("IsComplete", "index.is_complete", "RayService readiness gate: Ready=True yet?")
        # A Function made without `role=` creates its own; only imported functions have none.
        assert self.is_complete.role is not None
        # Its own key, from the one secret of API keys (and nothing else in Secrets Manager).
        self.api_keys_read: iam.Policy | None = None
        if api_keys is not None:
            self.api_keys_read = api_keys.grant_read_to(self.is_complete.role, "ReadinessGateReader")
        # EKS's view policy covers built-in kinds only; the Kubernetes group gets a Role
        # that may read RayServices and their events in this namespace (ray_serve_ha/charts/rbac.py).
        self.access = eks.CfnAccessEntry(
            self,
            "ViewAccess",
            cluster_name=cluster.cluster_name,
            principal_arn=self.is_complete.role.role_arn,
            type="STANDARD",
            kubernetes_groups=[RAYSERVICE_READERS_GROUP],
            access_policies=[
                eks.CfnAccessEntry.AccessPolicyProperty(
                    policy_arn=f"arn:{cdk.Aws.PARTITION}:eks::aws:cluster-access-policy/AmazonEKSViewPolicy",
                    access_scope=eks.CfnAccessEntry.AccessScopeProperty(type="namespace", namespaces=[namespace]),
                )
            ],
        )
        self.rbac = eks.KubernetesManifest(
            self, "Rbac", cluster=cluster, manifest=rayservice_reader_rbac(namespace)
        )
        provider = cr.Provider(
            self,
            "Provider",
            on_event_handler=self.on_event,
            is_complete_handler=self.is_complete,
            query_interval=POLL_INTERVAL,
            total_timeout=timeout,
            # Every poll of a slow first start shows up in the waiter's execution history.
            disable_waiter_state_machine_logging=False,
            waiter_state_machine_log_options=cr.LogOptions(
                destination=handler_log_group(self, "WaiterLogs"), level=sfn.LogLevel.ALL, include_execution_data=False
            ),
        )
        spec_hash, deploy_time_values = rayservice_fingerprint(cdk.Stack.of(self), props.rayservice_manifest)
        where = {
            "ClusterName": cluster.cluster_name,
            "Endpoint": cluster.cluster_endpoint,
            "CertificateAuthority": cluster.cluster_certificate_authority_data,
            "Namespace": namespace,
            "RayServiceName": props.rayservice_name,
            "TimeoutSeconds": str(int(timeout.to_seconds() - HANDLER_HEADROOM.to_seconds())),
        }
        self.resource = cdk.CustomResource(
            self,
            "Resource",
            service_token=provider.service_token,
            resource_type="Custom::RayServiceReady",
            # Said outright rather than left to CloudFormation's default: the gate's whole
            # wait (the Provider's total timeout) fits inside it.
            service_timeout=CUSTOM_RESOURCE_MAX_WAIT,
            properties={
                **where,
                **(self._api_check(props, api_keys) if api_keys is not None else {}),
                "RayServiceSpecHash": spec_hash,
                "DeployTimeValues": deploy_time_values,
            },
        )
        if api_keys is not None and self.api_keys_read is not None:
            # The gate's entry (added by `entries` on the deploy that adds the gate's consumer)
            # and the permission to read it exist before the first poll asks for them.
            self.resource.node.add_dependency(api_keys.entries, self.api_keys_read)
        # Its mirror image for `cdk destroy`: nothing on create; on delete it waits until the
        # deleted RayService's RayClusters (Redis cleanup Job) and LoadBalancer Services (the
        # NLB and the controller's security groups) are gone. The stack places it between the
        # RayService and what those still need.
        self.teardown = cdk.CustomResource(
            self,
            "Teardown",
            service_token=provider.service_token,
            resource_type="Custom::RayServiceGone",
            service_timeout=CUSTOM_RESOURCE_MAX_WAIT,
            properties=where,
        )
        # The handler must be allowed in before it asks, and until it has finished.
        for resource in (self.resource, self.teardown):
            resource.node.add_dependency(self.access, self.rbac)

    @staticmethod
    def _api_check(props: RayServiceReadinessProps, api_keys: ApiKeys) -> dict[str, str]:
        """The API check's properties (lambda/rayservice_ready/index.py, ApiCheck)."""
        return {
            "ServeServiceName": serve_service_name(props.rayservice_name),
            "ServePort": str(props.serve_port),
            "ApiKeysSecretArn": api_keys.secret.secret_arn,
            "ApiKeyName": props.api_key_name,
            "ApiKeyGraceSeconds": str(int(API_KEY_GRACE.to_seconds())),
        }
