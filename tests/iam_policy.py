"""A small, strict IAM policy evaluator over synthesized CloudFormation, for the requests one
AWS service must get through to another.

`Deployment` resolves the intrinsic functions of a set of templates (Ref, Fn::GetAtt,
Fn::Join, Fn::Sub, Fn::ImportValue, Fn::Select, pseudo parameters) to concrete names and
ARNs in one made-up account and region. `decide` follows AWS's evaluation logic for one
request (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
an explicit Deny in any policy wins; a service principal gets through only on a resource
policy's Allow; an IAM principal of the resource's account on an identity policy's Allow or
a resource policy's Allow that names it (a KMS key policy must allow it, or delegate to the
account's IAM policies by naming the account); another account's principal needs both.

What it does not know it refuses (ValueError): a condition operator, a policy element
(NotPrincipal, NotResource) or an intrinsic function outside what these templates use."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

PARTITION = "aws"


# ---------------------------------------------------------------------------------------
# Requests and principals
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """An IAM role (`arn`) or an AWS service (`service`, e.g. cloudwatch.amazonaws.com)."""

    arn: str | None = None
    service: str | None = None

    @property
    def account(self) -> str | None:
        return self.arn.split(":")[4] if self.arn else None


def role(arn: str) -> Principal:
    return Principal(arn=arn)


def service(name: str) -> Principal:
    return Principal(service=name)


@dataclass(frozen=True)
class Request:
    principal: Principal
    action: str
    resource: str
    # Condition keys as AWS sets them (aws:SecureTransport "true"/"false", aws:SourceArn, ...).
    context: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Statements
# ---------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    """IAM's wildcards: * any run of characters, ? one character (no character classes)."""
    pattern = re.sub(r"([\[\]])", r"[\1]", pattern)  # brackets are literal in IAM
    if case_sensitive:
        return fnmatchcase(value, pattern)
    return fnmatchcase(value.lower(), pattern.lower())


def _principal_matches(element: Any, principal: Principal) -> tuple[bool, bool]:
    """(matches, by_account): whether a resource policy's Principal names this principal,
    and whether it does so only through the account (root), i.e. delegates to IAM."""
    if element == "*":
        return True, False
    if not isinstance(element, dict) or set(element) - {"AWS", "Service"}:
        raise ValueError(f"unsupported Principal {element!r}")
    for value in _as_list(element.get("Service", [])):
        if principal.service is not None and value == principal.service:
            return True, False
    for value in _as_list(element.get("AWS", [])):
        if value == "*":
            return True, False
        if principal.arn is None:
            continue
        if value == principal.arn:
            return True, False
        if value in (principal.account, f"arn:{PARTITION}:iam::{principal.account}:root"):
            return True, True
    return False, False


_OPERATORS = {
    "StringEquals": lambda wanted, actual: actual == wanted,
    "StringNotEquals": lambda wanted, actual: actual != wanted,
    "StringLike": lambda wanted, actual: _like(wanted, actual),
    "StringNotLike": lambda wanted, actual: not _like(wanted, actual),
    "ArnEquals": lambda wanted, actual: _like(wanted, actual),
    "ArnLike": lambda wanted, actual: _like(wanted, actual),
    "ArnNotEquals": lambda wanted, actual: not _like(wanted, actual),
    "ArnNotLike": lambda wanted, actual: not _like(wanted, actual),
    "Bool": lambda wanted, actual: actual.lower() == str(wanted).lower(),
}
_NEGATED = {"StringNotEquals", "StringNotLike", "ArnNotEquals", "ArnNotLike"}


def _condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    """Every operator and every key must hold; any of a key's values may match. A missing
    key fails a positive operator and passes a negated one (AWS's rule); `...IfExists`
    passes on a missing key. Condition key names are case-insensitive."""
    keys = {key.lower(): value for key, value in context.items()}
    for operator, tests in condition.items():
        if_exists = operator.endswith("IfExists")
        base = operator.removesuffix("IfExists")
        if base not in _OPERATORS:
            raise ValueError(f"unsupported condition operator {operator}")
        for key, wanted in tests.items():
            actual = keys.get(key.lower())
            if actual is None:
                if if_exists or base in _NEGATED:
                    continue
                return False
            values = [str(w) for w in _as_list(wanted)]
            if base in _NEGATED:
                if not all(_OPERATORS[base](w, actual) for w in values):
                    return False
            elif not any(_OPERATORS[base](w, actual) for w in values):
                return False
    return True


@dataclass(frozen=True)
class Match:
    effect: str  # "Allow" or "Deny"
    by_account: bool  # the Principal named only the account
    sid: str | None


