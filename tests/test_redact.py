from __future__ import annotations

import json
import logging

import pytest

from gocare_voice.redact import PiiLogFilter, install_pii_log_filter, mask_digit_runs, mask_phone, mask_secret


def test_mask_phone_keeps_country_code_and_last_four() -> None:
    assert mask_phone("+919876543210") == "+91******3210"
    assert mask_phone("9876543210") == "******3210"
    assert mask_phone(None) == "<none>" and mask_phone("12") == "**"


def test_mask_secret_shows_nothing_of_the_value() -> None:
    assert mask_secret("eyJhbGciOi.abc.def") == "<redacted, 18 chars>"


@pytest.mark.parametrize(("text", "expected"), [
    ("my number is 98765 43210", "my number is ********10"),
    ("call +91-98765-43210 please", "call **********10 please"),
    ("it's (987) 654 3210", "it's (********10"),
])
def test_mask_digit_runs(text: str, expected: str) -> None:
    assert mask_digit_runs(text) == expected


def test_short_numbers_are_left_alone() -> None:
    assert mask_digit_runs("room 42 at 10:30, 3 attempts") == "room 42 at 10:30, 3 attempts"


def test_livekit_transcript_logs_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    """livekit-agents logs final transcripts with an ``lk.pii.user_transcript`` extra field."""
    install_pii_log_filter()
    install_pii_log_filter()  # idempotent
    lk_logger = logging.getLogger("livekit.agents")
    assert sum(isinstance(f, PiiLogFilter) for f in lk_logger.filters) == 1
    with caplog.at_level(logging.DEBUG, logger="livekit.agents"):
        lk_logger.debug("received user transcript",
                        extra={"lk.pii.user_transcript": "nine eight 98765 43210", "language": "en"})
        lk_logger.info("user said 9876543210")
    first, second = caplog.records
    assert "98765 43210" not in json.dumps(first.__dict__, default=str)
    assert getattr(first, "lk.pii.user_transcript").startswith("nine eight ********10")
    assert "9876543210" not in second.getMessage()
