"""Who may read the API keys secret, evaluated against the synthesized policies
(tests/iam_policy.py, as tests/test_resource_policies.py does): External Secrets (which syncs
it into the Serve pods and the UI), the availability probe, the readiness gate's isComplete
role and the HA drill's CodeBuild role read it, and nothing else of theirs reaches the
generated seeds it was made from; the gate's onEvent role does not read it at all."""

from __future__ import annotations

from tests.deployed import ACCOUNT, logical_id_of, only, stack
from tests.iam_policy import Decision, Request, decide, role
from tests.test_resource_policies import deployment, drill  # noqa: F401


def test_the_api_keys_are_read_by_their_consumers_and_nothing_else_by_them(deployment, drill):  # noqa: F811
    cluster, serving = stack(deployment, "cluster"), stack(deployment, "serving")
    (keys_id,) = [k for k, r in deployment.resources(serving, "AWS::SecretsManager::Secret").items()
                  if "SecretString" in r["Properties"]]
    keys = deployment.ref(serving, keys_id)
    seed_ids = [k for k, r in deployment.resources(serving, "AWS::SecretsManager::Secret").items() if k != keys_id]
    assert len(seed_ids) == 5
    _, association = only(deployment, "cluster", "AWS::EKS::PodIdentityAssociation", ServiceAccount="external-secrets")
    operator_id = logical_id_of(association["Properties"]["RoleArn"])
    function_id = next(k for k, r in deployment.resources(serving, "AWS::Lambda::Function").items()
                       if r["Properties"].get("Environment", {}).get("Variables", {}).get("METRIC_NAMESPACE"))
    function = deployment.resources(serving, "AWS::Lambda::Function")[function_id]
    probe_role = logical_id_of(function["Properties"]["Role"])
    gate_roles = {logical_id_of(f["Properties"]["Role"]): f["Properties"]["Handler"]
                  for f in deployment.resources(serving, "AWS::Lambda::Function").values()
                  if f["Properties"].get("Handler") in ("index.is_complete", "index.on_event")}
    (gate_role,) = [k for k, handler in gate_roles.items() if handler == "index.is_complete"]
    (on_event_role,) = [k for k, handler in gate_roles.items() if handler == "index.on_event"]
    readers = {
        "External Secrets": (role(deployment.get_att(cluster, operator_id, "Arn")),
                             deployment.role_policies(cluster, operator_id)),
        "the probe": (role(deployment.get_att(serving, probe_role, "Arn")),
                      deployment.role_policies(serving, probe_role)),
        "the drill": (drill["role"], drill["identity"]),
        "the readiness gate": (role(deployment.get_att(serving, gate_role, "Arn")),
                               deployment.role_policies(serving, gate_role)),
    }
    for name, (principal, identity) in readers.items():
        def can(action: str, arn: str, principal=principal, identity=identity) -> Decision:
            return decide(Request(principal, action, arn), identity_policies=identity, resource_account=ACCOUNT)

        assert can("secretsmanager:GetSecretValue", keys), name
        assert not can("secretsmanager:PutSecretValue", keys), name
        for seed in seed_ids:  # the generated seeds are CloudFormation's alone
            assert not can("secretsmanager:GetSecretValue", deployment.ref(serving, seed)), name
    # The gate's onEvent handler only records the start: no key for it.
    assert not decide(Request(role(deployment.get_att(serving, on_event_role, "Arn")), "secretsmanager:GetSecretValue",
                              keys), identity_policies=deployment.role_policies(serving, on_event_role),
                      resource_account=ACCOUNT)
    # The drill's build reads its own entry (CodeBuild resolves "<arn>:ha-drill").
    (variable,) = [v for v in drill["project"]["Environment"]["EnvironmentVariables"] if v["Name"] == "OPENAI_API_KEY"]
    assert variable["Type"] == "SECRETS_MANAGER"
    assert deployment.resolve(serving, variable["Value"]) == f"{keys}:ha-drill"