def matching_statements(document: dict[str, Any], request: Request, *, resource_policy: bool) -> list[Match]:
    found = []
    for statement in _as_list(document.get("Statement", [])):
        unknown = set(statement) - {"Sid", "Effect", "Principal", "Action", "NotAction", "Resource", "Condition"}
        if unknown:
            raise ValueError(f"unsupported policy element(s) {sorted(unknown)}")
        by_account = False
        if resource_policy:
            matched, by_account = _principal_matches(statement.get("Principal"), request.principal)
            if not matched:
                continue
        elif "Principal" in statement:
            raise ValueError("an identity policy has no Principal")
        if "Action" in statement:
            if not any(_like(a, request.action, case_sensitive=False) for a in _as_list(statement["Action"])):
                continue
        elif any(_like(a, request.action, case_sensitive=False) for a in _as_list(statement["NotAction"])):
            continue
        if not any(_like(r, request.resource) for r in _as_list(statement.get("Resource", "*"))):
            continue
        if not _condition_holds(statement.get("Condition", {}), request.context):
            continue
        found.append(Match(statement["Effect"], by_account, statement.get("Sid")))
    return found


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def decide(
    request: Request,
    *,
    identity_policies: Sequence[dict[str, Any]] = (),
    resource_policy: dict[str, Any] | None = None,
    resource_account: str,
    key_policy: bool = False,
) -> Decision:
    """Whether AWS lets the request through. `key_policy`: the resource policy is a KMS key
    policy (no IAM access to the key unless it allows the principal or the account)."""
    identity = [m for doc in identity_policies for m in matching_statements(doc, request, resource_policy=False)]
    resource = matching_statements(resource_policy, request, resource_policy=True) if resource_policy else []
    denies = [m for m in identity + resource if m.effect == "Deny"]
    if denies:
        return Decision(False, f"explicit Deny ({denies[0].sid or 'no Sid'})")
    identity_allows = request.principal.arn is not None and any(m.effect == "Allow" for m in identity)
    direct = [m for m in resource if m.effect == "Allow" and not m.by_account]
    delegated = [m for m in resource if m.effect == "Allow" and m.by_account]
    if request.principal.service is not None:
        return Decision(bool(direct), "allowed by the resource policy" if direct
                        else "no resource-based policy allows the service")
    same_account = request.principal.account == resource_account
    if key_policy:
        if direct or (delegated and identity_allows and same_account):
            return Decision(True, "allowed by the key policy" + ("" if direct else " through IAM"))
        return Decision(False, "the key policy does not allow it (or IAM does not)")
    if same_account:
        if identity_allows or direct:
            return Decision(True, "allowed by " + ("an identity policy" if identity_allows else "the resource policy"))
        return Decision(False, "no identity-based or resource-based policy allows it")
    if identity_allows and (direct or delegated):
        return Decision(True, "allowed across accounts by both policies")
    return Decision(False, "across accounts both the identity and the resource policy must allow it")


# ---------------------------------------------------------------------------------------
# Resolving the templates
# ---------------------------------------------------------------------------------------

# Ref of a resource: how CloudFormation names it (a name, an ARN or an id), by type.
_REF = {
    "AWS::SNS::Topic": "arn:{p}:sns:{r}:{a}:{name}",
    "AWS::SecretsManager::Secret": "arn:{p}:secretsmanager:{r}:{a}:secret:{name}-AbCdEf",
    "AWS::KMS::Key": "{id}",
}
_ARN = {
    "AWS::IAM::Role": "arn:{p}:iam::{a}:role/{name}",
    "AWS::S3::Bucket": "arn:{p}:s3:::{name}",
    "AWS::KMS::Key": "arn:{p}:kms:{r}:{a}:key/{id}",
    "AWS::CloudWatch::Alarm": "arn:{p}:cloudwatch:{r}:{a}:alarm:{name}",
    "AWS::EKS::Cluster": "arn:{p}:eks:{r}:{a}:cluster/{name}",
    "AWS::CodeBuild::Project": "arn:{p}:codebuild:{r}:{a}:project/{name}",
    "AWS::Logs::LogGroup": "arn:{p}:logs:{r}:{a}:log-group:{name}:*",
    "AWS::Events::Rule": "arn:{p}:events:{r}:{a}:rule/{name}",
    "AWS::Lambda::Function": "arn:{p}:lambda:{r}:{a}:function:{name}",
    "AWS::SNS::Topic": "arn:{p}:sns:{r}:{a}:{name}",
    "AWS::SecretsManager::Secret": "arn:{p}:secretsmanager:{r}:{a}:secret:{name}-AbCdEf",
}
# The property that sets a resource's name, where the template may set it.
_NAME_PROPERTY = {
    "AWS::EKS::Cluster": "Name",
    "AWS::CodeBuild::Project": "Name",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::IAM::Role": "RoleName",
    "AWS::S3::Bucket": "BucketName",
}


