"""What a synthesized cluster template installs in Kubernetes: its manifests (deploy-time values
made plausible literals, so each parses and validates) and its Helm charts."""

from __future__ import annotations

import json


def token_text(token: dict) -> str:
    """A deploy-time value as a plausible literal, so the manifest parses and validates."""
    text = json.dumps(token)
    if "Subnet" in text:
        return "subnet-0123456789abcdef0"
    if "SecurityGroup" in text:
        return "sg-0123456789abcdef0"
    return "token"


def manifests(template) -> list[dict]:
    objects = []
    for resource in template.find_resources("Custom::AWSCDK-EKS-KubernetesResource").values():
        manifest = resource["Properties"]["Manifest"]
        if isinstance(manifest, dict):
            separator, parts = manifest["Fn::Join"]
            manifest = separator.join(p if isinstance(p, str) else token_text(p) for p in parts)
        objects.extend(json.loads(manifest))
    return objects


def helm_charts(template) -> dict[str, dict]:
    return {
        r["Properties"]["Chart"]: r["Properties"]
        for r in template.find_resources("Custom::AWSCDK-EKS-HelmChart").values()
    }
