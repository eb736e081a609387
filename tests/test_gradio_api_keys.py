"""The chat UI's API key: read from its file at every request, so that a rotated key is sent
from the next chat on, with no restart; a missing, empty or unreadable key file is said in
the chat; a 429 is retried after the server's Retry-After.

The key tests run the UI's client against a real HTTP server on 127.0.0.1 that checks the
Authorization header with the Serve app's own guard (tests/key_checking_api.py), in Python
and in Chromium. (The UI against the real local stack is tests/test_local_stack.py's chat test.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from tests.key_checking_api import ANSWER, MODEL, key_checking_api

# isort: split
# chat_ui is importable once serve_backend (imported above) has put images/gradio on sys.path.
from chat_ui.api_key import ApiKeyFile
from tests.test_gradio_ui import (  # noqa: F401 - browser and page are fixtures
    LOOPBACK,
    ChatBackend,
    Settings,
    SettingsError,
    _ask,
    _backend,
    _launch,
    _screenshot,
    _sse,
    _stream,
    _wait_for_answers,
    browser,
    free_port,
    page,
    pytestmark,  # Gradio's and pandas' own deprecation warnings: not ours to fix
)

FIRST_KEY = "sk-ui-first-0123456789abcdef"
SECOND_KEY = "sk-ui-second-0123456789abcdef"
FULL_ANSWER = "".join(ANSWER)


def _write_key(path: Path, text: str) -> None:
    """Replaces the file whole, as the kubelet swaps a mounted Secret's new version in."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


def test_a_shed_request_is_retried_after_the_servers_retry_after():
    shed = httpx.Response(429, headers={"Retry-After": "3"}, json={"error": {"message": "queue full"}})
    backend, calls, sleeps = _backend([shed, httpx.Response(503), _stream(_sse("ok"))])
    assert list(backend.respond("hi", []))[-1] == "ok"
    assert sleeps == [3.0, 2.0]  # the server's 3 s, then our own back-off (no Retry-After)
    assert len(calls) == 3


def test_the_ui_sends_the_key_in_its_file_and_a_rotated_key_from_the_next_chat(tmp_path):
    key_file = tmp_path / "api-key"
    _write_key(key_file, FIRST_KEY + "\n")  # a trailing newline, as `echo` writes it
    with key_checking_api({"chat-ui": FIRST_KEY}) as api:
        # No MODEL_NAME: the model is asked from /v1/models, with the key too.
        backend = ChatBackend(Settings(openai_base_url=api.url, api_key_file=str(key_file)))
        assert list(backend.respond("Capital of France?", []))[-1] == FULL_ANSWER
        assert api.seen == [f"Bearer {FIRST_KEY}"] * 2  # /v1/models, then the chat

        # Rotated: the API accepts only the new key, and the file holds it.
        api.accepted = {"chat-ui": SECOND_KEY}
        _write_key(key_file, SECOND_KEY)
        assert list(backend.respond("And of Italy?", []))[-1] == FULL_ANSWER
        assert api.seen[2:] == [f"Bearer {SECOND_KEY}"]


def test_the_ui_takes_its_named_entry_of_a_json_key_file(tmp_path):
    """The local stack's api-keys.json: the UI sends its own entry, and a new value of it."""
    key_file = tmp_path / "api-keys.json"
    _write_key(key_file, json.dumps({"chat-ui": FIRST_KEY, "user": "sk-user-0123456789abcdef"}))
    with key_checking_api({"chat-ui": FIRST_KEY}) as api:
        settings = Settings(openai_base_url=api.url, model_name=MODEL, api_key_file=str(key_file),
                            api_key_name="chat-ui")
        backend = ChatBackend(settings)
        assert list(backend.respond("hi", []))[-1] == FULL_ANSWER
        api.accepted = {"chat-ui": SECOND_KEY}
        _write_key(key_file, json.dumps({"chat-ui": SECOND_KEY, "user": "sk-user-0123456789abcdef"}))
        assert list(backend.respond("hi", []))[-1] == FULL_ANSWER
        assert api.seen == [f"Bearer {FIRST_KEY}", f"Bearer {SECOND_KEY}"]


def test_a_refused_key_is_said_with_the_file_to_check_and_not_retried(tmp_path):
    key_file = tmp_path / "api-key"
    _write_key(key_file, "sk-revoked-0123456789abcdef")
    with key_checking_api({"chat-ui": FIRST_KEY}) as api:
        backend = ChatBackend(Settings(openai_base_url=api.url, model_name=MODEL, api_key_file=str(key_file)))
        assert list(backend.respond("hi", [])) == [
            "⚠️ The model service refused the request: HTTP 401: Incorrect API key provided. "
            f"(the key in {key_file} is not one the API accepts)"]
        assert api.seen == ["Bearer sk-revoked-0123456789abcdef"]  # once: a wrong key is not retried


def _problem(path: Path, what: str) -> str:
    return (f"⚠️ The chat UI has no usable API key: {what}. Whoever runs this UI should check the key file "
            "that OPENAI_API_KEY_FILE names (on Kubernetes, the UI's key Secret mounted there).")


