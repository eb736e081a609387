"""The API keys of the OpenAI-compatible API: one Secrets Manager secret, a JSON object
`{"<name>": "<key>"}` with a key of its own for each consumer, generated at deploy time.

External Secrets syncs the whole object into the Serve pods (a mounted file they reread:
`ray_serve_ha/charts/secrets.py`) and the chat UI's entry into the UI; the probe, the HA
drill and the readiness gate read their own entries from Secrets Manager. To add a key for a
person or a team, or to revoke one, edit the secret's JSON (Secrets Manager console or
`put-secret-value`): the replicas pick the change up within about a minute, with no restart.

CloudFormation can generate one random string per secret, not several in one JSON object: each
consumer's key is generated as a secret of its own (`Seed<Name>`). The keys secret's
template value is its initial value only (`INITIAL_CONSUMERS`' seeds, as dynamic references
CloudFormation resolves when it creates the secret) and never changes: a change would make
CloudFormation write the secret anew and lose every key an operator added. Consumers are
added by a custom resource instead (`Custom::ApiKeyEntries`, lambda/api_keys_merge/): on
every deploy that changes the consumers it adds the seed of each one without an entry, and
leaves every other entry as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import SecretValue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import custom_resources as cr
from constructs import Construct

from ray_serve_ha.constructs.lambda_code import PYTHON_RUNTIME, handler_code, handler_log_group

# The consumers that get a key: the chat UI (ray_serve_ha/charts/secrets.py
# CHAT_UI_KEY_NAME), the availability probe, the HA drill, the operator's own, and the
# readiness gate (which proves with it that the API answers before a deploy completes).
CHAT_UI = "chat-ui"
SERVE_PROBE = "serve-probe"
HA_DRILL = "ha-drill"
OPERATOR = "operator"
READINESS_GATE = "readiness-gate"
CONSUMERS: tuple[str, ...] = (CHAT_UI, SERVE_PROBE, HA_DRILL, OPERATOR, READINESS_GATE)
# The keys secret's initial value: these consumers' seeds, in this order. It must never
# change (not for a new consumer, not for a removed one): CloudFormation would write the
# secret anew and every key an operator added would be lost. Their seeds always exist.
INITIAL_CONSUMERS: tuple[str, ...] = (CHAT_UI, SERVE_PROBE, HA_DRILL, OPERATOR)
KEY_LENGTH = 48


@dataclass(frozen=True)
class ApiKeysProps:
    consumers: tuple[str, ...] = CONSUMERS


def seed_id(name: str) -> str:
    return "Seed" + "".join(part.capitalize() for part in name.split("-"))


class ApiKeys(Construct):
    """`secret`: the keys, `{name: key}`; `consumers`: the names that get a generated key;
    `entries`: the custom resource that adds the missing ones (depend on it, not on `secret`,
    before reading an entry); `grant_read_to(role)` lets a role read it (and nothing else)."""

    def __init__(self, scope: Construct, construct_id: str, props: ApiKeysProps | None = None) -> None:
        super().__init__(scope, construct_id)
        props = props or ApiKeysProps()
        self.consumers = props.consumers
        seeds: dict[str, secretsmanager.Secret] = {}
        for name in dict.fromkeys((*INITIAL_CONSUMERS, *props.consumers)):
            seeds[name] = secretsmanager.Secret(
                self,
                seed_id(name),
                description=f"Generated initial API key of {name} (copied into the API keys secret)",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    password_length=KEY_LENGTH, exclude_punctuation=True
                ),
            )
        self.seeds: list[secretsmanager.Secret] = list(seeds.values())
        initial: dict[str, SecretValue] = {name: seeds[name].secret_value for name in INITIAL_CONSUMERS}
        self.secret = secretsmanager.Secret(
            self,
            "Keys",
            description="API keys of the Ray Serve OpenAI-compatible API: a JSON object {name: key}",
            secret_object_value=initial,
        )
        self.add_missing = lambda_.Function(
            self,
            "AddMissing",
            description="API keys: adds the generated key of each consumer without an entry, touches no other",
            handler="index.add_missing_entries",
            runtime=PYTHON_RUNTIME,
            code=handler_code("api_keys_merge"),
            log_group=handler_log_group(self, "AddMissingLogs"),
            timeout=cdk.Duration.seconds(60),
            memory_size=256,
        )
        # Its seeds and the keys secret, nothing else (no KMS grant: the secrets use the
        # account's AWS managed key, which Secrets Manager uses on the caller's behalf).
        self.add_missing.add_to_role_policy(iam.PolicyStatement(
            actions=["secretsmanager:GetSecretValue"], resources=[seeds[name].secret_arn for name in props.consumers]
        ))
        self.add_missing.add_to_role_policy(iam.PolicyStatement(
            actions=["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"],
            resources=[self.secret.secret_arn],
        ))
        self.provider = cr.Provider(self, "AddMissingProvider", on_event_handler=self.add_missing)
        self.entries = cdk.CustomResource(
            self,
            "Entries",
            service_token=self.provider.service_token,
            resource_type="Custom::ApiKeyEntries",
            properties={
                "KeysSecretArn": self.secret.secret_arn,
                "Consumers": [{"Name": name, "SeedArn": seeds[name].secret_arn} for name in props.consumers],
            },
        )

    def grant_read_to(self, role: iam.IRole, construct_id: str) -> iam.Policy:
        """A policy of this construct's stack (not `secret.grant_read`, which would put it in
        the role's stack: the cluster's, which must not depend on this one)."""
        return iam.Policy(
            self,
            construct_id,
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                    resources=[self.secret.secret_arn],
                )
            ],
        )
