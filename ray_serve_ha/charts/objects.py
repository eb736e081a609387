"""Plain-dict manifests into cdk8s: the one place where spec functions meet constructs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cdk8s
from constructs import Construct


def add_api_object(scope: Construct, manifest: Mapping[str, Any]) -> cdk8s.ApiObject:
    """Adds `manifest` (apiVersion, kind, metadata and the rest) to `scope` unchanged.

    The construct id is kind and name, so two objects of one chart never collide and the
    id does not depend on the order in which they are added.
    """
    metadata = dict(manifest["metadata"])
    api_object = cdk8s.ApiObject(
        scope,
        f"{manifest['kind']}-{metadata['name']}".lower(),
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        metadata=cdk8s.ApiObjectMetadata(name=metadata["name"]),
    )
    # Patches apply after cdk8s renders its own fields, so the object is exactly the dict
    # (metadata included: a chart-level namespace or label cannot sneak in).
    for key, value in manifest.items():
        if key not in ("apiVersion", "kind"):
            api_object.add_json_patch(cdk8s.JsonPatch.add(f"/{key}", value))
    return api_object
