"""The Gradio 6 chat UI: `build_ui(settings)` makes it, `main()` serves it."""

from __future__ import annotations

import logging
import os

# Before Gradio is imported: it reads this at import time. No telemetry from inside the
# cluster (and machines without internet would wait on it).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr

from .api_key import ApiKeyError
from .chat import ChatBackend
from .settings import Settings, SettingsError

logger = logging.getLogger(__name__)

# Clients (and tests) call the chat function by this name: /gradio_api/call/chat.
API_NAME = "chat"


def build_ui(settings: Settings, *, backend: ChatBackend | None = None) -> gr.Blocks:
    backend = backend or ChatBackend(settings)
    title = backend.title()
    with gr.Blocks(title=title, fill_height=True) as ui:
        gr.Markdown(f"## {title}\nAnswers stream from the OpenAI-compatible API at `{settings.openai_base_url}`.")
        gr.ChatInterface(
            fn=backend.respond,
            chatbot=gr.Chatbot(label="Conversation", placeholder="Ask the model anything.", scale=1),
            textbox=gr.Textbox(placeholder="Type a message and press Enter", submit_btn=True, scale=7),
            api_name=API_NAME,
            fill_height=True,
            autofocus=True,
        )
    return ui


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as error:
        logger.error("%s", error)
        return 2
    logger.info("starting with %r", settings)
    key_file = settings.api_key()
    if key_file is not None:
        try:
            key_file.read()
        except ApiKeyError as problem:
            # Not fatal: the file may appear later (it is read at each request); each chat says so meanwhile.
            logger.warning("no usable API key yet: %s", problem)
    ui = build_ui(settings)
    # Each queued event is one streaming answer; the backend batches them.
    ui.queue(default_concurrency_limit=32).launch(
        server_name=settings.server_name,
        server_port=settings.server_port,
        ssr_mode=False,
        footer_links=[],
        show_error=False,
    )
    return 0
