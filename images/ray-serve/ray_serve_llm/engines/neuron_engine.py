"""Neuron engine: vLLM on NxD Inference (Inferentia2 / Trainium), from the Neuron DLC
`pytorch-inference-vllm-neuronx:0.16.0-neuronx-py312-sdk2.31.1`.

On inf2.8xlarge (one Inferentia2 chip = 2 NeuronCores, 32 GiB) Mistral-7B runs with
tensor parallel degree 2. NxD Inference compiles the model for a fixed batch size and
sequence length at start (minutes); `compiled_artifacts.ArtifactCache` lets replacement
workers reuse the result.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from ..compiled_artifacts import DEFAULT_LOCAL_ROOT, ArtifactCache, CompileKey
from .vllm_engine import VllmEngine

logger = logging.getLogger(__name__)

# Sequences decoded at once (continuous batching). The compiled graphs are built for this
# batch size; 4 is what one inf2 chip sustains for a 7-8B model at TP=2.
NEURON_MAX_NUM_SEQS = 4


def neuron_sdk_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neuronx-distributed-inference")
    except PackageNotFoundError:
        return "unknown"


class NeuronEngine(VllmEngine):
    name = "neuron"

    @classmethod
    def engine_kwargs(cls, model_path: str, *, tensor_parallel_degree: int, max_model_len: int) -> dict[str, Any]:
        return {
            "model": model_path,
            "tokenizer": model_path,
            "tensor_parallel_size": tensor_parallel_degree,
            "max_model_len": max_model_len,
            "max_num_seqs": NEURON_MAX_NUM_SEQS,
            # Neuron's vLLM integration runs without these (see the NxDI vLLM user guide).
            "enable_prefix_caching": False,
            "enable_chunked_prefill": False,
            "disable_log_stats": False,
            "additional_config": {
                "override_neuron_config": {
                    "tp_degree": tensor_parallel_degree,
                    "is_continuous_batching": True,
                    "batch_size": NEURON_MAX_NUM_SEQS,
                    "ctx_batch_size": 1,
                    "tkg_batch_size": NEURON_MAX_NUM_SEQS,
                    "seq_len": max_model_len,
                    "max_context_length": max_model_len,
                    "enable_bucketing": True,
                }
            },
        }

    @staticmethod
    def configure_environment(compiled_dir: str, environ: MutableMapping[str, str] | None = None) -> None:
        """The process environment NxD Inference reads when vLLM starts it."""
        env = os.environ if environ is None else environ
        env["VLLM_NEURON_FRAMEWORK"] = "neuronx-distributed-inference"
        env["NEURON_COMPILED_ARTIFACTS"] = compiled_dir

    @classmethod
    def load_with_cache(
        cls,
        model_path: str,
        *,
        model_id: str,
        tensor_parallel_degree: int,
        max_model_len: int,
        compiled_artifacts: str | None,
        local_root: Path = DEFAULT_LOCAL_ROOT,
    ) -> NeuronEngine:
        """Loads the engine with NxD Inference pointed at the cache's folder for this
        configuration: downloaded from S3 when another worker compiled it (NxD Inference
        then loads instead of compiling), published after a fresh compile. `local_root`:
        where S3 artifacts are kept on this node."""
        cache = None
        if compiled_artifacts:
            cache = ArtifactCache(
                location=compiled_artifacts,
                local_root=local_root,
                key=CompileKey(
                    model_id=model_id,
                    tensor_parallel_degree=tensor_parallel_degree,
                    max_model_len=max_model_len,
                    max_num_seqs=NEURON_MAX_NUM_SEQS,
                    neuron_sdk=neuron_sdk_version(),
                ),
            )
            try:
                cache.fetch()
            except Exception as error:
                logger.warning("compiled artifacts cache unusable (%s): compiling instead", error)
                shutil.rmtree(cache.local_dir, ignore_errors=True)
                cache.local_dir.mkdir(parents=True, exist_ok=True)
            compiled_dir = str(cache.local_dir)
        else:
            # NxD Inference's own default: compiled on every start, next to the weights.
            compiled_dir = os.path.join(model_path, "neuron-compiled-artifacts")
        cls.configure_environment(compiled_dir)
        logger.info("NEURON_COMPILED_ARTIFACTS=%s", compiled_dir)
        engine = cls.load(model_path, tensor_parallel_degree=tensor_parallel_degree, max_model_len=max_model_len)
        if cache is not None:
            try:
                cache.publish()
            except Exception as error:
                logger.warning("could not publish compiled artifacts to %s: %s", compiled_artifacts, error)
        return engine