@pytest.mark.parametrize(
    "name,content,what",
    [
        (None, None, "{path} does not exist"),
        (None, "", "{path} is empty"),
        (None, " \n", "{path} is empty"),
        (None, "a directory", "{path} is a directory, not a file"),
        (None, "sk-one two", "{path} is not a key: it must be one word of printable ASCII, without spaces"),
        (None, b"\xff\xfe", "{path} is not UTF-8 text"),
        ("chat-ui", "sk-not-json", '{path} is not valid JSON (a JSON object {{"<name>": "<key>"}})'),
        ("chat-ui", '["sk-a-list"]', '{path} is not a JSON object {{"<name>": "<key>"}}'),
        ("chat-ui", '{"user": "sk-user-0123456789abcdef"}', "{path} has no key named 'chat-ui'"),
        ("chat-ui", '{"chat-ui": ""}', "the key named 'chat-ui' in {path} is empty"),
        ("chat-ui", '{"chat-ui": 7}', "the key named 'chat-ui' in {path} is not a string"),
    ],
    ids=["missing", "empty", "blank", "a-directory", "two-words", "not-utf8", "not-json", "not-an-object",
         "no-entry", "empty-entry", "not-a-string"],
)
def test_a_key_file_without_a_usable_key_is_said_in_the_chat_and_nothing_is_sent(tmp_path, name, content, what):
    path = tmp_path / "api-key"
    if content == "a directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with key_checking_api({"chat-ui": FIRST_KEY}) as api:
        backend = ChatBackend(Settings(openai_base_url=api.url, api_key_file=str(path), api_key_name=name))
        assert list(backend.respond("hi", [])) == [_problem(path, what.format(path=path))]
        # The title falls back to a generic one rather than failing the page.
        assert backend.title() == "LLM chat on Ray Serve"
        assert api.seen == []


def test_the_next_chat_after_the_key_file_appears_is_answered(tmp_path):
    key_file = tmp_path / "api-key"
    with key_checking_api({"chat-ui": FIRST_KEY}) as api:
        backend = ChatBackend(Settings(openai_base_url=api.url, model_name=MODEL, api_key_file=str(key_file)))
        assert "does not exist" in list(backend.respond("hi", []))[-1]
        _write_key(key_file, FIRST_KEY)
        assert list(backend.respond("hi", []))[-1] == FULL_ANSWER


# --- Settings -----------------------------------------------------------------------------


def test_the_key_file_and_its_entry_come_from_the_environment():
    settings = Settings.from_env({"OPENAI_API_KEY_FILE": "/etc/ray-serve-ha/api-key/api-key"})
    assert (settings.api_key_file, settings.api_key_name) == ("/etc/ray-serve-ha/api-key/api-key", None)
    named = Settings.from_env({"OPENAI_API_KEY_FILE": "/tmp/api-keys.json", "OPENAI_API_KEY_NAME": "chat-ui"})
    assert named.api_key() is not None and named.api_key().name == "chat-ui"
    assert Settings.from_env({}).api_key() is None  # an open API: no key sent


def test_a_key_in_the_environment_is_refused_without_showing_it():
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"OPENAI_API_KEY": "sk-very-secret"})
    assert str(raised.value) == (
        "OPENAI_API_KEY=<not shown>: the UI reads its key from a file, at each request, so that a rotated key "
        "is used without a restart: write the key to a file (on Kubernetes, mount its Secret as a volume), "
        "set OPENAI_API_KEY_FILE to its path and unset OPENAI_API_KEY")


def test_a_key_in_the_environment_beside_a_key_file_is_ignored():
    """A shell may export OPENAI_API_KEY for other clients; the file wins."""
    settings = Settings.from_env({"OPENAI_API_KEY": "sk-other", "OPENAI_API_KEY_FILE": "/run/key"})
    assert settings.api_key_file == "/run/key" and "sk-other" not in repr(settings)


def test_a_key_name_without_a_key_file_is_refused():
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"OPENAI_API_KEY_NAME": "chat-ui"})
    assert str(raised.value) == "OPENAI_API_KEY_NAME='chat-ui': names a key in OPENAI_API_KEY_FILE, which is not set"


# --- In Chromium --------------------------------------------------------------------------


def test_in_the_browser_a_rotated_key_is_used_by_the_next_chat_and_a_lost_one_is_said(tmp_path, page):  # noqa: F811
    key_file = tmp_path / "api-key"
    _write_key(key_file, FIRST_KEY)
    with key_checking_api({"chat-ui": FIRST_KEY}) as api:
        settings = Settings(openai_base_url=api.url, model_name=MODEL, api_key_file=str(key_file),
                            server_name=LOOPBACK, server_port=free_port())
        ui = _launch(settings)
        try:
            page.goto(f"http://{LOOPBACK}:{settings.server_port}")
            _ask(page, "What is the capital of France?")
            assert _wait_for_answers(page, 1).strip() == FULL_ANSWER

            api.accepted = {"chat-ui": SECOND_KEY}
            _write_key(key_file, SECOND_KEY)
            _ask(page, "And of Italy?")
            assert _wait_for_answers(page, 2).strip() == FULL_ANSWER
            assert api.seen == [f"Bearer {FIRST_KEY}", f"Bearer {SECOND_KEY}"]

            key_file.unlink()
            _ask(page, "Still there?")
            notice = _wait_for_answers(page, 3)
            assert "The chat UI has no usable API key" in notice and f"{key_file} does not exist" in notice
            assert "Traceback" not in page.content()
            _screenshot(page, "gradio-no-api-key.png")
        finally:
            ui.close()


def test_the_local_stack_gives_the_ui_its_entry_of_the_stacks_key_file():
    """`make demo`'s UI reads the `chat-ui` entry of api-keys.json, the file the replicas read,
    even where the user's shell exports OPENAI_API_KEY for other clients."""
    from local.api_keys import API_KEYS_FILE, CHAT_UI
    from local.stack import chat_ui_env

    settings = Settings.from_env({"OPENAI_API_KEY": "sk-from-the-shell", **chat_ui_env("tiny-mistral")})
    assert settings.api_key() == ApiKeyFile(str(API_KEYS_FILE), CHAT_UI)
