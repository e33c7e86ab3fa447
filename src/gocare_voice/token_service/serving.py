"""How ``gocare token-server`` runs uvicorn: connection limits and no trust in forwarded headers by default.

Why: uvicorn with its defaults has no limit on header size (httptools buffers whatever arrives: six requests
with 24 MB of headers took the process from 175 MB to 1.2 GB), no timeout for reading headers or a body
(an idle or byte-a-second connection is never closed) and no cap on open connections (300 idle sockets on a
256-descriptor limit took the service down). ``GuardedHttpProtocol`` is uvicorn's httptools protocol (the
fast one the benchmarks use) with those four limits; each is a setting (``ConnectionLimits``) and a
``token-server`` option. A proxy in front should still add its own (docs/security.md).

Forwarded headers: uvicorn by default believes ``X-Forwarded-For`` from 127.0.0.1, so behind a local
tunnel or proxy that passes the header through, every request could claim a fresh client address and a
fresh per-IP rate limit. Here they are trusted only from the proxies ``GOCARE_TRUSTED_PROXIES`` (or
``gocare token-server --forwarded-allow-ips``) names.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gocare_voice.settings import Settings  # used at run time by from_settings


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout: float
    body_timeout: float
    idle_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes, header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout, idle_timeout=settings.http_idle_timeout,
            max_connections=settings.http_max_connections,
        )


def _refusal(status: bytes, text: str) -> bytes:
    body = text.encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size limit, header and body read timeouts and a cap on
    open connections. ``limits`` is set by ``uvicorn_options``; a process that imports this class fresh
    (``--workers N`` spawns them) reads the settings itself."""

    limits: ClassVar[ConnectionLimits | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if GuardedHttpProtocol.limits is None:
            from gocare_voice.settings import load_settings

            GuardedHttpProtocol.limits = ConnectionLimits.from_settings(
                load_settings(env_file=os.environ.get("GOCARE_ENV_FILE", ".env"))
            )
        self._limits: ConnectionLimits = GuardedHttpProtocol.limits
        self._timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = True
        self._header_bytes = 0  # raw bytes received since the current request's headers began
        self._refused = False

    # --- the timer: one per connection, for whichever read is pending ----------------------------------
    def _arm(self, seconds: float, on_expiry: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, on_expiry)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: bytes, text: str) -> None:
        """Answer and close; nothing more of this connection is parsed or passed to the app."""
        self._refused = True
        self._disarm()
        if not self.transport.is_closing():
            if self._awaiting_headers:  # no request of this connection is with the app: answer it
                self.transport.write(_refusal(status, text))
            self.transport.close()

    def _header_timeout(self) -> None:
        self._refuse(b"408 Request Timeout", "request headers not received in time")

    def _body_timeout(self) -> None:
        # the app may be reading the body: closing makes its receive() report a disconnect
        self._refused = True
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    # --- uvicorn's protocol hooks ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn serves TCP: always a Transport
        super().connection_made(transport)
        if len(self.connections) > self._limits.max_connections:
            self._refuse(b"503 Service Unavailable", "too many open connections; try again")
            return
        self._arm(self._limits.header_timeout, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # headers still incomplete after more than the limit arrived: stop buffering them (httptools keeps
        # a header value whole in memory until it ends)
        if not self._refused and self._awaiting_headers and self._header_bytes > self._limits.max_header_bytes:
            self._refuse(b"431 Request Header Fields Too Large", "request headers too large")

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._arm(self._limits.header_timeout, self._header_timeout)

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._limits.max_header_bytes:
            self._refuse(b"431 Request Header Fields Too Large", "request headers too large")
            return
        self._awaiting_headers = False
        self._header_bytes = 0
        self._arm(self._limits.body_timeout, self._body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._arm(self._limits.body_timeout, self._body_timeout)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()  # the app answers in its own time; idle time after the answer is keep-alive's
        if not self._refused:
            super().on_message_complete()


DESCRIPTOR_RESERVE = 64
"""Descriptors kept for everything but client connections: the listening socket, logs, the decoder pool's
pipes, provider and LiveKit connections."""


def fit_to_descriptors(limits: ConnectionLimits) -> tuple[ConnectionLimits, str | None]:
    """``max_connections`` lowered to what the process's descriptor limit (``ulimit -n``) can hold, with a
    line saying so: 300 idle sockets on a 256-descriptor limit took the service down even with a cap of 512."""
    import dataclasses
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or limits.max_connections + DESCRIPTOR_RESERVE <= soft:
        return limits, None
    fitted = max(1, soft - DESCRIPTOR_RESERVE)
    return dataclasses.replace(limits, max_connections=fitted), (
        f"GOCARE_HTTP_MAX_CONNECTIONS={limits.max_connections} does not fit the descriptor limit ({soft}, "
        f"ulimit -n); using {fitted}"
    )


def uvicorn_options(limits: ConnectionLimits, trusted_proxies: list[str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` that apply the limits and the forwarded-header policy:
    ``X-Forwarded-For``/``-Proto`` are read only from ``trusted_proxies`` (``GOCARE_TRUSTED_PROXIES`` or
    ``--forwarded-allow-ips``), and from nobody when it is empty (never uvicorn's default of 127.0.0.1)."""
    GuardedHttpProtocol.limits = limits
    trusted = ",".join(trusted_proxies or [])
    return {
        "http": GuardedHttpProtocol,
        "ws": "none",  # the service speaks no websockets: no upgrade path around the limits
        "timeout_keep_alive": limits.idle_timeout,
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or None,
        "server_header": False,
    }
