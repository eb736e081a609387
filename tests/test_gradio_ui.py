"""The Gradio chat UI (images/gradio), as a person uses it and piece by piece.

The browser tests run the UI on 127.0.0.1 against the real Serve app (see serve_backend)
and drive it in headless Chromium (Debian's `chromium`, through Playwright's sync API):
a question gets a streamed answer; with the backend dead the UI says so clearly. Every
request the page makes outside the UI's own address is refused and reported. Screenshots
go to test-artifacts/.

The retry logic is tested on its own with an in-memory transport (no network at all).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import httpx
import openai
import pytest

from tests.serve_backend import LOOPBACK, ROOT, SERVED_MODEL, free_port, shared_backend

# isort: split
# chat_ui is importable only once serve_backend has put images/gradio on sys.path.
from chat_ui.app import API_NAME, build_ui
from chat_ui.chat import UNAVAILABLE, ChatBackend, to_openai_messages
from chat_ui.settings import Settings, SettingsError

# Ray Serve's and Gradio's own deprecation warnings (pydantic, pandas): not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --- Settings ----------------------------------------------------------------------------


def test_settings_defaults_bind_all_interfaces():
    settings = Settings.from_env({})
    assert (settings.server_name, settings.server_port) == ("0.0.0.0", 7860)
    assert settings.model_name is None
    assert [settings.retry_delay_s(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]


def test_settings_from_env():
    settings = Settings.from_env(
        {
            "OPENAI_BASE_URL": "http://ray-serve-llm-serve-svc:8000/v1",
            "MODEL_NAME": "mistral",
            "GRADIO_SERVER_PORT": "8080",
            "RETRY_ATTEMPTS": "3",
            "RETRY_INITIAL_DELAY_S": "0.5",
            "OPENAI_API_KEY_FILE": "/etc/ray-serve-ha/api-key/api-key",
        }
    )
    assert settings.openai_base_url == "http://ray-serve-llm-serve-svc:8000/v1"
    assert (settings.model_name, settings.server_port, settings.retry_attempts) == ("mistral", 8080, 3)
    assert settings.api_key_file == "/etc/ray-serve-ha/api-key/api-key"


@pytest.mark.parametrize(
    "env,message",
    [
        ({"OPENAI_BASE_URL": "ray-serve:8000"}, "OPENAI_BASE_URL='ray-serve:8000': must be an http(s) URL, e.g. http://host:8000/v1"),
        ({"GRADIO_SERVER_PORT": "http"}, "GRADIO_SERVER_PORT='http': must be a int"),
        ({"GRADIO_SERVER_PORT": "70000"}, "GRADIO_SERVER_PORT=70000: must be 1-65535"),
        ({"RETRY_ATTEMPTS": "0"}, "RETRY_ATTEMPTS=0: must be 1-100"),
        (
            {"RETRY_INITIAL_DELAY_S": "5", "RETRY_MAX_DELAY_S": "1"},
            "RETRY_MAX_DELAY_S=1.0: must be at least RETRY_INITIAL_DELAY_S",
        ),
    ],
)
def test_bad_settings_are_refused_by_name(env, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value) == message


# --- Conversation -------------------------------------------------------------------------


def test_gradio6_history_becomes_openai_messages():
    history = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": "Tell me more"},
        {"role": "assistant", "content": [{"type": "text", "text": "⚠️ The model service is unavailable right now"}]},
    ]
    assert to_openai_messages("Again, please", history) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again, please"},
    ]


# --- Retries, with an in-memory backend ---------------------------------------------------


def _sse(*pieces: str) -> bytes:
    events = [{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
               "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"


def _backend(responses, settings=None):
    """A ChatBackend whose HTTP calls are answered, in order, from `responses`."""
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        answer = responses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    settings = settings or Settings(openai_base_url=f"http://{LOOPBACK}:9/v1", model_name="m", retry_attempts=4)
    client = openai.OpenAI(
        base_url=settings.openai_base_url, api_key="x", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handle)),
    )
    sleeps: list[float] = []
    return ChatBackend(settings, client=client, sleep=sleeps.append), calls, sleeps


def _stream(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def test_streams_the_answer_as_it_grows():
    backend, calls, _ = _backend([_stream(_sse("Par", "is"))])
    assert list(backend.respond("Capital of France?", [])) == ["Par", "Paris"]
    assert calls[0]["stream"] is True and calls[0]["model"] == "m"
    assert calls[0]["messages"] == [{"role": "user", "content": "Capital of France?"}]
    # No answer length of the UI's own: the server's limit (the serve config's) applies.
    assert "max_tokens" not in calls[0]


def test_a_configured_answer_length_is_sent():
    settings = Settings(openai_base_url=f"http://{LOOPBACK}:9/v1", model_name="m", max_tokens=32)
    backend, calls, _ = _backend([_stream(_sse("ok"))], settings)
    list(backend.respond("hi", []))
    assert calls[0]["max_tokens"] == 32


@pytest.mark.parametrize(
    "model_name,title",
    [("mistralai/Mistral-7B-Instruct-v0.2", "Mistral-7B-Instruct-v0.2 on Ray Serve"),
     ("tiny-mistral", "tiny-mistral on Ray Serve")],
)
def test_the_title_names_the_served_model(model_name, title):
    settings = Settings(openai_base_url=f"http://{LOOPBACK}:9/v1", model_name=model_name)
    assert ChatBackend(settings).title() == title
    assert ChatBackend(Settings(model_name=model_name, title="Our chat")).title() == "Our chat"


def test_the_title_names_the_device_it_is_told():
    settings = Settings.from_env({"MODEL_NAME": "mistralai/Mistral-7B-Instruct-v0.2", "UI_DEVICE": "Inferentia2"})
    assert ChatBackend(settings).title() == "Mistral-7B-Instruct-v0.2 on Ray Serve (Inferentia2)"


def test_retries_with_backoff_while_the_backend_restarts():
    backend, calls, sleeps = _backend(
        [httpx.ConnectError("refused"), httpx.Response(503, json={"error": {"message": "no replica"}}),
         httpx.Response(502), _stream(_sse("ok"))]
    )
    outputs = list(backend.respond("hi", []))
    assert outputs[-1] == "ok"
    assert sum("retrying (attempt" in out for out in outputs) == 3
    assert sleeps == [1.0, 2.0, 4.0]
    assert len(calls) == 4


def test_a_stream_cut_half_way_is_retried():
    cut = httpx.Response(200, headers={"content-type": "text/event-stream"},
                         stream=_Broken(b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m",'
                                        b'"choices":[{"index":0,"delta":{"content":"Pa"},"finish_reason":null}]}\n\n'))
    backend, _, _ = _backend([cut, _stream(_sse("Paris"))])
    outputs = list(backend.respond("hi", []))
    assert outputs[0] == "Pa" and outputs[-1] == "Paris"


class _Broken(httpx.SyncByteStream):
    def __init__(self, first: bytes):
        self.first = first

    def __iter__(self):
        yield self.first
        raise httpx.RemoteProtocolError("peer closed connection")


def test_gives_up_with_a_clear_message():
    backend, calls, sleeps = _backend([httpx.ConnectError("refused")] * 4)
    last = list(backend.respond("hi", []))[-1]
    assert last.startswith(f"⚠️ {UNAVAILABLE}: retrying failed after 4 attempts (cannot connect)")
    assert len(calls) == 4 and sleeps == [1.0, 2.0, 4.0]


def test_a_refused_request_is_not_retried():
    refusal = httpx.Response(400, json={"error": {"message": "Invalid 'max_tokens'", "type": "invalid_request_error",
                                                  "param": "max_tokens", "code": "invalid_value"}})
    backend, calls, _ = _backend([refusal])
    assert list(backend.respond("hi", [])) == [
        "⚠️ The model service refused the request: HTTP 400: Invalid 'max_tokens'"
    ]
    assert len(calls) == 1


# --- In the browser, against the real Serve app ------------------------------------------


@pytest.fixture(scope="module")
def serve_backend(request):
    return shared_backend(request)


def _launch(settings: Settings):
    ui = build_ui(settings)
    ui.queue().launch(
        server_name=settings.server_name,
        server_port=settings.server_port,
        prevent_thread_lock=True,
        ssr_mode=False,
        quiet=True,
    )
    return ui


@pytest.fixture(scope="module")
def live_ui(serve_backend):
    settings = Settings(openai_base_url=serve_backend.openai_url, model_name=None,
                        server_name=LOOPBACK, server_port=free_port())
    ui = _launch(settings)
    yield f"http://{LOOPBACK}:{settings.server_port}"
    ui.close()


@pytest.fixture(scope="module")
def dead_ui():
    """The UI pointed at a port where nothing listens: the backend is down."""
    settings = Settings(openai_base_url=f"http://{LOOPBACK}:{free_port()}/v1", model_name=SERVED_MODEL,
                        retry_attempts=3, retry_initial_delay_s=0.1, retry_max_delay_s=0.2,
                        server_name=LOOPBACK, server_port=free_port())
    ui = _launch(settings)
    yield f"http://{LOOPBACK}:{settings.server_port}"
    ui.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A page that may only talk to the loopback address; anything else is refused and
    fails the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = context.new_page()
    outside: list[str] = []

    def only_loopback(route):
        url = route.request.url
        if url.startswith(f"http://{LOOPBACK}:") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", only_loopback)
    yield page
    context.close()
    assert outside == [], f"the page tried to reach outside 127.0.0.1: {outside}"


def _ask(page, question: str) -> None:
    # Not by placeholder: Gradio blanks it while an answer streams.
    box = page.locator("textarea").first
    box.fill(question)  # waits until the box is editable again
    box.press("Enter")


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


# Records every distinct text of the last answer bubble, to see the answer grow.
_WATCH_ANSWER = """() => {
  window.answerStates = [];
  new MutationObserver(() => {
    const bubbles = document.querySelectorAll('.message.bot');
    if (!bubbles.length) return;
    const text = bubbles[bubbles.length - 1].innerText.trim();
    const states = window.answerStates;
    if (text && states[states.length - 1] !== text) states.push(text);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def _wait_for_answers(page, count: int) -> str:
    """Waits until the `count`-th answer is complete; returns its text. While an answer
    streams, Gradio disables the textbox: enabled again means done."""
    page.wait_for_function(
        """n => {
          const bots = document.querySelectorAll('.message.bot');
          const users = document.querySelectorAll('.message.user');
          const box = document.querySelector('textarea');
          if (bots.length !== n || users.length !== n || !box || box.disabled) return false;
          const text = bots[n - 1].innerText.trim();
          return text.length > 0 && !text.includes('Loading content');
        }""",
        arg=count,
        timeout=45_000,
    )
    return page.locator(".message.bot").nth(count - 1).inner_text()


def test_ui_streams_an_answer_and_keeps_the_conversation(live_ui, page):
    page.goto(live_ui)
    # Asked from /v1/models: the page names the model actually served.
    page.wait_for_function("t => document.title === t", arg=f"{SERVED_MODEL} on Ray Serve", timeout=30_000)
    page.evaluate(_WATCH_ANSWER)
    _ask(page, "What is the capital of France?")
    answer = _wait_for_answers(page, 1)
    assert answer.strip() and "⚠️" not in answer and "⏳" not in answer
    states = [s for s in page.evaluate("window.answerStates") if "Loading content" not in s]
    assert len(states) >= 3, f"the answer should arrive in pieces, saw {states}"
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(states)), states

    _ask(page, "Tell me more.")
    _wait_for_answers(page, 2)
    users = page.locator(".message.user")
    assert [users.nth(i).inner_text().strip() for i in range(users.count())] == [
        "What is the capital of France?",
        "Tell me more.",
    ]
    _screenshot(page, "gradio-chat.png")


def test_ui_says_clearly_when_the_backend_is_down(dead_ui, page):
    page.goto(dead_ui)
    _ask(page, "Hello?")
    notice = page.get_by_text("retrying failed after 3 attempts")
    notice.wait_for(timeout=30_000)
    assert UNAVAILABLE in page.locator(".message.bot").last.inner_text()
    _screenshot(page, "gradio-backend-down.png")


def test_chat_function_has_an_explicit_api_name(live_ui):
    info = httpx.get(f"{live_ui}/gradio_api/info").json()
    assert f"/{API_NAME}" in info["named_endpoints"]
