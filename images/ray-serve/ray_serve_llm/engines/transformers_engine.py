"""CPU engine on Hugging Face transformers: the local stack and the tests run it with the
tiny model. Not for production traffic (no batching, no paged KV cache)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from .base import Chunk, Engine, Prompt, SamplingParams


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, tokenizer: Any, model: Any) -> None:
        super().__init__(tokenizer)
        self.model = model
        self.max_context = getattr(model.config, "max_position_embeddings", None)
        # Generations running now, and those stopped early because their client left.
        self.active_generations = 0
        self.cancelled_generations = 0
        self._counters = threading.Lock()

    @classmethod
    def load(cls, model_path: str) -> TransformersEngine:
        """Loads from a local folder (see `model_source.resolve_model_path`)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        model.eval()
        return cls(tokenizer, model)

    async def generate(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]:
        import torch
        from transformers import AsyncTextIteratorStreamer, StoppingCriteria, StoppingCriteriaList

        cancelled = threading.Event()

        class _StopWhenCancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancelled.is_set()

        streamer = AsyncTextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        input_ids = torch.tensor([prompt.token_ids], dtype=torch.long)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
            if params.temperature > 0
            else {"do_sample": False}
        )
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=params.max_tokens,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_StopWhenCancelled()]),
            pad_token_id=self.tokenizer.pad_token_id,
            **sampling,
        )

        def run() -> Any:
            with self._counters:
                self.active_generations += 1
            try:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                with torch.inference_mode():
                    output = self.model.generate(**kwargs)
                if cancelled.is_set():
                    with self._counters:
                        self.cancelled_generations += 1
                return output
            except BaseException:
                # Without this the consumer would wait for text that never comes.
                streamer.end()
                raise
            finally:
                with self._counters:
                    self.active_generations -= 1

        # generate() blocks: it runs in a thread and hands text to the event loop.
        generation = asyncio.get_running_loop().run_in_executor(None, run)
        try:
            async for piece in streamer:
                # The streamer yields empty pieces (e.g. for special tokens): skip them.
                if piece:
                    yield Chunk(text=piece)
            output = await generation
        finally:
            # A client that went away: stop generating for it at the next token.
            cancelled.set()
        generated = output[0][input_ids.shape[1] :].tolist()
        ended_with_eos = bool(generated) and generated[-1] == self.tokenizer.eos_token_id
        yield Chunk(
            text="",
            finish_reason="stop" if ended_with_eos else "length",
            completion_tokens=len(generated),
        )

    async def check_health(self) -> None:
        if self.model is None:
            raise RuntimeError("the model is not loaded")

    def shutdown(self) -> None:
        self.model = None
