"""A fake OpenAI-compatible endpoint for the availability probe (lambda/serve_probe) and the
readiness gate's API check (lambda/rayservice_ready): scripted chat answers on 127.0.0.1, one
per request ("ok", "slow", "500", "no-content"), and scripted model lists ("ok", "401", "500",
"empty").
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "mistralai/Mistral-7B-Instruct-v0.2"
# How long a "slow" answer takes (beyond the probe's time-out in the tests).
SLOW_S = 1.0


@dataclass
class FakeServe:
    """Scripted chat answers, one per request ("ok", "slow", "500", "no-content"); the
    last one repeats. Records every request it received."""

    script: list[str] = field(default_factory=lambda: ["ok"])
    models: list[str] = field(default_factory=lambda: [MODEL])
    received: list[tuple[str, str, dict | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set: every request needs `Authorization: Bearer <api_key>` (else 401), as the Serve app.
    api_key: str | None = None
    # GET /v1/models answers, one per request ("ok", "401", "500", "empty"); the last repeats.
    models_script: list[str] = field(default_factory=lambda: ["ok"])

    def next_answer(self) -> str:
        with self.lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def next_models_answer(self) -> str:
        with self.lock:
            return self.models_script.pop(0) if len(self.models_script) > 1 else self.models_script[0]


def _completion(content: str | None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "length"}],
    }


def start_fake_serve(serve: FakeServe) -> ThreadingHTTPServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 that answers as `serve` scripts it."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _refuse(self) -> None:
            self._reply(401, {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}})

        def _refused(self) -> bool:
            if serve.api_key is None or self.headers.get("Authorization") == f"Bearer {serve.api_key}":
                return False
            self._refuse()
            return True

        def do_GET(self):
            serve.received.append(("GET", self.path, None))
            if self._refused():
                return
            if self.path != "/v1/models":
                self._reply(404, {"detail": "Not Found"})
                return
            answer = serve.next_models_answer()
            if answer == "401":
                self._refuse()
            elif answer == "500":
                self._reply(500, {"error": {"message": "Internal Server Error"}})
            else:
                models = [] if answer == "empty" else serve.models
                self._reply(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            serve.received.append(("POST", self.path, body))
            if self._refused():
                return
            answer = serve.next_answer()
            if answer == "slow":
                time.sleep(SLOW_S)
                answer = "ok"
            if answer == "500":
                self._reply(500, {"error": {"message": "replica died"}})
            elif answer == "no-content":
                self._reply(200, {"choices": []})
            elif answer == "null-content":
                self._reply(200, _completion(None))
            elif answer == "not-json":
                payload = b"<html>bad gateway</html>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            else:
                self._reply(200, _completion("ok"))

        def log_message(self, *args):  # keep test output quiet
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            # The client gave up on a slow answer: the broken pipe is expected.
            pass

    http_server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=http_server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return http_server
