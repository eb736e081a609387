"""Engines behind one interface (`Engine`), chosen by the `engine` arg.

Each engine module is imported only when chosen: the CPU image has no vLLM, the
accelerator images need no test-only code.
"""

from __future__ import annotations

from ..args import AppArgs
from ..hf_token import read_token, token_scrubbed
from ..model_source import resolve_model_path
from .base import ChatTemplateError, Chunk, Engine, Prompt, SamplingParams

__all__ = ["ChatTemplateError", "Chunk", "Engine", "Prompt", "SamplingParams", "load_engine"]


def load_engine(args: AppArgs) -> Engine:
    """Downloads (if needed) and loads the model with the chosen engine. Blocking: on
    Neuron without cached artifacts it compiles for minutes. Errors never carry the token."""
    token = read_token(args.hf_token_env)
    with token_scrubbed(token, f"loading {args.model_id!r} with engine {args.engine!r}"):
        model_path = resolve_model_path(args.model_id, token)
        if args.engine == "transformers":
            from .transformers_engine import TransformersEngine

            return TransformersEngine.load(model_path)
        if args.engine == "vllm":
            from .vllm_engine import VllmEngine

            return VllmEngine.load(
                model_path, tensor_parallel_degree=args.tensor_parallel_degree, max_model_len=args.max_model_len
            )
        if args.engine == "neuron":
            from .neuron_engine import NeuronEngine

            return NeuronEngine.load_with_cache(
                model_path,
                model_id=args.model_id,
                tensor_parallel_degree=args.tensor_parallel_degree,
                max_model_len=args.max_model_len,
                compiled_artifacts=args.neuron_compiled_artifacts,
            )
    raise AssertionError(f"unhandled engine {args.engine!r}")  # AppArgs allows no other
