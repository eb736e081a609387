"""Who may read the API keys secret, evaluated against the synthesized policies
(tests/iam_policy.py, as tests/test_resource_policies.py does): External Secrets (which syncs
it into the Serve pods and the UI), the availability probe and the HA drill's CodeBuild role
read it, and nothing else of theirs reaches the generated seeds it was made from."""

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
    assert len(seed_ids) == 4
    _, association = only(deployment, "cluster", "AWS::EKS::PodIdentityAssociation", ServiceAccount="external-secrets")
    operator_id = logical_id_of(association["Properties"]["RoleArn"])
    function_id = next(k for k, r in deployment.resources(serving, "AWS::Lambda::Function").items()
                       if r["Properties"].get("Environment", {}).get("Variables", {}).get("METRIC_NAMESPACE"))
    function = deployment.resources(serving, "AWS::Lambda::Function")[function_id]
    probe_role = logical_id_of(function["Properties"]["Role"])
    readers = {
        "External Secrets": (role(deployment.get_att(cluster, operator_id, "Arn")),
                             deployment.role_policies(cluster, operator_id)),
        "the probe": (role(deployment.get_att(serving, probe_role, "Arn")),
                      deployment.role_policies(serving, probe_role)),
        "the drill": (drill["role"], drill["identity"]),
    }
    for name, (principal, identity) in readers.items():
        def can(action: str, arn: str, principal=principal, identity=identity) -> Decision:
            return decide(Request(principal, action, arn), identity_policies=identity, resource_account=ACCOUNT)

        assert can("secretsmanager:GetSecretValue", keys), name
        assert not can("secretsmanager:PutSecretValue", keys), name
        for seed in seed_ids:  # the generated seeds are CloudFormation's alone
            assert not can("secretsmanager:GetSecretValue", deployment.ref(serving, seed)), name
    # The drill's build reads its own entry (CodeBuild resolves "<arn>:ha-drill").
    (variable,) = [v for v in drill["project"]["Environment"]["EnvironmentVariables"] if v["Name"] == "OPENAI_API_KEY"]
    assert variable["Type"] == "SECRETS_MANAGER"
    assert deployment.resolve(serving, variable["Value"]) == f"{keys}:ha-drill"
