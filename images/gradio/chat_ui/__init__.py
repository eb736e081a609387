"""A streaming Gradio chat UI for the OpenAI-compatible Ray Serve LLM endpoint.

    python -m chat_ui            (configured by environment variables, see `settings.py`)
"""
