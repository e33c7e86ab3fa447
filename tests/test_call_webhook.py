"""The end-of-call webhook against real HTTP receivers on loopback: each checks the signature the way
docs/call-records.md tells a receiver to (its own HMAC here, not our ``verify``), one is down and comes back,
one refuses for good; failures are logged without the body."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator

import pytest

from gocare_voice.records.webhook import SIGNATURE_HEADER, WebhookSender, envelope, sign, verify
from harness.processes import free_port
from harness.webhook_receiver import HEADER, WebhookReceiver
from harness.webhook_receiver import receiver_accepts as accepts

SECRET = "webhook-secret-0123456789"
assert HEADER == SIGNATURE_HEADER  # the receiver reads the header the sender writes


def receiver_accepts(header: str, body: bytes) -> bool:
    return accepts(header, body, secret=SECRET)


class Receiver(WebhookReceiver):
    def __init__(self, port: int, *, status: int = 200) -> None:
        super().__init__(port, secret=SECRET, status=status)


@pytest.fixture
def port() -> Iterator[int]:
    yield free_port()


BODY = envelope({"call_id": "AJ_test", "turns": [{"role": "user", "text": "my knee hurts"}]})


async def test_a_signed_report_reaches_a_receiver_that_checks_it(port: int) -> None:
    receiver = Receiver(port)
    try:
        sender = WebhookSender(url=f"http://127.0.0.1:{port}/hook", secret=SECRET, retries=2, backoff=0.1)
        delivery = await sender.deliver(BODY, call_id="AJ_test")
        assert delivery.delivered and delivery.attempts == 1
        got = receiver.received[0]
        header, body, ok = got.header, got.body, got.signed
        assert ok and body == BODY and json.loads(body)["type"] == "call.ended"
        assert verify(header, body, secret=SECRET)
        assert not verify(header, body, secret="another-secret-entirely")
        assert not verify(header, body + b" ", secret=SECRET)
    finally:
        receiver.stop()


async def test_a_receiver_that_is_down_then_comes_back_gets_it(port: int, caplog) -> None:
    sender = WebhookSender(url=f"http://127.0.0.1:{port}/hook", secret=SECRET, retries=5, backoff=0.2, max_wait=1.0)
    holder: list[Receiver] = []

    async def come_back() -> None:
        await asyncio.sleep(0.7)
        holder.append(Receiver(port))

    caplog.set_level(logging.INFO, logger="gocare.records.webhook")
    started = time.monotonic()
    delivery, _ = await asyncio.gather(sender.deliver(BODY, call_id="AJ_down"), come_back())
    try:
        assert delivery.delivered and delivery.attempts >= 2, delivery
        assert time.monotonic() - started < 5
        assert len(holder[0].received) == 1 and holder[0].received[0].signed  # one signed delivery, accepted
        assert "ConnectError" in caplog.text and "knee" not in caplog.text
    finally:
        holder[0].stop()


async def test_a_receiver_that_refuses_is_not_retried_and_the_body_is_not_logged(port: int, caplog) -> None:
    receiver = Receiver(port, status=400)
    try:
        sender = WebhookSender(url=f"http://127.0.0.1:{port}/hook", secret=SECRET, retries=3, backoff=0.05)
        caplog.set_level(logging.INFO, logger="gocare.records.webhook")
        delivery = await sender.deliver(BODY, call_id="AJ_refused")
        assert not delivery.delivered and delivery.attempts == 1 and delivery.last_error == "HTTP 400"
        assert "not delivered (call=AJ_refused" in caplog.text and "knee" not in caplog.text
    finally:
        receiver.stop()


async def test_a_receiver_that_never_comes_back_costs_a_bounded_time(port: int) -> None:
    sender = WebhookSender(url=f"http://127.0.0.1:{port}/hook", secret=SECRET, retries=3, backoff=0.05, timeout=1)
    started = time.monotonic()
    delivery = await sender.deliver(BODY, call_id="AJ_gone")
    assert not delivery.delivered and delivery.attempts == 4 and time.monotonic() - started < 3


def test_stale_and_malformed_signatures_are_refused() -> None:
    now = time.time()
    old = sign(BODY, secret=SECRET, timestamp=int(now) - 3600)
    assert not verify(old, BODY, secret=SECRET, now=now)
    assert verify(old, BODY, secret=SECRET, now=now - 3600)
    for header in (None, "", "t=abc,v1=00", "v1=00", "t=1", "garbage"):
        assert not verify(header, BODY, secret=SECRET, now=now)
    assert receiver_accepts(sign(BODY, secret=SECRET), BODY)  # our signature, the documented check


def test_the_documented_python_check_accepts_our_signatures_and_refuses_others() -> None:
    """docs/call-records.md's receiver snippet, run as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "call-records.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", doc, re.S) if "def verify_gocare_signature" in block)
    namespace: dict[str, object] = {}
    exec(compile(snippet, "call-records.md", "exec"), namespace)  # the documentation's own code, run as written
    check = namespace["verify_gocare_signature"]
    assert check(sign(BODY, secret=SECRET), BODY, SECRET)  # type: ignore[operator]
    assert not check(sign(BODY, secret=SECRET), BODY + b"x", SECRET)  # type: ignore[operator]
    assert not check(sign(BODY, secret=SECRET, timestamp=int(time.time()) - 3600), BODY, SECRET)  # type: ignore[operator]
    assert not check(None, BODY, SECRET)  # type: ignore[operator]
