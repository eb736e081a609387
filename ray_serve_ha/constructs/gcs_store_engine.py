"""What the GCS store runs on: the ElastiCache engines and versions Ray's GCS works with,
the node types a new replication group can be created on, and the defaults. Plain data: the
settings check their values against these tables before anything is synthesized."""

from __future__ import annotations

from dataclasses import dataclass

# Engine versions Ray's GCS client is known to work with (cluster mode off).
GCS_ENGINE_VERSIONS = {"redis": ("6.2", "7.0", "7.1"), "valkey": ("7.2", "8.0", "8.1")}
DEFAULT_GCS_ENGINE_VERSION = {"redis": "7.1", "valkey": "8.0"}
# The GCS store requires TLS (gcs_store.py: transit encryption mode "required"), which
# ElastiCache offers from Redis OSS 7.0 and Valkey 7.2 (ElastiCache user guide, "Enabling
# in-transit encryption"); CloudFormation refuses the mode on older engines.
TRANSIT_ENCRYPTION_MODE_MIN_VERSION = {"redis": "7.0", "valkey": "7.2"}

# ElastiCache node types a new replication group can be created on, by family. Source: the
# ElastiCache API Reference, CacheNode, "The following node types are supported by
# ElastiCache" (current generation; the same text is in botocore's elasticache service
# model, which tests/test_settings.py compares with this table). Left out on purpose: the
# previous generations (no new clusters), T2 (ElastiCache no longer creates T2 clusters:
# user guide, "Supported node types") and data-tiering r6gd (needs DataTieringEnabled).
ELASTICACHE_NODE_TYPES: dict[str, tuple[str, ...]] = {
    "m7g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "m6g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "m5": ("large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge"),
    "m4": ("large", "xlarge", "2xlarge", "4xlarge", "10xlarge"),
    "t4g": ("micro", "small", "medium"),
    "t3": ("micro", "small", "medium"),
    "r7g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "r6g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "r5": ("large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge"),
    "r4": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge"),
}
# Families ElastiCache names but will not create a new cluster on.
ELASTICACHE_RETIRED_FAMILIES = ("t1", "t2", "m1", "m2", "m3", "c1", "r3")

DEFAULT_GCS_ENGINE = "redis"
# Memory-optimized Graviton: Ray's GCS tables are small, but a replica must keep up with
# every write of a busy cluster.
DEFAULT_GCS_NODE_TYPE = "cache.r7g.large"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def tls_versions(engine: str) -> tuple[str, ...]:
    """The engine's versions Ray works with that also allow TLS-required mode."""
    minimum = version_tuple(TRANSIT_ENCRYPTION_MODE_MIN_VERSION[engine])
    return tuple(v for v in GCS_ENGINE_VERSIONS[engine] if version_tuple(v) >= minimum)


@dataclass(frozen=True)
class GcsStoreEngine:
    """The replication group's engine, engine version and node type. The version must allow
    TLS-required mode (`tls_versions`); `GcsStoreEngine.of("valkey")` takes the engine's
    default version."""

    engine: str = DEFAULT_GCS_ENGINE
    engine_version: str = DEFAULT_GCS_ENGINE_VERSION[DEFAULT_GCS_ENGINE]
    node_type: str = DEFAULT_GCS_NODE_TYPE

    def __post_init__(self) -> None:
        if self.engine not in GCS_ENGINE_VERSIONS:
            raise ValueError(f"GCS store engine {self.engine!r}: must be one of {', '.join(GCS_ENGINE_VERSIONS)}")
        if self.engine_version not in tls_versions(self.engine):
            raise ValueError(
                f"GCS store {self.engine} {self.engine_version}: the store requires TLS; use one of "
                f"{', '.join(tls_versions(self.engine))}"
            )

    @staticmethod
    def of(engine: str = DEFAULT_GCS_ENGINE, engine_version: str | None = None,
           node_type: str = DEFAULT_GCS_NODE_TYPE) -> GcsStoreEngine:
        """The engine with `engine_version`, or its default version."""
        return GcsStoreEngine(engine, engine_version or DEFAULT_GCS_ENGINE_VERSION.get(engine, ""), node_type)
