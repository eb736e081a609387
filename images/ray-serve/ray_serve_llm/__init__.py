"""Ray Serve LLM inference: an OpenAI-compatible Serve application (`ray_serve_llm.app:build_app`)
with engines for Inferentia2 (`neuron`), NVIDIA GPUs (`vllm`) and CPU (`transformers`), and a
tiny offline model for local runs and tests (`python -m ray_serve_llm.tiny_model OUT_DIR`).

Importing the package imports nothing heavy; each module imports what it needs.
"""