class Deployment:
    """The templates of one deployment (stack name -> template) in `account` and `region`."""

    def __init__(self, templates: dict[str, dict[str, Any]], *, account: str, region: str) -> None:
        self.templates = templates
        self.account = account
        self.region = region
        self.exports = {
            output["Export"]["Name"]: (stack, output["Value"])
            for stack, template in templates.items()
            for output in template.get("Outputs", {}).values()
            if "Export" in output
        }

    def resources(self, stack: str, type_: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.templates[stack]["Resources"].items() if r["Type"] == type_}

    def _name(self, stack: str, logical_id: str) -> str:
        resource = self.templates[stack]["Resources"][logical_id]
        prop = _NAME_PROPERTY.get(resource["Type"])
        if prop and prop in resource.get("Properties", {}):
            return str(self.resolve(stack, resource["Properties"][prop]))
        name = logical_id
        return name.lower() if resource["Type"] == "AWS::S3::Bucket" else name

    def _format(self, template: str, stack: str, logical_id: str) -> str:
        return template.format(p=PARTITION, r=self.region, a=self.account, name=self._name(stack, logical_id),
                               id=f"key-{logical_id.lower()}")

    def ref(self, stack: str, name: str) -> str:
        pseudo = {"AWS::Partition": PARTITION, "AWS::AccountId": self.account, "AWS::Region": self.region,
                  "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": stack}
        if name in pseudo:
            return pseudo[name]
        resource = self.templates[stack]["Resources"].get(name)
        if resource is None:
            raise ValueError(f"{stack}: Ref to unknown {name}")
        template = _REF.get(resource["Type"])
        return self._format(template, stack, name) if template else self._name(stack, name)

    def get_att(self, stack: str, logical_id: str, attribute: str) -> str:
        resource = self.templates[stack]["Resources"][logical_id]
        if attribute == "Arn" and resource["Type"] in _ARN:
            return self._format(_ARN[resource["Type"]], stack, logical_id)
        if resource["Type"] == "AWS::SNS::Topic" and attribute == "TopicArn":
            return self.ref(stack, logical_id)
        return f"{logical_id}.{attribute}"  # an attribute no policy here depends on

    def resolve(self, stack: str, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(stack, v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1 or not next(iter(value)).startswith(("Ref", "Fn::")):
            return {k: self.resolve(stack, v) for k, v in value.items()}
        (function, argument), = value.items()
        if function == "Ref":
            return self.ref(stack, argument)
        if function == "Fn::GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
            return self.get_att(stack, logical_id, attribute)
        if function == "Fn::Join":
            separator, parts = argument
            return separator.join(str(self.resolve(stack, p)) for p in self.resolve(stack, parts))
        if function == "Fn::Select":
            index, items = argument
            return self.resolve(stack, items)[int(self.resolve(stack, index))]
        if function == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            return re.sub(r"\$\{([^}!][^}]*)\}", lambda m: self._sub(stack, m.group(1), variables), text)
        if function == "Fn::ImportValue":
            exporter, output = self.exports[self.resolve(stack, argument)]
            return self.resolve(exporter, output)
        raise ValueError(f"unsupported intrinsic function {function}")

    def _sub(self, stack: str, name: str, variables: dict[str, Any]) -> str:
        if name in variables:
            return str(self.resolve(stack, variables[name]))
        if "." in name and not name.startswith("AWS::"):
            logical_id, attribute = name.split(".", 1)
            return self.get_att(stack, logical_id, attribute)
        return self.ref(stack, name)

    def role_policies(self, stack: str, logical_id: str) -> list[dict[str, Any]]:
        """The identity policies of a role (inline, AWS::IAM::Policy attached to it in any
        stack), resolved. AWS managed policies are left out: none of them grants what is
        evaluated here."""
        arn = self.get_att(stack, logical_id, "Arn")
        name = self._name(stack, logical_id)
        inline = self.templates[stack]["Resources"][logical_id]["Properties"].get("Policies", [])
        documents = [self.resolve(stack, p["PolicyDocument"]) for p in inline]
        for other in self.templates:
            for policy in self.resources(other, "AWS::IAM::Policy").values():
                roles = self.resolve(other, policy["Properties"].get("Roles", []))
                if name in roles or arn in roles:
                    documents.append(self.resolve(other, policy["Properties"]["PolicyDocument"]))
        return documents
