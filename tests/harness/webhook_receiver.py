"""A receiver of the end-of-call webhook for tests: a real HTTP server on loopback, in a thread, checking
each request's ``GoCare-Signature`` the way docs/call-records.md tells a receiver to (its own HMAC, written
from the documentation, not our ``records.webhook.verify``), refusing stale timestamps."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HEADER = "GoCare-Signature"
TOLERANCE = 300


def receiver_accepts(header: str, body: bytes, *, secret: str, tolerance: int = TOLERANCE) -> bool:
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


@dataclass
class Received:
    header: str
    body: bytes
    signed: bool
    at: float

    @property
    def call(self) -> dict[str, Any]:
        return json.loads(self.body)["call"]  # type: ignore[no-any-return]


class WebhookReceiver:
    """Answers ``status`` to a correctly signed POST and 401 to any other; keeps everything it got."""

    def __init__(self, port: int, *, secret: str, status: int = 200) -> None:
        self.port = port
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                header = self.headers.get(HEADER, "")
                signed = receiver_accepts(header, body, secret=secret)
                with receiver._lock:
                    receiver.received.append(Received(header, body, signed, time.monotonic()))
                self.send_response(status if signed else 401)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/gocare/calls"

    def for_room(self, room: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.call.get("room") == room]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
