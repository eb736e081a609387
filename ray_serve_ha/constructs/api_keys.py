"""The API keys of the OpenAI-compatible API: one Secrets Manager secret, a JSON object
`{"<name>": "<key>"}` with a key of its own for each consumer, generated at deploy time.

External Secrets syncs the whole object into the Serve pods (a mounted file they reread:
`ray_serve_ha/charts/secrets.py`) and the chat UI's entry into the UI; the probe, the HA
drill and the readiness gate read their own entries from Secrets Manager. To add a key for a person or a team, or
to revoke one, edit the secret's JSON (Secrets Manager console or `put-secret-value`): the
replicas pick the change up within about a minute, with no restart.

CloudFormation can generate one random string per secret, not several in one JSON object: each
consumer's key is generated as a secret of its own (`Seed<Name>`), and the keys secret is
made of their values (dynamic references, resolved by CloudFormation when it creates the
secret). After that the keys secret is the only one read; the seeds are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import SecretValue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

# The consumers that get a key at creation: the chat UI (ray_serve_ha/charts/secrets.py
# CHAT_UI_KEY_NAME), the availability probe, the HA drill, the operator's own, and the
# readiness gate (which proves with it that the API answers before a deploy completes).
CHAT_UI = "chat-ui"
SERVE_PROBE = "serve-probe"
HA_DRILL = "ha-drill"
OPERATOR = "operator"
READINESS_GATE = "readiness-gate"
CONSUMERS: tuple[str, ...] = (CHAT_UI, SERVE_PROBE, HA_DRILL, OPERATOR, READINESS_GATE)
KEY_LENGTH = 48


@dataclass(frozen=True)
class ApiKeysProps:
    consumers: tuple[str, ...] = CONSUMERS


class ApiKeys(Construct):
    """`secret`: the keys, `{name: key}`; `consumers`: the names generated at creation;
    `grant_read_to(role)` lets a role read it (and nothing else)."""

    def __init__(self, scope: Construct, construct_id: str, props: ApiKeysProps | None = None) -> None:
        super().__init__(scope, construct_id)
        props = props or ApiKeysProps()
        self.consumers = props.consumers
        values: dict[str, SecretValue] = {}
        self.seeds: list[secretsmanager.Secret] = []
        for name in props.consumers:
            seed = secretsmanager.Secret(
                self,
                "Seed" + "".join(part.capitalize() for part in name.split("-")),
                description=f"Generated initial API key of {name} (copied into the API keys secret)",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    password_length=KEY_LENGTH, exclude_punctuation=True
                ),
            )
            self.seeds.append(seed)
            values[name] = seed.secret_value
        self.secret = secretsmanager.Secret(
            self,
            "Keys",
            description="API keys of the Ray Serve OpenAI-compatible API: a JSON object {name: key}",
            secret_object_value=values,
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
