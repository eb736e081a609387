"""A cache of NxD Inference compiled artifacts, so a replacement worker loads the model in
seconds instead of compiling it for minutes.

NxD Inference (under vLLM) reads `NEURON_COMPILED_ARTIFACTS`: when the folder holds a
compiled model it loads it, otherwise it compiles and saves there. It does *not* check
that the artifacts match the configuration it is given ("differing model configurations
... will not trigger re-compilation"), so each configuration gets its own sub-folder,
named by everything that changes the compiled graph: model, tensor parallel degree,
sequence length, batch size and Neuron SDK version.

`neuron_compiled_artifacts` may be:
- an absolute path (a volume every worker mounts): used as is;
- `s3://bucket/prefix`: the configuration's folder is downloaded from S3 before the engine
  starts; after a fresh compile it is uploaded, with a `_COMPLETE` marker written last so a
  worker that died mid-upload never publishes half a model.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MARKER = "_COMPLETE"
DEFAULT_LOCAL_ROOT = Path("/tmp/neuron-compiled-artifacts")


@dataclass(frozen=True)
class CompileKey:
    """What the compiled graphs depend on."""

    model_id: str
    tensor_parallel_degree: int
    max_model_len: int
    max_num_seqs: int
    neuron_sdk: str

    @property
    def slug(self) -> str:
        model = re.sub(r"[^A-Za-z0-9._-]+", "--", self.model_id.strip("/")) or "model"
        sdk = re.sub(r"[^A-Za-z0-9._-]+", "-", self.neuron_sdk)
        return (
            f"{model}/tp{self.tensor_parallel_degree}-len{self.max_model_len}"
            f"-seqs{self.max_num_seqs}-nxdi{sdk}"
        )


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` -> (`bucket`, `a/b`)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


@dataclass
class ArtifactCache:
    location: str
    key: CompileKey
    local_root: Path = DEFAULT_LOCAL_ROOT
    s3: Any = None  # a boto3 S3 client; made on first use
    _fetched: bool = field(default=False, init=False)

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    @property
    def local_dir(self) -> Path:
        """The folder to give NxD Inference as NEURON_COMPILED_ARTIFACTS."""
        base = self.local_root if self.is_s3 else Path(self.location)
        return base / self.key.slug

    def _s3_prefix(self) -> tuple[str, str]:
        bucket, prefix = split_s3_uri(self.location)
        return bucket, f"{prefix}/{self.key.slug}".strip("/")

    def _client(self) -> Any:
        if self.s3 is None:
            import boto3

            self.s3 = boto3.client("s3")
        return self.s3

    def fetch(self) -> bool:
        """Makes the compiled artifacts available locally when the cache has them;
        True when it did (NxD Inference will load instead of compiling)."""
        self.local_dir.mkdir(parents=True, exist_ok=True)
        if not self.is_s3:
            self._fetched = any(self.local_dir.iterdir())
            return self._fetched
        bucket, prefix = self._s3_prefix()
        keys = self._list(bucket, prefix)
        if f"{prefix}/{MARKER}" not in keys:
            logger.info("no complete compiled artifacts at s3://%s/%s: the model will be compiled", bucket, prefix)
            return False
        for key in keys:
            if key.endswith(f"/{MARKER}"):
                continue
            target = self.local_dir / key[len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            self._client().download_file(bucket, key, str(target))
        logger.info("loaded %d compiled artifact files from s3://%s/%s", len(keys) - 1, bucket, prefix)
        self._fetched = True
        return True

    def publish(self) -> None:
        """After a fresh compile: uploads the artifacts (S3 only), marker last."""
        if not self.is_s3 or self._fetched:
            return
        files = [path for path in sorted(self.local_dir.rglob("*")) if path.is_file()]
        if not files:
            logger.warning("nothing compiled under %s; nothing to publish", self.local_dir)
            return
        bucket, prefix = self._s3_prefix()
        client = self._client()
        for path in files:
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(self.local_dir).as_posix()}")
        client.put_object(Bucket=bucket, Key=f"{prefix}/{MARKER}", Body=b"")
        logger.info("published %d compiled artifact files to s3://%s/%s", len(files), bucket, prefix)

    def _list(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{prefix}/"}
        while True:
            page = self._client().list_objects_v2(**kwargs)
            keys.extend(item["Key"] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return keys
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
