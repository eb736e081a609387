"""A real HTTP server on 127.0.0.1 that answers like the OpenAI-compatible API and checks
`Authorization: Bearer <key>` with the Serve app's own guard functions (`presented_key`,
`match`): for the UI's key tests, which need to see which key each request carried and to
rotate the accepted key, without a Ray cluster.

It serves /v1/models and a streamed /v1/chat/completions; a missing or unknown key gets the
API's 401 (OpenAI's error body, `WWW-Authenticate: Bearer`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.serve_backend import LOOPBACK

# isort: split
# ray_serve_llm is importable once serve_backend has put images/ray-serve on sys.path.
from ray_serve_llm.api_keys import match
from ray_serve_llm.guard import presented_key
from ray_serve_llm.protocol import OpenAIError

MODEL = "tiny-mistral"
ANSWER = ("Paris", " is", " the", " capital.")


@dataclass
class KeyCheckingApi:
    url: str
    # The keys accepted now, {name: key}: replace it to rotate.
    accepted: dict[str, str]
    # The Authorization header of every request, in order (None: none sent).
    seen: list[str | None] = field(default_factory=list)


def _chunk(piece: str) -> bytes:
    event = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
    return f"data: {json.dumps(event)}\n\n".encode()


@contextmanager
def key_checking_api(accepted: dict[str, str]) -> Iterator[KeyCheckingApi]:
    api = KeyCheckingApi(url="", accepted=dict(accepted))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def _admitted(self) -> bool:
            headers = self.headers.get_all("Authorization") or []
            api.seen.append(headers[0] if headers else None)
            try:
                if match(presented_key(headers), api.accepted) is None:
                    raise OpenAIError("Incorrect API key provided.", status_code=401, code="invalid_api_key",
                                      headers={"WWW-Authenticate": "Bearer"})
            except OpenAIError as error:
                self._json(error.status_code, error.body(), error.headers)
                return False
            return True

        def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path != "/v1/models":
                return self._json(404, {"error": {"message": "not found"}})
            if self._admitted():
                self._json(200, {"object": "list", "data": [
                    {"id": MODEL, "object": "model", "created": 0, "owned_by": "test"}]})

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/chat/completions":
                return self._json(404, {"error": {"message": "not found"}})
            if not self._admitted():
                return
            # HTTP/1.0: the stream ends when the connection closes.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in ANSWER:
                self.wfile.write(_chunk(piece))
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    server.daemon_threads = True
    api.url = f"http://{LOOPBACK}:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
