"""The end-of-call webhook and the alert: the record as JSON, signed the way payment and code-hosting
webhooks are.

Two event types (``type`` in the body): ``call.ended`` once per call, after its summary and analysis, with
the whole record (the analysis under ``call.analysis``); ``call.alert`` as soon as an analysis has one of
the plan's alert values, with the record without its transcript and the ``alerts`` that fired.

``GoCare-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with GOCARE_CALL_WEBHOOK_SECRET>``.
The timestamp is inside what is signed, so a receiver that rejects old timestamps (``verify``'s
``tolerance``) cannot be fed a captured request again later. Delivery retries with exponential backoff on
a connection error, a timeout, a 429 or a 5xx; a 4xx other than 429 is the receiver's final word. Failures
are logged with the call id and the reason, never the body (it holds the transcript).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("gocare.records.webhook")

SIGNATURE_HEADER = "GoCare-Signature"
EVENT_TYPE = "call.ended"
ALERT_EVENT_TYPE = "call.alert"
DEFAULT_TOLERANCE = 300
"""Seconds a receiver should accept a timestamp for (either side of its own clock)."""


def signature(body: bytes, *, secret: str, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def sign(body: bytes, *, secret: str, timestamp: int | None = None) -> str:
    """The header value for ``body``: ``t=...,v1=...``."""
    when = int(time.time()) if timestamp is None else timestamp
    return f"t={when},v1={signature(body, secret=secret, timestamp=when)}"


def verify(header: str | None, body: bytes, *, secret: str, tolerance: int = DEFAULT_TOLERANCE,
           now: float | None = None) -> bool:
    """What a receiver does (the Python snippet of docs/call-records.md is this): parse the header, refuse
    a timestamp outside ``tolerance``, compare the signature in constant time."""
    if not header:
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts.get("t", [""])[0])
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(body, secret=secret, timestamp=timestamp)
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))


def envelope(record: Mapping[str, Any], *, sent_at: float | None = None) -> bytes:
    """The body: ``{"type": "call.ended", "sent_at": ..., "call": <the record>}`` (compact JSON)."""
    import orjson

    return orjson.dumps({"type": EVENT_TYPE, "sent_at": int(time.time() if sent_at is None else sent_at),
                         "call": dict(record)})


def alert_envelope(record: Mapping[str, Any], alerts: list[dict[str, Any]], *, sent_at: float | None = None) -> bytes:
    """``{"type": "call.alert", "sent_at": ..., "alerts": [{"field", "value"}], "call": <record, no turns>}``."""
    import orjson

    call = {k: v for k, v in record.items() if k != "turns"}
    return orjson.dumps({"type": ALERT_EVENT_TYPE, "sent_at": int(time.time() if sent_at is None else sent_at),
                         "alerts": list(alerts), "call": call})


@dataclass(frozen=True, slots=True)
class Delivery:
    delivered: bool
    attempts: int
    last_error: str | None = None


class WebhookSender:
    """POSTs bodies to one URL. ``retries`` further attempts after the first, waiting ``backoff`` x 2^n
    (capped at ``max_wait``) between them; each attempt bounded by ``timeout``."""

    def __init__(self, *, url: str, secret: str, retries: int = 4, timeout: float = 5.0, backoff: float = 0.5,
                 max_wait: float = 8.0) -> None:
        self.url = url
        self._secret = secret
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.max_wait = max_wait

    @classmethod
    def from_settings(cls, settings: Any) -> WebhookSender | None:
        if not settings.call_webhook_url or settings.call_webhook_secret is None:
            return None
        return cls(url=settings.call_webhook_url, secret=settings.call_webhook_secret.get_secret_value(),
                   retries=settings.call_webhook_retries, timeout=settings.call_webhook_timeout)

    @classmethod
    def for_alerts(cls, settings: Any) -> WebhookSender | None:
        """``call.alert``'s own URL when set, else the end-of-call webhook's; the same secret and retries."""
        url = settings.call_alert_webhook_url or settings.call_webhook_url
        if not url or settings.call_webhook_secret is None:
            return None
        return cls(url=url, secret=settings.call_webhook_secret.get_secret_value(),
                   retries=settings.call_webhook_retries, timeout=settings.call_webhook_timeout)

    async def deliver(self, body: bytes, *, call_id: str, what: str = "call webhook",
                      first_attempt: asyncio.Event | None = None) -> Delivery:
        """POST ``body`` signed, retried with backoff; ``first_attempt`` is set once the first POST has had its
        answer (or failed), so a caller can order events without waiting for the retries."""
        import httpx

        last_error: str | None = None
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            for attempt in range(1, self.retries + 2):
                # signed per attempt: a late retry carries a fresh timestamp, not one the receiver finds stale
                headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, secret=self._secret),
                           "User-Agent": "gocare-voice-webhook"}
                try:
                    response = await client.post(self.url, content=body, headers=headers)
                except httpx.HTTPError as error:
                    last_error = type(error).__name__
                else:
                    if response.status_code < 300:
                        logger.info("%s delivered (call=%s attempt=%d status=%d)", what, call_id, attempt,
                                    response.status_code)
                        return Delivery(True, attempt)
                    last_error = f"HTTP {response.status_code}"
                    if 400 <= response.status_code < 500 and response.status_code != 429:
                        break
                finally:
                    if first_attempt is not None:
                        first_attempt.set()
                if attempt <= self.retries:
                    wait = min(self.max_wait, self.backoff * 2 ** (attempt - 1))
                    logger.info("%s attempt %d failed (call=%s: %s); retrying in %.1fs", what, attempt,
                                call_id, last_error, wait)
                    await asyncio.sleep(wait)
        logger.error("%s not delivered (call=%s, %d attempt(s), last: %s)", what, call_id, attempt, last_error)
        return Delivery(False, attempt, last_error)
