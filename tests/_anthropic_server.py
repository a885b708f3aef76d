"""A local HTTP server speaking the Anthropic Messages API wire format, for offline tests.

``POST /v1/messages`` answers with what ``responder(body, n)`` returns: a string (a normal
message whose single text block is that string), ``(status, headers, error_type)`` for an
error response shaped as the API shapes them, or a :class:`Raw` response sent as it is (a
malformed answer). The server counts requests, records their
bodies and headers, and tracks the most requests it held at once (``delay_s`` keeps each open).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclasses.dataclass
class Raw:
    """A response sent byte for byte (e.g. an HTML error page with status 200)."""

    body: bytes
    content_type: str = "application/json"
    status: int = 200


class MessagesServer:
    def __init__(self, responder: Callable[[dict, int], object] | None = None, delay_s: float = 0.0):
        self.responder = responder or (lambda body, n: "ok")
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                with server._lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    n = len(server.requests)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if self.path != "/v1/messages":
                        return self._send(404, {}, _error("not_found_error", self.path))
                    time.sleep(server.delay_s)
                    answer = server.responder(body, n)
                    if isinstance(answer, Raw):
                        return self._send_bytes(answer.status, {}, answer.body, answer.content_type)
                    if isinstance(answer, tuple):
                        status, headers, kind = answer
                        return self._send(status, headers, _error(kind, f"simulated {status}"))
                    return self._send(200, {"request-id": f"req_{n}"}, message(body, answer, n))
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, status, headers, payload):
                self._send_bytes(status, headers, json.dumps(payload).encode(), "application/json")

            def _send_bytes(self, status, headers, data, content_type):
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "MessagesServer":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def count(self) -> int:
        return len(self.requests)


def message(body: dict, text: str, n: int) -> dict:
    """The JSON of a normal answer to request ``body`` (the ``n``-th) with text ``text``."""
    prompt = body["messages"][0]["content"]
    return {"id": f"msg_{n:06d}", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": len(prompt) // 4 + 1, "output_tokens": len(text) // 4 + 1}}


def _error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def rate_limited(retry_after_ms: int = 10):
    return (429, {"retry-after-ms": str(retry_after_ms)}, "rate_limit_error")


def overloaded(retry_after_ms: int = 10):
    return (529, {"retry-after-ms": str(retry_after_ms)}, "overloaded_error")


def server_error(retry_after_ms: int = 10):
    return (500, {"retry-after-ms": str(retry_after_ms)}, "api_error")
