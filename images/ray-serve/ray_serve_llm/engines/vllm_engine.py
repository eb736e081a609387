"""vLLM engine (NVIDIA GPUs), the base of the Neuron engine.

We drive vLLM's `AsyncLLM` inside our own Serve deployment rather than using Ray Serve LLM
(`ray.serve.llm.build_openai_app`): Ray Serve LLM does not support Neuron, and one
deployment with one API for both accelerators (and the CPU engine) keeps the serve config,
the routes and the tests the same everywhere. vLLM is imported lazily: it exists only in
the accelerator images.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from .base import Chunk, Engine, Prompt, SamplingParams

logger = logging.getLogger(__name__)

# Sequences one replica decodes at once (continuous batching).
MAX_NUM_SEQS = 16


class VllmEngine(Engine):
    name = "vllm"

    def __init__(self, tokenizer: Any, engine: Any) -> None:
        super().__init__(tokenizer)
        self.engine = engine

    @classmethod
    def engine_kwargs(cls, model_path: str, *, tensor_parallel_degree: int, max_model_len: int) -> dict[str, Any]:
        """`AsyncEngineArgs` of this engine (a pure function: unit-tested without vLLM)."""
        return {
            "model": model_path,
            "tokenizer": model_path,
            "tensor_parallel_size": tensor_parallel_degree,
            "max_model_len": max_model_len,
            "max_num_seqs": MAX_NUM_SEQS,
            # The replica's actor holds all the GPUs it shards over (num_gpus = TP degree):
            # worker processes inside it, not Ray actors that would need more placement.
            "distributed_executor_backend": "mp",
            "disable_log_stats": False,
        }

    @classmethod
    def load(cls, model_path: str, *, tensor_parallel_degree: int, max_model_len: int) -> VllmEngine:
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        kwargs = cls.engine_kwargs(
            model_path, tensor_parallel_degree=tensor_parallel_degree, max_model_len=max_model_len
        )
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        return cls(AutoTokenizer.from_pretrained(model_path), engine)

    async def generate(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]:
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sampling = VllmSamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            # Deltas, not the cumulative text: each output is exactly the new piece.
            output_kind=RequestOutputKind.DELTA,
        )
        request_id = f"chat-{uuid.uuid4().hex}"
        finished = False
        generated = 0
        try:
            async for output in self.engine.generate(
                TokensPrompt(prompt_token_ids=list(prompt.token_ids)), sampling, request_id
            ):
                completion = output.outputs[0]
                generated += len(completion.token_ids)
                finished = output.finished
                if completion.text:
                    yield Chunk(text=completion.text, completion_tokens=generated)
                if finished:
                    yield Chunk(
                        text="",
                        finish_reason=completion.finish_reason or "stop",
                        completion_tokens=generated,
                    )
        finally:
            if not finished:  # the client went away: free the sequence's batch slot now
                await self.engine.abort(request_id)

    async def check_health(self) -> None:
        # Raises EngineDeadError when the engine core process died.
        await self.engine.check_health()

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
