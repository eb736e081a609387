"""The policy evaluator the resource-policy tests rely on (tests/iam_policy.py) follows AWS's
evaluation rules where they matter here, and refuses what it does not know rather than
guessing.
"""

from __future__ import annotations

import pytest

from tests.iam_policy import Request, decide, role, service

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
REGION = "us-east-2"


def test_the_evaluator_follows_awss_rules_and_refuses_what_it_does_not_know():
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:topic"
    me = role(f"arn:aws:iam::{ACCOUNT}:role/me")
    allow_account = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                                    "Action": "sns:*", "Resource": "*"}]}
    identity = [{"Statement": [{"Effect": "Allow", "Action": "SNS:Pub*", "Resource": topic}]}]
    # Same account: either policy suffices; across accounts both are needed.
    assert decide(Request(me, "sns:Publish", topic), identity_policies=identity, resource_account=ACCOUNT)
    stranger = role(f"arn:aws:iam::{OTHER_ACCOUNT}:role/me")
    assert not decide(Request(stranger, "sns:Publish", topic), identity_policies=identity, resource_account=ACCOUNT)
    # A key policy naming the account delegates to IAM; it does not allow by itself.
    assert not decide(Request(me, "kms:Decrypt", "k"), resource_policy=allow_account, resource_account=ACCOUNT,
                      key_policy=True)
    # A negated operator holds when the key is absent; a positive one does not.
    condition = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sns:Publish", "Resource": "*",
                                "Condition": {"StringNotEquals": {"aws:SourceAccount": OTHER_ACCOUNT}}}]}
    assert decide(Request(service("s3.amazonaws.com"), "sns:Publish", topic), resource_policy=condition,
                  resource_account=ACCOUNT)
    with pytest.raises(ValueError, match="unsupported condition operator NumericLessThan"):
        decide(Request(me, "sns:Publish", topic), resource_account=ACCOUNT, identity_policies=[{"Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"NumericLessThan": {"k": "1"}}}]}])
    with pytest.raises(ValueError, match="NotPrincipal"):
        decide(Request(me, "sns:Publish", topic), resource_account=ACCOUNT, resource_policy={"Statement": [
            {"Effect": "Deny", "NotPrincipal": {"AWS": "x"}, "Action": "*", "Resource": "*"}]})
